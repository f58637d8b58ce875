-- Parsed elements and chunks, keyed by the document version and the parser/chunker that made them,
-- so that an unchanged document is never parsed or chunked twice.
CREATE TABLE rag.parsed_documents (
    doc_id         text        NOT NULL,
    content_hash   text        NOT NULL,
    parser_key     text        NOT NULL,
    title          text,
    elements       jsonb       NOT NULL,
    element_count  integer     NOT NULL,
    text_chars     integer     NOT NULL,
    duration_ms    integer     NOT NULL,
    parsed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, content_hash, parser_key)
);

CREATE TABLE rag.chunks (
    chunk_id       text PRIMARY KEY,
    doc_id         text        NOT NULL,
    content_hash   text        NOT NULL,
    parser_key     text        NOT NULL,
    chunker_key    text        NOT NULL,
    ordinal        integer     NOT NULL,
    text           text        NOT NULL,
    -- What is embedded and lexically indexed: title and heading path in front of the text.
    search_text    text        NOT NULL,
    text_hash      text        NOT NULL,
    token_count    integer     NOT NULL,
    heading_path   text[]      NOT NULL,
    element_start  integer     NOT NULL,
    element_end    integer     NOT NULL,
    char_start     integer     NOT NULL,
    char_end       integer     NOT NULL,
    page_numbers   integer[]   NOT NULL,
    tsv            tsvector GENERATED ALWAYS AS (to_tsvector('english', search_text)) STORED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (doc_id, content_hash, parser_key, chunker_key, ordinal),
    CHECK (element_start <= element_end AND char_start <= char_end)
);
CREATE INDEX chunks_text_hash_idx ON rag.chunks (text_hash);
CREATE INDEX chunks_tsv_gin ON rag.chunks USING gin (tsv);
