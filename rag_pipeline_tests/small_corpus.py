"""A small two-tenant corpus written with the pipeline's own library functions, for fast tests.

Scan, parse, chunk, embed (with the fake embedder) and build a version without Dagster, as the
assets do, so a test that needs an index pays well under a second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import psycopg

from rag_pipeline.lib import index_versions
from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.chunking import ChunkingConfig, TokenCounter, chunk_document
from rag_pipeline.lib.connectors import DiscoveredDocument, QuarantineReason
from rag_pipeline.lib.embedding import Embedder
from rag_pipeline.lib.parsing import PARSER_KEY, ParsedDocument, parse_document
from rag_pipeline.lib.stores.chunks import documents_to_chunk, save_chunks
from rag_pipeline.lib.stores.embeddings import save_embeddings, texts_to_embed
from rag_pipeline.lib.stores.parsed import (
    documents_to_parse,
    load_blob,
    load_parsed_elements,
    save_parsed,
)
from rag_pipeline.lib.stores.sources import sync_source
from rag_pipeline_tests.fakes import HashedBagOfWordsEmbedder, WordCounter

EMBEDDER = HashedBagOfWordsEmbedder()
COUNTER = WordCounter()
CHUNKING = ChunkingConfig(max_tokens=64, min_tokens=8)
KEYS = index_versions.IndexKeys(EMBEDDER.model_key, PARSER_KEY, CHUNKING.key(COUNTER.name))
EVERYTHING = 1000
STAFF = UserAccess("ann", "acme", ("user:ann", "group:staff"))
HR = UserAccess("bob", "acme", ("user:bob", "group:hr"))
OUTSIDER = UserAccess("cyd", "globex", ("user:cyd", "group:staff"))

# doc -> (tenant, ACL, text). Paragraphs of about 30 words: several chunks per long document.
DOCS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "vpn.txt": (
        "acme",
        ("group:staff",),
        "VPN access. Connect to the VPN portal at vpn.acme.example with your laptop. "
        "If the client shows error ACN-204 the certificate has expired; renew it in the portal.",
    ),
    "kafka.txt": (
        "acme",
        ("group:staff",),
        "Kafka consumer lag. When the consumer lag of the billing topic grows, restart the "
        "consumer group and check the broker disk. Lag above one million messages pages on-call.",
    ),
    "leave.txt": (
        "acme",
        ("group:hr",),
        "Parental leave. Employees get sixteen weeks of paid parental leave. Request leave in "
        "the HR portal at least four weeks before it starts.",
    ),
    "backup.txt": (
        "acme",
        ("group:staff",),
        "Backups and restore. Nightly backups of the billing database are kept for thirty days. "
        "To restore a backup, open a ticket with the database team.\n\n"
        + " ".join(f"Restore drill {n} verified the billing backup checksum." for n in range(12)),
    ),
    "globex-vpn.txt": (
        "globex",
        ("group:staff",),
        "Globex VPN. The Globex VPN portal is vpn.globex.example; error ACN-204 means the token "
        "expired.",
    ),
}


def ingest(
    conn: psycopg.Connection,
    docs: dict[str, tuple[str, tuple[str, ...], str]],
    source: str = "s",
    refused: frozenset[str] = frozenset(),
) -> None:
    """One scan of `source` holding exactly `docs`, then parse, chunk and embed what is new.

    Documents named in `refused` come with metadata the source stage refuses (a source-stage
    quarantine of their current content), as a connector reports an unparseable sidecar.
    """
    discovered = []
    for name, (tenant, acl, text) in sorted(docs.items()):
        content = text.encode()
        refuse = name in refused
        discovered.append(
            DiscoveredDocument(
                doc_id=f"{source}:{name}",
                source=source,
                uri=f"file:///{source}/{name}",
                relative_path=name,
                content_hash=hashlib.sha256(content).hexdigest(),
                byte_size=len(content),
                mime_type="text/plain",
                encoding=None,
                owner=None,
                tenant=tenant,
                acl_principals=acl,
                title=name.removesuffix(".txt"),
                updated_at=datetime(2026, 1, 1, tzinfo=UTC),
                content=None if refuse else content,
                quarantine=QuarantineReason("invalid_metadata", "updated_at is not ISO 8601")
                if refuse
                else None,
            )
        )
    sync_source(conn, source, discovered, run_id="test")
    process_source(conn, source, KEYS, CHUNKING, COUNTER, EMBEDDER)


@cache
def _parse(content: bytes, mime_type: str, filename: str, title: str | None) -> ParsedDocument:
    """`parse_document` once per distinct input: it is deterministic, and the permission fuzz
    ingests the same texts in each of its sequences (sentence splitting costs 0.1 s a text)."""
    return parse_document(content, mime_type, filename=filename, declared_title=title)


def process_source(
    conn: psycopg.Connection,
    source: str,
    keys: index_versions.IndexKeys,
    chunking: ChunkingConfig,
    counter: TokenCounter,
    embedder: Embedder,
) -> None:
    """Parse, chunk and embed what the source's last scan left to do, as the assets do."""
    for doc in documents_to_parse(conn, source, keys.parser_key):
        content = load_blob(conn, doc.content_hash)
        parsed = _parse(content, doc.mime_type, doc.relative_path, doc.title)
        with conn.transaction():
            save_parsed(conn, doc, keys.parser_key, parsed)
    for doc in documents_to_chunk(conn, source, keys.parser_key, keys.chunker_key):
        elements = load_parsed_elements(conn, doc.doc_id, doc.content_hash, keys.parser_key)
        chunks = chunk_document(doc.title or doc.relative_path, elements, counter, chunking)
        with conn.transaction():
            save_chunks(conn, doc, keys.parser_key, keys.chunker_key, chunks)
    pending = texts_to_embed(conn, source, keys.parser_key, keys.chunker_key, keys.model_key)
    if pending:
        vectors = embedder.embed([text for _, text in pending])
        with conn.transaction():
            save_embeddings(conn, keys.model_key, [h for h, _ in pending], vectors)


def save_tiny_cross_encoder(path: Path, words: Iterable[str]) -> Path:
    """A randomly initialised one-layer BERT cross-encoder over `words`, saved to `path`.

    No reranker ships in any package here; this exercises the wiring without a download.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    (path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))])
    )
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        num_labels=1,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build(conn: psycopg.Connection, promote: bool = True) -> index_versions.Candidate:
    candidate = index_versions.build_candidate(conn, KEYS, run_id="test")
    if promote:
        index_versions.promote(conn, candidate.version_id, actor="test", required_checks=())
    return candidate
