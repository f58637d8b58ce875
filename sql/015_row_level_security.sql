-- Row-level security on what serving reads: defence in depth behind `rag.readable_chunks`.
--
-- Serving (search, answer, lineage, evaluation; `rag_pipeline.lib.retrieval.session`) runs each
-- transaction as the role `rag_serving` with the reader set per transaction:
--
--     SET LOCAL ROLE rag_serving;
--     SELECT set_config('rag.tenant', <tenant>, true), set_config('rag.principals', <text[]>, true);
--
-- A query that forgets the tenant filter then still sees only that tenant's rows, and a
-- transaction that never set a tenant sees nothing (the settings are NULL or '' -> no row
-- matches): it fails closed, never open. `rag_serving` holds SELECT on exactly what serving reads
-- and nothing on raw bytes (`rag.source_blobs`) or parsed elements (`rag.parsed_documents` only
-- its title); lineage verifies the stored bytes through `rag.chunk_source_evidence`, which
-- checks the reader itself.
--
-- The pipeline's writers connect as the owner of these tables (or a superuser) and are not
-- subject to the policies (RLS is enabled, not forced). On a server where the URL's user may not
-- create roles, a DBA creates the role and the membership first (README, "Row-level security"):
--     CREATE ROLE rag_serving NOLOGIN;  GRANT rag_serving TO <pipeline user>;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rag_serving') THEN
        BEGIN
            CREATE ROLE rag_serving NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION
            -- Another database of the same server created it at the same moment.
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role rag_serving does not exist and % may not create it',
                    current_user
                    USING HINT = 'a DBA runs: CREATE ROLE rag_serving NOLOGIN; '
                        'GRANT rag_serving TO ' || quote_ident(current_user) || ';';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles
               WHERE rolname = 'rag_serving' AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role rag_serving is a superuser or has BYPASSRLS: row-level security '
            'would not apply to serving; ALTER ROLE rag_serving NOSUPERUSER NOBYPASSRLS';
    END IF;
    IF NOT pg_has_role(current_user, 'rag_serving', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT rag_serving TO %I', current_user);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION '% is not a member of rag_serving and may not grant it', current_user
                USING HINT = 'a DBA runs: GRANT rag_serving TO ' || quote_ident(current_user)
                    || ';';
        END;
    END IF;
END
$$;

-- The reader of the current transaction; NULL when unset (never set, or reset to '' after an
-- earlier transaction set it), which matches no row. Inlinable SQL, so a policy costs one
-- comparison per row, not a function call.
CREATE FUNCTION rag.session_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('rag.tenant', true), '')
$$;

CREATE FUNCTION rag.session_principals() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('rag.principals', true), '')::text[]
$$;

GRANT USAGE ON SCHEMA rag TO rag_serving;
GRANT SELECT ON rag.index_versions, rag.active_index, rag.index_version_chunks, rag.documents,
    rag.chunks, rag.embeddings, rag.chunk_terms, rag.index_version_lexical,
    rag.index_version_terms, rag.document_events, rag.servable_documents TO rag_serving;
-- Only what `rag.servable_documents` and the hits' titles need.
GRANT SELECT (doc_id, content_hash, stage) ON rag.quarantine TO rag_serving;
GRANT SELECT (doc_id, content_hash, parser_key, title) ON rag.parsed_documents TO rag_serving;

-- A view reads its tables with its owner's rights by default, and the owner bypasses RLS: as
-- the invoker's, `rag.servable_documents` is filtered by the policies below too.
ALTER VIEW rag.servable_documents SET (security_invoker = true);

-- Tables with a tenant column: one comparison per row.
ALTER TABLE rag.documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY serving_tenant ON rag.documents FOR SELECT TO rag_serving
    USING (tenant = rag.session_tenant());

ALTER TABLE rag.index_version_chunks ENABLE ROW LEVEL SECURITY;
CREATE POLICY serving_tenant ON rag.index_version_chunks FOR SELECT TO rag_serving
    USING (tenant = rag.session_tenant());

ALTER TABLE rag.index_version_lexical ENABLE ROW LEVEL SECURITY;
CREATE POLICY serving_tenant ON rag.index_version_lexical FOR SELECT TO rag_serving
    USING (tenant = rag.session_tenant());

ALTER TABLE rag.index_version_terms ENABLE ROW LEVEL SECURITY;
CREATE POLICY serving_tenant ON rag.index_version_terms FOR SELECT TO rag_serving
    USING (tenant = rag.session_tenant());

-- Tables keyed by document: a primary-key probe of the document's tenant per row.
ALTER TABLE rag.chunks ENABLE ROW LEVEL SECURITY;
CREATE POLICY serving_tenant ON rag.chunks FOR SELECT TO rag_serving
    USING (EXISTS (SELECT 1 FROM rag.documents d
                   WHERE d.doc_id = chunks.doc_id AND d.tenant = rag.session_tenant()));

ALTER TABLE rag.document_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY serving_tenant ON rag.document_events FOR SELECT TO rag_serving
    USING (EXISTS (SELECT 1 FROM rag.documents d
                   WHERE d.doc_id = document_events.doc_id
                     AND d.tenant = rag.session_tenant()));

ALTER TABLE rag.parsed_documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY serving_tenant ON rag.parsed_documents FOR SELECT TO rag_serving
    USING (EXISTS (SELECT 1 FROM rag.documents d
                   WHERE d.doc_id = parsed_documents.doc_id
                     AND d.tenant = rag.session_tenant()));

ALTER TABLE rag.quarantine ENABLE ROW LEVEL SECURITY;
CREATE POLICY serving_tenant ON rag.quarantine FOR SELECT TO rag_serving
    USING (EXISTS (SELECT 1 FROM rag.documents d
                   WHERE d.doc_id = quarantine.doc_id AND d.tenant = rag.session_tenant()));

-- Embeddings are shared by every chunk with the same text (keyed by text hash, sql/003): a row
-- is visible when some chunk of the reader's tenant has that text (`rag.chunks` is filtered by
-- its own policy inside the subquery). A scalar subquery checked for NULL, not EXISTS: the
-- planner turned EXISTS into a hashed subplan over every chunk of the tenant, built per query
-- (vector search 25 -> 87 ms p50 at 20,000 chunks); this form is one index probe per row the
-- HNSW scan yields and leaves its plan and latency as they were.
ALTER TABLE rag.embeddings ENABLE ROW LEVEL SECURITY;
CREATE POLICY serving_tenant ON rag.embeddings FOR SELECT TO rag_serving
    USING ((SELECT 1 FROM rag.chunks c WHERE c.text_hash = embeddings.text_hash LIMIT 1)
           IS NOT NULL);

-- Postings (`rag.chunk_terms`: lexeme, chunk id, term frequency; no text) have NO policy, on
-- purpose: they carry no tenant, and any per-row check runs on every posting of the query's
-- lexemes in every tenant before the join to the reader's memberships (a lexeme in every
-- chunk: 32 -> 110 ms at 20,000 chunks, growing with the corpus). The lexical leg only reaches
-- postings through the reader's memberships, which are filtered above.

-- Lineage's proof that a chunk leads to the stored bytes, and its parsed elements, for a reader
-- who may read the document now (`rag.readable_documents` with the transaction's reader):
-- `rag_serving` may not read the bytes or elements themselves. SECURITY DEFINER, so it checks
-- the reader explicitly; no row for anyone else, as for a chunk that does not exist.
CREATE FUNCTION rag.chunk_source_evidence(p_chunk_id text)
RETURNS TABLE (stored boolean, byte_size bigint, sha256_verified boolean, elements jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT b.content_hash IS NOT NULL,
           octet_length(b.content)::bigint,
           coalesce(encode(sha256(b.content), 'hex') = c.content_hash, false),
           -- The redacted elements the chunk was cut from (sql/012), never the parsed text
           -- with its raw values; parsed ones only for a chunk written without redaction.
           CASE WHEN c.redaction_key = '' THEN p.elements ELSE r.elements END
    FROM rag.chunks c
    LEFT JOIN rag.source_blobs b ON b.content_hash = c.content_hash
    LEFT JOIN rag.parsed_documents p ON p.doc_id = c.doc_id
        AND p.content_hash = c.content_hash AND p.parser_key = c.parser_key
        AND c.redaction_key = ''
    LEFT JOIN rag.redacted_documents r ON r.doc_id = c.doc_id
        AND r.content_hash = c.content_hash AND r.parser_key = c.parser_key
        AND r.redaction_key = c.redaction_key
    WHERE c.chunk_id = p_chunk_id
      AND EXISTS (SELECT 1
                  FROM rag.readable_documents(rag.session_tenant(), rag.session_principals()) r
                  WHERE r.doc_id = c.doc_id)
$$;
REVOKE ALL ON FUNCTION rag.chunk_source_evidence(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rag.chunk_source_evidence(text) TO rag_serving;
