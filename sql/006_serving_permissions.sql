-- Serving never widens access: the rule every reader of the index goes through.
--
-- An index version stores each document's tenant and ACL as they were when it was built. That
-- snapshot alone is not enough to serve from: rolling back, or promoting an older version, would
-- bring deleted documents and revoked access back, and a candidate rejected by an unrelated gate
-- would keep a revocation from ever reaching readers. So a chunk is served only if BOTH the
-- version's snapshot and the document's current state allow it. Current state is read from
-- `rag.documents`, which each source's scan rewrites in one transaction: narrowing an ACL or
-- deleting a document takes effect for readers as soon as that scan commits, whatever version
-- serves and whatever its gates say. Widening takes effect only once a version built after it
-- serves (the intersection keeps the older, narrower snapshot until then).
--
-- The functions are plain SQL, STABLE, not STRICT and not SECURITY DEFINER, so the planner inlines
-- them into the calling query: search keeps its HNSW index scan ordered by distance, with these
-- conditions checked per candidate row.

-- Documents whose current state lets them be served to anyone at all: still present at their
-- source, and with metadata (tenant, ACL, owner) the source stage accepted for their current
-- content. A source-stage quarantine means the pipeline could not trust who may read the
-- document, so it fails closed. Refusals by later stages (parse, chunk) are about the bytes, not
-- about access: an older version may keep serving the document's earlier content.
-- (`rag.live_documents` differs on purpose: it is what the next version should contain.)
CREATE VIEW rag.servable_documents AS
SELECT d.doc_id, d.source, d.uri, d.tenant, d.acl_principals, d.content_hash
FROM rag.documents d
WHERE d.deleted_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM rag.quarantine q
      WHERE q.doc_id = d.doc_id AND q.content_hash = d.content_hash AND q.stage = 'source'
  );

-- The documents a reader (one tenant, a set of principals) may read now, by current state only.
-- Lineage and any other per-document view use this; search adds the version's snapshot on top.
CREATE FUNCTION rag.readable_documents(p_tenant text, p_principals text[])
RETURNS TABLE (doc_id text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT s.doc_id
    FROM rag.servable_documents s
    WHERE s.tenant = p_tenant
      AND s.acl_principals && p_principals
$$;

-- The chunks of one index version a reader may be served: the version's membership snapshot
-- (tenant and ACL at build time) AND the current state above. This is the one serving rule.
--
-- The current-state test is a scalar subquery checked for NULL, not a join, on purpose. As a
-- join, the planner multiplies the selectivity of the reader's filters on `rag.documents` with
-- that of the same filters on the snapshot, as if independent, although the two nearly always
-- hold the same tenant and ACL. For a reader allowed 10% of 20,000 chunks it then expected 200
-- rows instead of 2,000, gave up the HNSW scan for an exact sort, and search went from 3 ms to
-- 17 ms (growing with the corpus). `(subquery) IS NOT NULL` is estimated to keep almost every
-- row, so the estimate stays the snapshot's, and it runs as one primary-key probe per candidate
-- row the HNSW scan yields.
CREATE FUNCTION rag.readable_chunks(p_version_id bigint, p_tenant text, p_principals text[])
RETURNS TABLE (chunk_id text, doc_id text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT m.chunk_id, m.doc_id
    FROM rag.index_version_chunks m
    WHERE m.version_id = p_version_id
      AND m.tenant = p_tenant
      AND m.acl_principals && p_principals
      AND (SELECT r.doc_id FROM rag.readable_documents(p_tenant, p_principals) r
           WHERE r.doc_id = m.doc_id) IS NOT NULL
$$;
