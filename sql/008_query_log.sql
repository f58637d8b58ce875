-- Query log: one row per search or answer, for audit and tuning, without the question's text.
--
-- Questions can hold secrets (names, ticket numbers, pasted credentials), so the text is never
-- stored: only its length and an HMAC-SHA256 keyed with a secret of this database. Equal
-- questions get equal hashes (repeats can be counted, a known question can be looked up by
-- whoever holds the secret), but the log alone, exported or leaked without `query_log_secret`,
-- cannot be reversed by hashing guesses.

-- The key, created here once per database: 32 bytes from two version-4 UUIDs, which
-- PostgreSQL draws from its strong random source (pg_strong_random), as pgcrypto is not
-- available. One row only.
CREATE TABLE rag.query_log_secret (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    secret      bytea       NOT NULL CHECK (octet_length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO rag.query_log_secret (secret)
SELECT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');

CREATE TABLE rag.query_log (
    query_id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at        timestamptz NOT NULL DEFAULT now(),
    kind             text        NOT NULL CHECK (kind IN ('search', 'answer')),
    -- Who called: 'cli', 'api', 'library'...
    channel          text        NOT NULL,
    user_id          text        NOT NULL,
    tenant           text        NOT NULL,
    -- No foreign key: garbage collection deletes versions, the log keeps their ids.
    version_id       bigint      NOT NULL,
    mode_requested   text        NOT NULL,
    mode_used        text        NOT NULL,
    reranker         text        NOT NULL,
    -- Whether retrieval fell back to lexical (the reason is not kept: an error message could
    -- quote the input).
    fell_back        boolean     NOT NULL,
    question_hmac    bytea       NOT NULL CHECK (octet_length(question_hmac) = 32),
    question_chars   integer     NOT NULL CHECK (question_chars >= 0),
    -- The retrieved chunks, best first.
    chunk_ids        text[]      NOT NULL,
    -- Milliseconds per stage: retrieval's (embed, version, vector, lexical, fusion, hydrate,
    -- rerank, total) and the answer's (analyze, generate).
    timings_ms       jsonb       NOT NULL,
    -- Answers only (NULL for a search).
    refused          boolean,
    refusal_reason   text,
    generator        text
);

CREATE INDEX query_log_logged_at ON rag.query_log (logged_at);
CREATE INDEX query_log_principal ON rag.query_log (tenant, user_id, logged_at);
