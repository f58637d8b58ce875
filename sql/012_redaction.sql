-- PII and secret redaction between parsing and chunking, and prompt-injection verdicts on chunks.
--
-- Nothing in these tables holds a detected value, nor a hash of one (a hash of a card number or
-- a short key is brute-forced in seconds): only types, offsets, detectors and actions. Raw text
-- stays in `rag.source_blobs` and `rag.parsed_documents`, which serving never reads; every table
-- here has a `doc_id` column so that erasure finds it.

-- Which redaction the source's chunks are now made with (its policy from `sources.yaml` and the
-- detector version), written by the `redacted_documents` asset when it changes. The chunks that
-- count as current for a document are those made with its source's key, so a policy change for
-- one source replaces that source's chunks (and only those) in the next index version, while
-- older versions keep theirs for rollback.
CREATE TABLE rag.source_redaction (
    source         text        PRIMARY KEY,
    redaction_key  text        NOT NULL,
    policy         jsonb       NOT NULL,
    run_id         text,
    switched_at    timestamptz NOT NULL DEFAULT now()
);

-- One detector pass over a document version: findings as types and offsets (per element, -1
-- for the title). A policy change re-applies these without scanning again.
CREATE TABLE rag.redaction_scans (
    doc_id         text        NOT NULL,
    content_hash   text        NOT NULL,
    parser_key     text        NOT NULL,
    scan_key       text        NOT NULL,
    findings       jsonb       NOT NULL,
    finding_count  integer     NOT NULL CHECK (finding_count >= 0),
    duration_ms    integer     NOT NULL,
    run_id         text,
    scanned_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, content_hash, parser_key, scan_key)
);

-- The redacted elements chunking reads (same shape as `rag.parsed_documents.elements`).
CREATE TABLE rag.redacted_documents (
    doc_id         text        NOT NULL,
    content_hash   text        NOT NULL,
    parser_key     text        NOT NULL,
    redaction_key  text        NOT NULL,
    title          text        NOT NULL,
    elements       jsonb       NOT NULL,
    counts         jsonb       NOT NULL,
    run_id         text,
    redacted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, content_hash, parser_key, redaction_key)
);

-- The audit record of every redaction: where (element and offsets in the parsed text, and in
-- the redacted text), what type, which detector and version, what was done. Never the value.
CREATE TABLE rag.redaction_audit (
    audit_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id            text        NOT NULL,
    content_hash      text        NOT NULL,
    parser_key        text        NOT NULL,
    redaction_key     text        NOT NULL,
    element_index     integer     NOT NULL,
    start_offset      integer     NOT NULL,
    end_offset        integer     NOT NULL,
    redacted_start    integer     NOT NULL,
    redacted_end      integer     NOT NULL,
    entity_type       text        NOT NULL,
    detector          text        NOT NULL,
    detector_version  text        NOT NULL,
    score             real        NOT NULL,
    action            text        NOT NULL CHECK (action IN ('redacted', 'masked', 'flagged')),
    run_id            text,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (start_offset < end_offset AND redacted_start <= redacted_end)
);
CREATE INDEX redaction_audit_doc ON rag.redaction_audit (doc_id, content_hash, redaction_key);

-- Chunks carry the redaction they were cut from and the injection verdict on their text.
-- Several redactions of one document version may coexist (one per policy a version was built
-- with), so the redaction key joins the uniqueness of a chunk.
ALTER TABLE rag.chunks ADD COLUMN redaction_key text NOT NULL DEFAULT '';
ALTER TABLE rag.chunks ADD COLUMN injection boolean NOT NULL DEFAULT false;
ALTER TABLE rag.chunks ADD COLUMN injection_score real NOT NULL DEFAULT 0;
ALTER TABLE rag.chunks ADD COLUMN injection_reasons text[] NOT NULL DEFAULT '{}';

DO $$
DECLARE
    name text;
BEGIN
    SELECT c.conname INTO name
    FROM pg_constraint c
    WHERE c.conrelid = 'rag.chunks'::regclass AND c.contype = 'u'
      AND c.conkey = (SELECT array_agg(a.attnum ORDER BY k.ord)
                      FROM unnest(ARRAY['doc_id', 'content_hash', 'parser_key', 'chunker_key',
                                        'ordinal']) WITH ORDINALITY AS k(col, ord)
                      JOIN pg_attribute a ON a.attrelid = 'rag.chunks'::regclass
                                          AND a.attname = k.col);
    IF name IS NOT NULL THEN
        EXECUTE format('ALTER TABLE rag.chunks DROP CONSTRAINT %I', name);
    END IF;
END
$$;
ALTER TABLE rag.chunks ADD CONSTRAINT chunks_redacted_ordinal_key
    UNIQUE (doc_id, content_hash, parser_key, chunker_key, redaction_key, ordinal);

-- Injection verdicts by text, so a text is judged once per detector version (a policy change
-- or a rebuilt chunk with the same text costs nothing).
CREATE TABLE rag.injection_verdicts (
    detector_key  text    NOT NULL,
    text_hash     text    NOT NULL,
    injection     boolean NOT NULL,
    score         real    NOT NULL,
    reasons       text[]  NOT NULL,
    PRIMARY KEY (detector_key, text_hash)
);

-- Chunks the injection detector flagged, and what the source's policy did with them
-- ('tagged': indexed with the flag; 'quarantined': never indexed). No text.
CREATE TABLE rag.injection_audit (
    audit_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id         text        NOT NULL,
    content_hash   text        NOT NULL,
    chunker_key    text        NOT NULL,
    redaction_key  text        NOT NULL,
    ordinal        integer     NOT NULL,
    chunk_id       text        NOT NULL,
    action         text        NOT NULL CHECK (action IN ('tagged', 'quarantined')),
    score          real        NOT NULL,
    reasons        text[]      NOT NULL,
    run_id         text,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX injection_audit_doc ON rag.injection_audit (doc_id, content_hash);

-- Current chunks now also need their source's current redaction. A source the redaction step
-- never ran for keeps the chunks made without one (key ''): only chunks written directly through
-- the library (test corpora, benchmarks); the pipeline's chunks stage reads redacted documents
-- only, and chunks from before this migration have a chunker key without the redaction engine,
-- so they are never current again.
-- The chunks each live document has now for a parser and chunker: made under its source's
-- current redaction key. Every "what should the index hold" question reads this one definition
-- (current chunks, texts to embed, the coverage gate, progress counts), so chunks left from an
-- earlier policy are never counted, embedded or indexed again.
CREATE FUNCTION rag.live_chunks(p_parser_key text, p_chunker_key text)
RETURNS TABLE (chunk_id text, doc_id text, source text, tenant text, acl_principals text[],
               text_hash text, search_text text)
LANGUAGE sql STABLE AS $$
    SELECT c.chunk_id, d.doc_id, d.source, d.tenant, d.acl_principals, c.text_hash,
           c.search_text
    FROM rag.live_documents d
    LEFT JOIN rag.source_redaction s ON s.source = d.source
    JOIN rag.chunks c ON c.doc_id = d.doc_id AND c.content_hash = d.content_hash
                     AND c.redaction_key = coalesce(s.redaction_key, '')
    WHERE c.parser_key = p_parser_key
      AND c.chunker_key = p_chunker_key
$$;

CREATE OR REPLACE FUNCTION rag.current_chunks(p_model_key text, p_parser_key text,
                                              p_chunker_key text)
RETURNS TABLE (chunk_id text, doc_id text, tenant text, acl_principals text[])
LANGUAGE sql STABLE AS $$
    SELECT l.chunk_id, l.doc_id, l.tenant, l.acl_principals
    FROM rag.live_chunks(p_parser_key, p_chunker_key) l
    WHERE EXISTS (SELECT 1 FROM rag.embeddings e
                  WHERE e.model_key = p_model_key AND e.text_hash = l.text_hash)
$$;
