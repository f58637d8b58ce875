-- Source documents as discovered by connectors, their raw bytes, audit events and quarantine.
CREATE EXTENSION IF NOT EXISTS vector;

-- Raw bytes, content-addressed, so an answer can be traced back to the exact bytes that were parsed.
CREATE TABLE rag.source_blobs (
    content_hash  text PRIMARY KEY,
    byte_size     bigint      NOT NULL,
    content       bytea       NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rag.documents (
    doc_id          text PRIMARY KEY,
    source          text        NOT NULL,
    uri             text        NOT NULL,
    relative_path   text        NOT NULL,
    title           text,
    content_hash    text        NOT NULL,
    metadata_hash   text        NOT NULL,
    byte_size       bigint      NOT NULL,
    mime_type       text,
    encoding        text,
    owner           text,
    tenant          text        NOT NULL,
    acl_principals  text[]      NOT NULL,
    updated_at      timestamptz NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX documents_source_idx ON rag.documents (source);

-- Append-only audit trail of what happened to each document and by which run.
CREATE TABLE rag.document_events (
    event_id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id                 text        NOT NULL,
    source                 text        NOT NULL,
    event                  text        NOT NULL
        CHECK (event IN ('added', 'changed', 'metadata_changed', 'deleted', 'restored')),
    content_hash           text,
    previous_content_hash  text,
    run_id                 text,
    recorded_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX document_events_doc_idx ON rag.document_events (doc_id, recorded_at);

-- One record per document version that a stage refused, with a machine-readable reason code.
CREATE TABLE rag.quarantine (
    doc_id         text        NOT NULL,
    content_hash   text        NOT NULL,
    stage          text        NOT NULL CHECK (stage IN ('source', 'parse', 'chunk', 'embed')),
    source         text        NOT NULL,
    uri            text        NOT NULL,
    reason_code    text        NOT NULL,
    reason         text        NOT NULL,
    run_id         text,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, content_hash, stage)
);

-- Documents the pipeline serves: present at their source and not refused by any stage for their
-- current content.
CREATE VIEW rag.live_documents AS
SELECT d.*
FROM rag.documents d
WHERE d.deleted_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM rag.quarantine q
      WHERE q.doc_id = d.doc_id AND q.content_hash = d.content_hash
  );
