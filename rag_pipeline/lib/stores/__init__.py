"""Per-stage stores: the reads and writes of each pipeline stage in Postgres, in pipeline order.

- `pending`: `PendingDocument`, the live document version a stage still has to process;
- `source_state`: what is recorded of a source before a scan (documents, connector cursor);
- `sources`: one scan applied to `rag.documents` (changes, renames, tombstones);
- `quarantine`: refusals by any stage, and the list an operator sees;
- `parsed`: documents to parse, their stored bytes, their parses;
- `redaction`: findings, redacted documents, injection verdicts and the chunks cut from them;
- `chunks`: chunks cut straight from parses (no redaction step);
- `embeddings`: texts still without a vector for a model, and the vectors.

Every query uses bound parameters. Each stage asks for exactly the work that is missing for the
current (content hash, parser, redaction, chunker, model) keys, which is what makes re-runs
incremental: an unchanged document has nothing missing, so nothing is processed again.
"""
