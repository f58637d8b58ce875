-- Search hits and citations of a redacted chunk show the redacted title, for a reader who may
-- read the document now, taken from the transaction's reader settings (`rag.tenant`,
-- `rag.principals`, set by a serving transaction); no row for anyone else or outside a serving
-- transaction. SECURITY DEFINER so that a restricted serving role needs no grant on
-- `rag.redacted_documents`. (Lineage's redacted elements come from
-- `rag.chunk_source_evidence`, sql/015.)
-- (A document's title is often its first heading, which may hold a value.) Chunks written
-- without redaction (key '') keep their parsed title, read directly by serving as before.
CREATE FUNCTION rag.chunk_redacted_title(p_chunk_id text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.title
    FROM rag.chunks c
    JOIN rag.redacted_documents r ON r.doc_id = c.doc_id AND r.content_hash = c.content_hash
        AND r.parser_key = c.parser_key AND r.redaction_key = c.redaction_key
    WHERE c.chunk_id = p_chunk_id
      AND EXISTS (SELECT 1
                  FROM rag.readable_documents(
                      nullif(current_setting('rag.tenant', true), ''),
                      nullif(current_setting('rag.principals', true), '')::text[]) x
                  WHERE x.doc_id = c.doc_id)
$$;
