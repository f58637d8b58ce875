-- Audit who could read a document when, and the events of fail-closed source handling.

-- Each event records the document's tenant and ACL as that event left them (for `deleted` and
-- `source_removed`: the ACL it had until then), and a `detail` object (quarantine reason,
-- previous ACL, why it was removed). Older rows keep NULL: that state was not recorded.
ALTER TABLE rag.document_events
    ADD COLUMN tenant text,
    ADD COLUMN acl_principals text[],
    ADD COLUMN detail jsonb;

-- New events: `source_removed` (the source left sources.yaml; its documents are tombstoned),
-- `quarantined` and `released` (the source stage started or stopped refusing a document whose
-- bytes and metadata did not otherwise change, for example after the size limit changed).
ALTER TABLE rag.document_events DROP CONSTRAINT document_events_event_check;
ALTER TABLE rag.document_events ADD CONSTRAINT document_events_event_check
    CHECK (event IN ('added', 'changed', 'metadata_changed', 'deleted', 'restored',
                     'source_removed', 'quarantined', 'released'));

-- Each scan clears, in one statement, the source-stage refusals of the documents it no longer
-- refuses; without this index that statement reads the whole quarantine table per source.
CREATE INDEX quarantine_source_stage_idx ON rag.quarantine (source, stage);
