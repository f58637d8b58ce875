-- Connectors behind one interface (rag_pipeline.lib.connectors): what a connector knows of each
-- document (a commit and path, a page id and breadcrumbs, a ticket id and status), the change
-- token that lets the next scan skip an unchanged item without reading it (a git blob id), and
-- each source's cursor (the last indexed commit), saved in the scan's own transaction.
ALTER TABLE rag.documents
    ADD COLUMN IF NOT EXISTS source_metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS change_token text;

CREATE TABLE IF NOT EXISTS rag.source_cursors (
    source      text PRIMARY KEY,
    connector   text        NOT NULL,
    cursor      jsonb       NOT NULL,
    run_id      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
