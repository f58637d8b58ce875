-- The documents of a source that are still at the source and parsed by a parser, with what a
-- stage after parsing needs of them (`PendingDocument`). Redaction and chunking both start here
-- and differ only in which refusals stop them and which output they look for, so those
-- predicates stay in their own queries (`lib/stores/redaction.py`, `lib/stores/chunks.py`).
-- A single-SELECT SQL function: the planner inlines it, so the stages' plans are unchanged.
CREATE FUNCTION rag.parsed_documents_of(p_source text, p_parser_key text)
RETURNS TABLE (doc_id text, source text, uri text, relative_path text, content_hash text,
               mime_type text, encoding text, title text)
LANGUAGE sql STABLE AS $$
    SELECT d.doc_id, d.source, d.uri, d.relative_path, d.content_hash, d.mime_type,
           d.encoding, p.title
    FROM rag.documents d
    JOIN rag.parsed_documents p
      ON p.doc_id = d.doc_id AND p.content_hash = d.content_hash
         AND p.parser_key = p_parser_key
    WHERE d.source = p_source AND d.deleted_at IS NULL
$$;
