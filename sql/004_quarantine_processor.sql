-- Which parser or chunker refused a document, so that a new version of it gets another try.
ALTER TABLE rag.quarantine ADD COLUMN processor_key text NOT NULL DEFAULT '';
