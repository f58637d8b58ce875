-- API keys of the HTTP API (`rag-pipeline api-key create|list|revoke`, `rag_pipeline/api/`).
--
-- A key is shown once, when it is created, and only its SHA-256 is stored: the keys are 256
-- random bits, so a fast hash cannot be brute-forced and a leaked table grants nothing. The
-- principal (user, tenant, principals) is resolved from the directory file when the key is
-- created; at request time the API also re-reads the directory, so that removing a user or a
-- group takes effect at once (see `rag_pipeline/lib/api_keys.py`).
CREATE TABLE rag.api_keys (
    key_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash    text        NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    -- The first characters of the key (e.g. `rag_AbCd`), to recognise a key in `api-key list`
    -- without storing anything that helps guess it.
    key_prefix  text        NOT NULL,
    user_id     text        NOT NULL,
    tenant      text        NOT NULL,
    principals  text[]      NOT NULL CHECK (cardinality(principals) > 0),
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
