-- Freshness SLA breaches per source, recorded by `freshness_sla_sensor` (rag_pipeline/lib/freshness.py).
--
-- A breach opens when a change detected at a source (a `rag.document_events` row) has not become
-- searchable within the source's `freshness:` target, and resolves when no change of that source
-- is pending for longer than the target any more. At most one open breach per source: the partial
-- unique index makes a second row for an ongoing breach impossible, whichever process records it.
CREATE TABLE rag.freshness_breaches (
    breach_id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source                    text             NOT NULL,
    detected_at               timestamptz      NOT NULL DEFAULT now(),
    target_seconds            double precision NOT NULL CHECK (target_seconds > 0),
    -- The age of the oldest pending change when the breach was detected, then the largest seen
    -- while it stayed open.
    lag_seconds               double precision NOT NULL,
    worst_lag_seconds         double precision NOT NULL,
    pending_changes           integer          NOT NULL,
    oldest_pending_doc_id     text             NOT NULL,
    oldest_pending_event      text             NOT NULL,
    oldest_pending_change_at  timestamptz      NOT NULL,
    last_evaluated_at         timestamptz      NOT NULL DEFAULT now(),
    resolved_at               timestamptz,
    -- What resolved it: the change became searchable, or a later change or removal replaced it.
    resolution                text,
    CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);
CREATE UNIQUE INDEX freshness_breaches_one_open_per_source
    ON rag.freshness_breaches (source) WHERE resolved_at IS NULL;
CREATE INDEX freshness_breaches_source_idx ON rag.freshness_breaches (source, detected_at);

-- The freshness measurement reads the events of a time window; without this it reads them all.
CREATE INDEX document_events_recorded_idx ON rag.document_events (recorded_at);
