import time

import dagster as dg

from rag_pipeline.defs.catalog_metadata import LINEAGE_GROUP, row_count_metadata
from rag_pipeline.defs.connectors.assets import source_documents
from rag_pipeline.defs.markdown import excerpt, table
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS, TRANSIENT_RETRY
from rag_pipeline.defs.resources import ParsingResource, PostgresResource
from rag_pipeline.lib.parse_worker import ParseWorker
from rag_pipeline.lib.parsing import PARSER_KEY, ParseError
from rag_pipeline.lib.progress import log_progress
from rag_pipeline.lib.redaction import redact_text
from rag_pipeline.lib.stores.parsed import documents_to_parse, load_blob, save_parsed
from rag_pipeline.lib.stores.quarantine import quarantine_document


@dg.asset(
    deps=[source_documents],
    partitions_def=SOURCE_PARTITIONS,
    group_name=LINEAGE_GROUP,
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_RETRY,
)
def parsed_documents(
    context: dg.AssetExecutionContext, postgres: PostgresResource, parsing: ParsingResource
) -> dg.MaterializeResult:
    """Typed elements (title, text, list item, table...) of each document, parsed by unstructured.

    Only document versions not yet parsed by this parser are parsed; each is committed on its
    own, so an interrupted run resumes where it stopped. A document the parser rejects, that
    yields no text, that takes longer than `parsing.timeout_seconds` (`parse_timeout`) or that
    crashes the parser process (`parser_crashed`) is quarantined with the reason, and the rest
    of the batch goes on.
    """
    started = time.perf_counter()
    parsed, failed, elements, text_chars = [], [], 0, 0
    # The worker's child process is started at the first document and stopped on every exit.
    with postgres.connection() as conn, ParseWorker(parsing.timeout_seconds) as worker:
        pending = documents_to_parse(conn, context.partition_key, PARSER_KEY)
        for doc in log_progress(context.log.info, "parsed", "documents", pending, len(pending)):
            try:
                result = worker.parse(
                    load_blob(conn, doc.content_hash),
                    doc.mime_type,
                    encoding=doc.encoding,
                    filename=doc.relative_path,
                    declared_title=doc.title,
                )
            except ParseError as error:
                # A timeout is the limit's verdict, not the parser's: recorded under a key that
                # names the limit, so raising RAG_PARSE_TIMEOUT_SECONDS gives it another try.
                refused_by = (
                    f"{PARSER_KEY}@timeout={parsing.timeout_seconds:g}s"
                    if error.code == "parse_timeout"
                    else PARSER_KEY
                )
                quarantine_document(
                    conn, doc, "parse", refused_by, error.code, error.message, context.run_id
                )
                failed.append((doc.doc_id, error.code, error.message))
                context.log.warning(f"quarantined {doc.doc_id}: {error.message}")
                continue
            with conn.transaction():
                save_parsed(conn, doc, PARSER_KEY, result)
            elements += len(result.elements)
            text_chars += result.text_chars
            # Redacted before it reaches Dagster's event log: this is the raw parsed text, and
            # the redaction step has not run on it yet.
            parsed.append(
                (
                    doc.doc_id,
                    redact_text(result.title),
                    len(result.elements),
                    excerpt(redact_text(result.elements[0].text), 80),
                )
            )
    with postgres.connection() as conn:
        rows = row_count_metadata(conn, "parsed_documents", context.partition_key)
    return dg.MaterializeResult(
        metadata={
            **rows,
            "parser": PARSER_KEY,
            "parse_timeout_s": parsing.timeout_seconds,
            "documents_parsed": len(parsed),
            "documents_quarantined": len(failed),
            "elements": elements,
            "text_chars": text_chars,
            "duration_s": round(time.perf_counter() - started, 3),
            "preview": dg.MetadataValue.md(
                (
                    table(("doc_id", "title", "elements", "first element"), parsed)
                    if parsed
                    else "Nothing new to parse."
                )
                + (
                    "\n\n**Quarantined**\n\n" + table(("doc_id", "reason", "detail"), failed)
                    if failed
                    else ""
                )
            ),
        }
    )
