-- Evaluation reports: every golden set asked of an index version, kept as history.
--
-- One `evaluation_runs` row per (version, golden set, configuration) evaluated, and one
-- `evaluation_metrics` row per metric of it: "one row per version x set x metric", so quality
-- can be compared across versions and over time with plain SQL. No foreign key to
-- `rag.index_versions`: garbage collection deletes old versions, their history stays.

CREATE TABLE rag.evaluation_runs (
    evaluation_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    evaluated_at      timestamptz NOT NULL DEFAULT now(),
    version_id        bigint      NOT NULL,
    -- The golden set's name (file stem) and a hash of its content: an edited set is another set.
    golden_set        text        NOT NULL,
    golden_set_hash   text        NOT NULL,
    -- A named retrieval configuration ('default', 'vector', 'lexical') and a hash of its options.
    configuration     text        NOT NULL,
    options_hash      text        NOT NULL,
    questions         integer     NOT NULL CHECK (questions >= 0),
    -- The Dagster run (or CLI invocation) that produced it.
    produced_by       text        NOT NULL,
    -- Per-question scores and rankings, for wins and losses against another version.
    per_question      jsonb       NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX evaluation_runs_lookup
    ON rag.evaluation_runs (version_id, golden_set_hash, configuration, options_hash);

CREATE TABLE rag.evaluation_metrics (
    evaluation_id     bigint           NOT NULL
                      REFERENCES rag.evaluation_runs (evaluation_id) ON DELETE CASCADE,
    version_id        bigint           NOT NULL,
    golden_set        text             NOT NULL,
    configuration     text             NOT NULL,
    metric            text             NOT NULL,
    value             double precision,
    evaluated_at      timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (evaluation_id, metric)
);

CREATE INDEX evaluation_metrics_by_version
    ON rag.evaluation_metrics (version_id, golden_set, configuration, metric);
