import time

import dagster as dg

from rag_pipeline.defs.connectors.assets import source_documents
from rag_pipeline.defs.markdown import excerpt, table
from rag_pipeline.defs.partitions import SOURCE_PARTITIONS, TRANSIENT_RETRY
from rag_pipeline.defs.resources import PostgresResource
from rag_pipeline.lib.parsing import PARSER_KEY, ParseError, parse_document
from rag_pipeline.lib.pipeline_store import (
    documents_to_parse,
    load_blob,
    quarantine_document,
    save_parsed,
)


@dg.asset(
    deps=[source_documents],
    partitions_def=SOURCE_PARTITIONS,
    group_name="parsing",
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_RETRY,
)
def parsed_documents(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Typed elements (title, text, list item, table...) of each document, parsed by unstructured.

    Only document versions not yet parsed by this parser are parsed; each is committed on its
    own, so an interrupted run resumes where it stopped. A document the parser rejects, or that
    yields no text, is quarantined with the reason and the rest of the batch goes on.
    """
    started = time.perf_counter()
    parsed, failed, elements, text_chars = [], [], 0, 0
    with postgres.connection() as conn:
        pending = documents_to_parse(conn, context.partition_key, PARSER_KEY)
        for doc in pending:
            try:
                result = parse_document(
                    load_blob(conn, doc.content_hash),
                    doc.mime_type,
                    encoding=doc.encoding,
                    filename=doc.relative_path,
                    declared_title=doc.title,
                )
            except ParseError as error:
                quarantine_document(
                    conn, doc, "parse", PARSER_KEY, error.code, error.message, context.run_id
                )
                failed.append((doc.doc_id, error.code, error.message))
                context.log.warning(f"quarantined {doc.doc_id}: {error.message}")
                continue
            with conn.transaction():
                save_parsed(conn, doc, PARSER_KEY, result)
            elements += len(result.elements)
            text_chars += result.text_chars
            parsed.append(
                (
                    doc.doc_id,
                    result.title,
                    len(result.elements),
                    excerpt(result.elements[0].text, 80),
                )
            )
    return dg.MaterializeResult(
        metadata={
            "parser": PARSER_KEY,
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
