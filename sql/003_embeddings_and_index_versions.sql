-- Embedding cache (one row per model and distinct text) and versioned serving indexes.

-- Keyed by text, not by chunk: re-chunking or moving text between documents never embeds it twice.
-- The dimension is the default model's (all-MiniLM-L6-v2); a model of another size needs a migration.
CREATE TABLE rag.embeddings (
    model_key   text        NOT NULL,
    text_hash   text        NOT NULL,
    embedding   vector(384) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_key, text_hash)
);
CREATE INDEX embeddings_hnsw ON rag.embeddings USING hnsw (embedding vector_cosine_ops);

-- An index version is (embedding model, parser, chunker, corpus snapshot). Rows appear complete:
-- a version and all its members are written in one transaction, so a crash leaves nothing behind.
CREATE TABLE rag.index_versions (
    version_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_key        text        NOT NULL,
    parser_key       text        NOT NULL,
    chunker_key      text        NOT NULL,
    corpus_snapshot  text        NOT NULL,
    status           text        NOT NULL DEFAULT 'candidate'
        CHECK (status IN ('candidate', 'active', 'retired', 'rejected')),
    document_count   integer     NOT NULL,
    chunk_count      integer     NOT NULL,
    diff             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    run_id           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    promoted_at      timestamptz,
    UNIQUE (model_key, parser_key, chunker_key, corpus_snapshot)
);

-- Membership of chunks in a version, with the document's access control as of that version so
-- that permission filtering happens inside the same SQL statement as ranking.
CREATE TABLE rag.index_version_chunks (
    version_id      bigint NOT NULL REFERENCES rag.index_versions (version_id) ON DELETE CASCADE,
    chunk_id        text   NOT NULL REFERENCES rag.chunks (chunk_id),
    doc_id          text   NOT NULL,
    tenant          text   NOT NULL,
    acl_principals  text[] NOT NULL,
    PRIMARY KEY (version_id, chunk_id)
);
CREATE INDEX index_version_chunks_chunk_idx ON rag.index_version_chunks (chunk_id);
CREATE INDEX index_version_chunks_acl_gin ON rag.index_version_chunks USING gin (acl_principals);

-- Quality-gate results per version; promotion requires every blocking check to have passed.
CREATE TABLE rag.index_version_checks (
    version_id  bigint      NOT NULL REFERENCES rag.index_versions (version_id) ON DELETE CASCADE,
    check_name  text        NOT NULL,
    passed      boolean     NOT NULL,
    blocking    boolean     NOT NULL,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version_id, check_name)
);

-- The serving pointer: exactly one row. Promotion and rollback update it in one transaction.
CREATE TABLE rag.active_index (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version_id   bigint      NOT NULL REFERENCES rag.index_versions (version_id),
    switched_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rag.index_promotions (
    promotion_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action         text        NOT NULL CHECK (action IN ('promote', 'rollback')),
    from_version   bigint,
    to_version     bigint      NOT NULL,
    actor          text        NOT NULL,
    reason         text,
    switched_at    timestamptz NOT NULL DEFAULT now()
);

-- The chunks a version built now would contain: current chunks of live documents, made by the
-- given parser and chunker, that have an embedding from the given model.
CREATE FUNCTION rag.current_chunks(p_model_key text, p_parser_key text, p_chunker_key text)
RETURNS TABLE (chunk_id text, doc_id text, tenant text, acl_principals text[])
LANGUAGE sql STABLE AS $$
    SELECT c.chunk_id, d.doc_id, d.tenant, d.acl_principals
    FROM rag.live_documents d
    JOIN rag.chunks c ON c.doc_id = d.doc_id AND c.content_hash = d.content_hash
    WHERE c.parser_key = p_parser_key
      AND c.chunker_key = p_chunker_key
      AND EXISTS (SELECT 1 FROM rag.embeddings e
                  WHERE e.model_key = p_model_key AND e.text_hash = c.text_hash)
$$;
