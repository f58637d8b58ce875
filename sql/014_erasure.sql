-- Right to erasure (`rag-pipeline erase`, rag_pipeline/lib/erasure.py).
--
-- Erasing a document deletes every row that holds or points to its content (bytes, parses,
-- chunks, postings, embeddings no other chunk uses, memberships in every index version, events,
-- quarantine records, query-log references) in one transaction, and leaves one tombstone per
-- document here. The tombstone is the audit record and it holds no content: no title, no text,
-- no content hash (a hash of the text would let anyone confirm a guess of it).
CREATE TABLE rag.erasure_tombstones (
    erasure_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id              text        NOT NULL,
    source              text        NOT NULL,
    tenant              text        NOT NULL,
    requested_by        text        NOT NULL,
    reason              text        NOT NULL CHECK (btrim(reason) <> ''),
    erased_at           timestamptz NOT NULL DEFAULT now(),
    -- Rows deleted or rewritten per table ("rag.chunks": 3, ...): counts only.
    rows_removed        jsonb       NOT NULL,
    -- One id per `erase` invocation: documents erased together share it (and one transaction).
    request_id          uuid        NOT NULL,
    -- Index versions whose memberships and BM25 statistics were rewritten.
    versions_updated    bigint[]    NOT NULL DEFAULT '{}',
    -- The second, separate step on Dagster's database: events rewritten per table, or NULL
    -- while it has not run (it is idempotent and can be re-run: `erase --verify`).
    dagster_scrub       jsonb,
    -- The last scan of every text/bytea column of both databases for fragments of the erased
    -- text: {"clean": bool, "hits": [{"database", "table", "column", "rows"}], "fragments": n}.
    verification        jsonb,
    verified_at         timestamptz,
    -- An erasure stands (the source scan refuses to ingest the document again) until lifted.
    lifted_at           timestamptz,
    lifted_by           text,
    lift_reason         text
);

-- At most one standing erasure per document; the source scan looks them up by source.
CREATE UNIQUE INDEX erasure_tombstones_standing
    ON rag.erasure_tombstones (doc_id) WHERE lifted_at IS NULL;
CREATE INDEX erasure_tombstones_source ON rag.erasure_tombstones (source) WHERE lifted_at IS NULL;

-- Backstop for writers already in flight when the erasure committed: a parse or chunk step that
-- listed the document before it was erased must not write its rows back afterwards. The source
-- scan itself skips standing erasures (pipeline_store.sync_source) under the same advisory lock
-- as `erase`, so a document row coming back means a writer that bypasses it: refused loudly.
CREATE FUNCTION rag.skip_erased_document_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM rag.erasure_tombstones t
               WHERE t.doc_id = NEW.doc_id AND t.lifted_at IS NULL) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION rag.refuse_erased_documents() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM rag.erasure_tombstones t
               WHERE t.doc_id = NEW.doc_id AND t.lifted_at IS NULL) THEN
        RAISE EXCEPTION 'document % is erased (right to erasure); lift the erasure first', NEW.doc_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER parsed_documents_not_erased BEFORE INSERT ON rag.parsed_documents
    FOR EACH ROW EXECUTE FUNCTION rag.skip_erased_document_rows();
CREATE TRIGGER chunks_not_erased BEFORE INSERT ON rag.chunks
    FOR EACH ROW EXECUTE FUNCTION rag.skip_erased_document_rows();
CREATE TRIGGER documents_not_erased BEFORE INSERT ON rag.documents
    FOR EACH ROW EXECUTE FUNCTION rag.refuse_erased_documents();
