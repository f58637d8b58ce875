"""The bundled golden set `eval_sets/sample_corpus.jsonl` against the sample corpus, no database.

Every labelled document must exist and be served (not quarantined); relevant documents must be
readable by the question's principal and forbidden ones must not (tenant + ACL, as
`rag.readable_chunks` decides, computed from `directory.yaml` and the `_metadata.yaml` sidecars
through the real connector); every reference passage must be found in the parsed text of one
of the question's relevant documents (the pipeline's own parser, PDFs included, compared with
whitespace runs collapsed to one space).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path, PurePosixPath

import pytest

from rag_pipeline.lib.catalog import UserAccess, load_sources, load_user_access
from rag_pipeline.lib.chunking import document_text
from rag_pipeline.lib.connectors import DiscoveredDocument, scan_filesystem_source
from rag_pipeline.lib.evaluation.golden import GoldenQuestion, read_golden_set
from rag_pipeline.lib.parsing import parse_document

ROOT = Path(__file__).resolve().parents[2]
EVAL_SET = ROOT / "eval_sets" / "sample_corpus.jsonl"
CORPUS = ROOT / "rag_pipeline" / "sample_corpus"
DIRECTORY = CORPUS / "directory.yaml"
CP1252_TICKET = "acme_support:legacy/TCK-0998-cp1252.txt"


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture(scope="module")
def questions() -> list[GoldenQuestion]:
    return read_golden_set(EVAL_SET)


@pytest.fixture(scope="module")
def documents() -> dict[str, DiscoveredDocument]:
    """Every file of the sample corpus as the connector sees it (metadata, ACL, quarantine)."""
    return {
        document.doc_id: document
        for source in load_sources(CORPUS / "sources.yaml")
        for document in scan_filesystem_source(source)
    }


def access_of(question: GoldenQuestion) -> UserAccess:
    return load_user_access(DIRECTORY, question.user)


def readable(document: DiscoveredDocument, access: UserAccess) -> bool:
    return (
        document.quarantine is None
        and document.tenant == access.tenant
        and bool(set(document.acl_principals) & set(access.principals))
    )


def forbidden_ids(question: GoldenQuestion) -> list[str]:
    return list(question.extra.get("forbidden_doc_ids", []))


def test_the_set_covers_every_category(
    questions: list[GoldenQuestion], documents: dict[str, DiscoveredDocument]
) -> None:
    answerable = [q for q in questions if q.relevant_doc_ids]
    denied = [q for q in questions if forbidden_ids(q)]
    nowhere = [q for q in questions if not q.relevant_doc_ids and not forbidden_ids(q)]
    assert len(questions) >= 60
    assert len(denied) >= 12
    assert len(nowhere) >= 3
    assert len(answerable) + len(denied) + len(nowhere) == len(questions)
    relevant = {doc_id for q in answerable for doc_id in q.relevant_doc_ids}
    formats = Counter(PurePosixPath(doc_id).suffix for doc_id in relevant)
    assert set(formats) == {".md", ".html", ".pdf", ".txt"}, formats
    assert CP1252_TICKET in relevant
    assert {documents[doc_id].tenant for doc_id in relevant} == {"acme", "globex"}
    # Denials across tenants and within a tenant (missing group).
    tenants_denied = {
        access_of(q).tenant != documents[doc_id].tenant
        for q in denied
        for doc_id in forbidden_ids(q)
    }
    assert tenants_denied == {True, False}


def test_expectations_and_references_are_consistent(questions: list[GoldenQuestion]) -> None:
    for question in questions:
        extra = question.extra
        if question.relevant_doc_ids:
            assert extra.get("expect") == "answer", question.id
            contexts = extra.get("reference_contexts")
            assert isinstance(contexts, list) and 1 <= len(contexts) <= 2, question.id
            assert all(isinstance(c, str) and c.strip() for c in contexts), question.id
            answer = extra.get("reference_answer")
            assert isinstance(answer, str) and answer.strip(), question.id
            assert not forbidden_ids(question), question.id
        else:
            assert extra.get("expect") == "refusal", question.id
            assert "reference_contexts" not in extra, question.id
            assert set(forbidden_ids(question)).isdisjoint(question.relevant_doc_ids)


def test_labelled_documents_exist_and_permissions_hold(
    questions: list[GoldenQuestion], documents: dict[str, DiscoveredDocument]
) -> None:
    for question in questions:
        access = access_of(question)
        for doc_id in question.relevant_doc_ids:
            assert doc_id in documents, (question.id, doc_id)
            assert documents[doc_id].quarantine is None, (question.id, doc_id)
            assert readable(documents[doc_id], access), (question.id, doc_id, "not readable")
        for doc_id in forbidden_ids(question):
            assert doc_id in documents, (question.id, doc_id)
            # The document exists and is served to others; only this principal may not read it.
            assert documents[doc_id].quarantine is None, (question.id, doc_id)
            assert not readable(documents[doc_id], access), (question.id, doc_id, "readable")


def test_reference_contexts_are_passages_of_the_relevant_documents(
    questions: list[GoldenQuestion], documents: dict[str, DiscoveredDocument]
) -> None:
    needed = {doc_id for q in questions for doc_id in q.relevant_doc_ids}
    texts = {}
    for doc_id in sorted(needed):
        document = documents[doc_id]
        assert document.content is not None and document.mime_type is not None, doc_id
        parsed = parse_document(
            document.content,
            document.mime_type,
            encoding=document.encoding,
            filename=document.relative_path,
            declared_title=document.title,
        )
        texts[doc_id] = normalised(document_text(parsed.elements))
    for question in questions:
        for context in question.extra.get("reference_contexts", []):
            assert any(
                normalised(context) in texts[doc_id] for doc_id in question.relevant_doc_ids
            ), (question.id, context)
