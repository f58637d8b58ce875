"""Answers with citations: retrieve, decide from the retrieval scores whether there is enough
evidence, then let a generator write sentences that each cite the chunks they come from.

    question -> retrieve (READ ONLY snapshot) -> evidence rule -> generator -> citations
             -> query log (its own transaction; a failure is reported, never raised)

The refusal ("not found in the documents you can read") is decided by retrieval, before any
generator runs, from what the reader may read only: a document the reader may not read is never
a candidate, so asking about it is refused exactly as asking about something that does not
exist. A generator may refuse too (the model says NOT_FOUND, or its answer is rejected because a
sentence cites nothing or cites a passage that was not retrieved); that refusal is recorded with
its own reason.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.embedding import Embedder
from rag_pipeline.lib.retrieval.generators import (
    ExtractiveGenerator,
    Generator,
    GeneratorError,
    OpenAICompatibleGenerator,
    Passage,
    UngroundedAnswerError,
    split_sentences,
)
from rag_pipeline.lib.retrieval.hits import SearchHit
from rag_pipeline.lib.retrieval.lexical import TEXT_SEARCH_CONFIG
from rag_pipeline.lib.retrieval.pipeline import RetrievalOptions, RetrievalResult, retrieve
from rag_pipeline.lib.retrieval.query_log import log_query

if TYPE_CHECKING:
    from rag_pipeline.settings import Settings

logger = logging.getLogger(__name__)

REFUSAL_TEXT = "Not found in the documents you can read."
# Refusal reasons. `no_evidence` is the only one retrieval gives, whatever the cause (nothing
# readable matched, or what matched is too weak), so a refusal never tells whether an unreadable
# document exists.
NO_EVIDENCE = "no_evidence"
GENERATOR_NOT_FOUND = "generator_not_found"
UNGROUNDED_ANSWER = "ungrounded_answer"
GENERATOR_FAILED = "generator_failed"

# Evidence thresholds, measured on the sample corpus with MiniLM, hybrid retrieval, 5 hits
# (README, "Answers with citations"): the 25 golden questions against 41 that must be refused
# (the HR-only question asked by the four acme users who may not read it, 17 questions about
# another tenant's or an unreadable document, 10 unrelated ones asked in each tenant). A vector
# similarity of 0.45 alone is enough (refused questions reach at most 0.421); below it, half of
# the question's terms in one hit are enough (refused questions reach at most 0.44) provided the
# similarity is at least 0.30 (answered ones with less than 0.45 have 0.338 or more).
DEFAULT_MIN_SIMILARITY = 0.45
DEFAULT_MIN_COVERAGE = 0.5
DEFAULT_SIMILARITY_FLOOR = 0.30


@dataclass(frozen=True)
class EvidencePolicy:
    """When retrieval found enough to answer from (see the thresholds above)."""

    min_similarity: float = DEFAULT_MIN_SIMILARITY
    min_coverage: float = DEFAULT_MIN_COVERAGE
    similarity_floor: float = DEFAULT_SIMILARITY_FLOOR

    def sufficient(self, evidence: Evidence) -> bool:
        if not evidence.hits or evidence.coverage == 0.0:
            # Nothing readable, or not one question term in any hit (a question of stopwords
            # only, or one answered by no text at all).
            return False
        similarity = evidence.best_similarity
        if similarity is not None and similarity >= self.min_similarity:
            return True
        # Without a vector leg (lexical mode, or the embedder fell back) term coverage decides.
        return evidence.coverage >= self.min_coverage and (
            similarity is None or similarity >= self.similarity_floor
        )


@dataclass(frozen=True)
class Evidence:
    """What the refusal rule reads: retrieval's scores plus the question's term coverage."""

    hits: int
    # The best cosine similarity of the vector leg among the hits that share a question term
    # (None: no vector leg ran, or no such hit).
    best_similarity: float | None
    # The best BM25 score among the hits (None: no lexical leg ran); recorded, not a criterion.
    best_bm25: float | None
    # The largest share of the question's lexemes found in one hit (its title, section
    # headings and text), with the BM25 leg's English stemming and stopwords.
    coverage: float

    def to_json(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "best_similarity": self.best_similarity,
            "best_bm25": self.best_bm25,
            "coverage": round(self.coverage, 4),
        }


@dataclass(frozen=True)
class Citation:
    """A cited chunk; `char_start`/`char_end` are offsets in the document's parsed text: the
    exact span of the sentences taken from the chunk when they are verbatim (extractive), else
    the whole chunk."""

    chunk_id: str
    doc_id: str
    title: str | None
    uri: str
    heading_path: tuple[str, ...]
    char_start: int
    char_end: int
    page_numbers: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "title": self.title,
            "uri": self.uri,
            "heading_path": list(self.heading_path),
            "char_start": self.char_start,
            "char_end": self.char_end,
            "page_numbers": list(self.page_numbers),
        }


@dataclass(frozen=True)
class AnswerSentence:
    text: str
    # Chunk ids, each also in `Answer.citations`.
    citations: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "citations": list(self.citations)}


@dataclass(frozen=True)
class Answer:
    """`text` is the sentences with their citation numbers ([1] = `citations[0]`), or the
    refusal. `generator` names what wrote it; `retrieval` is what it was written from."""

    text: str
    sentences: tuple[AnswerSentence, ...]
    citations: tuple[Citation, ...]
    refused: bool
    refusal_reason: str | None
    generator: str
    retrieval: RetrievalResult

    def to_json(self) -> dict[str, Any]:
        """JSON-ready; the retrieval part without chunk texts (the citations point at them)."""
        result = self.retrieval
        return {
            "text": self.text,
            "refused": self.refused,
            "refusal_reason": self.refusal_reason,
            "sentences": [sentence.to_json() for sentence in self.sentences],
            "citations": [citation.to_json() for citation in self.citations],
            "generator": self.generator,
            "retrieval": {
                "version_id": result.version_id,
                "mode_requested": result.mode_requested,
                "mode_used": result.mode_used,
                "fallback_reason": result.fallback_reason,
                "reranker": result.reranker,
                "timings_ms": dict(result.timings_ms),
                "chunk_ids": [hit.chunk_id for hit in result.hits],
            },
        }


def generator_from_settings(settings: Settings) -> Generator:
    """The OpenAI-compatible generator when `RAG_LLM_URL` is set, else the extractive one."""
    if settings.llm_url:
        return OpenAICompatibleGenerator(settings.llm_url, settings.llm_model, settings.llm_api_key)
    return ExtractiveGenerator()


def policy_from_settings(settings: Settings) -> EvidencePolicy:
    return EvidencePolicy(
        min_similarity=settings.answer_min_similarity,
        min_coverage=settings.answer_min_coverage,
        similarity_floor=settings.answer_similarity_floor,
    )


def answer(
    conn: psycopg.Connection,
    access: UserAccess,
    question: str,
    options: RetrievalOptions,
    embedder: Embedder | None,
    generator: Generator | None = None,
    version_id: int | None = None,
    *,
    policy: EvidencePolicy | None = None,
    channel: str = "library",
    include_flagged: bool = False,
) -> Answer:
    """Answer `question` as `access` from what they may read in `version_id` (None: serving).

    Every sentence of an answer cites the chunks it comes from. A refusal has no sentences.
    Retrieval errors (no serving version, query too long, ...) are raised as by `retrieve`; a
    failing generator becomes a refusal (`generator_failed`). The query is logged afterwards
    (`rag.query_log`, its own transaction); a log failure is reported on the logger only.
    `policy` defaults to the configured thresholds (`RAG_ANSWER_*`).

    Chunks the prompt-injection detector flagged at ingest (`rag.chunks.injection`, tagged by
    the source's policy) are left out before the evidence rule and the generator see anything,
    unless `include_flagged`: a passage that tries to instruct the model never reaches it by
    default. Search still returns them (they are redacted like every chunk).
    """
    generator = generator or ExtractiveGenerator()
    if policy is None:
        from rag_pipeline.settings import current_settings

        policy = policy_from_settings(current_settings())
    result = retrieve(conn, access, question, options, embedder, version_id)
    if not include_flagged:
        result = without_flagged_chunks(result)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    passages, question_terms, hit_terms = _passages(conn, question, result.hits)
    timings["analyze"] = _ms_since(started)
    evidence = measure_evidence(result.hits, question_terms, hit_terms)
    built: Answer
    if not policy.sufficient(evidence):
        built = _refusal(result, NO_EVIDENCE, generator.name)
    else:
        started = time.perf_counter()
        built = _generate(result, generator, question, question_terms, passages)
        timings["generate"] = _ms_since(started)
    log_query(
        conn,
        access,
        question,
        result,
        kind="answer",
        channel=channel,
        refused=built.refused,
        refusal_reason=built.refusal_reason,
        generator=built.generator,
        extra_timings_ms=timings,
    )
    return built


def without_flagged_chunks(result: RetrievalResult) -> RetrievalResult:
    """`result` without the hits whose chunk was flagged as a prompt injection at ingest."""
    if not any(hit.injection for hit in result.hits):
        return result
    return dataclasses.replace(result, hits=[hit for hit in result.hits if not hit.injection])


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _refusal(result: RetrievalResult, reason: str, generator: str) -> Answer:
    return Answer(REFUSAL_TEXT, (), (), True, reason, generator, result)


def _generate(
    result: RetrievalResult,
    generator: Generator,
    question: str,
    question_terms: frozenset[str],
    passages: Sequence[Passage],
) -> Answer:
    try:
        draft = generator.generate(question, question_terms, passages)
    except UngroundedAnswerError as error:
        logger.warning("answer rejected: %s", error)
        return _refusal(result, UNGROUNDED_ANSWER, generator.name)
    except GeneratorError as error:
        logger.warning("generator failed: %s", error)
        return _refusal(result, GENERATOR_FAILED, generator.name)
    if draft.not_found or not draft.sentences:
        return _refusal(result, GENERATOR_NOT_FOUND, generator.name)
    by_number = {passage.number: passage for passage in passages}
    # Validated again here, whatever the generator: only retrieved passages may be cited.
    for sentence in draft.sentences:
        if not sentence.passages or any(n not in by_number for n in sentence.passages):
            logger.warning("answer rejected: a sentence cites nothing or an unknown passage")
            return _refusal(result, UNGROUNDED_ANSWER, generator.name)
    # Citations in order of first use; a chunk's span covers every sentence taken from it.
    spans: dict[int, tuple[int, int] | None] = {}
    for sentence in draft.sentences:
        for index, number in enumerate(sentence.passages):
            # A verbatim span is known only in the passage the sentence was taken from (its
            # first); any other citation of the chunk points at the whole chunk.
            span = sentence.span if index == 0 else None
            if number not in spans:
                spans[number] = span
                continue
            previous = spans[number]
            spans[number] = (
                None
                if previous is None or span is None
                else (min(previous[0], span[0]), max(previous[1], span[1]))
            )
    order = {number: index for index, number in enumerate(spans, 1)}
    citations = tuple(_citation(by_number[number].hit, span) for number, span in spans.items())
    sentences = tuple(
        AnswerSentence(sentence.text, tuple(by_number[n].hit.chunk_id for n in sentence.passages))
        for sentence in draft.sentences
    )
    text = " ".join(
        f"{sentence.text} " + "".join(f"[{order[n]}]" for n in draft_sentence.passages)
        for sentence, draft_sentence in zip(sentences, draft.sentences, strict=True)
    )
    return Answer(text, sentences, citations, False, None, generator.name, result)


def _citation(hit: SearchHit, span: tuple[int, int] | None) -> Citation:
    start, end = (hit.char_start, hit.char_end)
    if span is not None:
        start, end = hit.char_start + span[0], hit.char_start + span[1]
    return Citation(
        hit.chunk_id,
        hit.doc_id,
        hit.title,
        hit.uri,
        hit.heading_path,
        start,
        end,
        hit.page_numbers,
    )


def measure_evidence(
    hits: Sequence[SearchHit],
    question_terms: frozenset[str],
    hit_terms: Sequence[frozenset[str]],
) -> Evidence:
    # Only hits sharing at least one of the question's terms count for similarity: MiniLM puts
    # a passage with none of them close enough to pass alone (0.48 between a question about
    # disabling webhook endpoints and a warehouse outage process), and such a hit cannot hold
    # an answer to cite anyway.
    similarities = [
        hit.scores["vector"]
        for hit, terms in zip(hits, hit_terms, strict=True)
        if "vector" in hit.scores and (not question_terms or question_terms & terms)
    ]
    bm25 = [hit.scores["lexical"] for hit in hits if "lexical" in hit.scores]
    coverage = 0.0
    if question_terms:
        coverage = max(
            (len(question_terms & terms) / len(question_terms) for terms in hit_terms),
            default=0.0,
        )
    vector_ran = any("vector" in hit.scores for hit in hits)
    return Evidence(
        hits=len(hits),
        # 0.0 rather than None when the vector leg ran: None means "no vector leg", which lets
        # term coverage decide alone.
        best_similarity=max(similarities, default=0.0) if vector_ran else None,
        best_bm25=max(bm25) if bm25 else None,
        coverage=coverage,
    )


def _passages(
    conn: psycopg.Connection, question: str, hits: Sequence[SearchHit]
) -> tuple[list[Passage], frozenset[str], list[frozenset[str]]]:
    """Passages with their sentences' lexemes, the question's lexemes, and each hit's lexemes
    (title, headings and text), all from one call to Postgres' own English analysis."""
    sentences = [split_sentences(hit.text) for hit in hits]
    texts = [question]
    texts += [" ".join((hit.title or "", *hit.heading_path, hit.text)) for hit in hits]
    texts += [span.text for spans in sentences for span in spans]
    terms = analyze(conn, texts)
    question_terms, hit_terms = terms[0], terms[1 : 1 + len(hits)]
    cursor = 1 + len(hits)
    passages = []
    for number, (hit, spans) in enumerate(zip(hits, sentences, strict=True), 1):
        passages.append(
            Passage(number, hit, tuple(spans), tuple(terms[cursor : cursor + len(spans)]))
        )
        cursor += len(spans)
    return passages, question_terms, hit_terms


def analyze(conn: psycopg.Connection, texts: Sequence[str]) -> list[frozenset[str]]:
    """Each text's lexemes by `to_tsvector('english', ...)`, as the BM25 leg sees them. Reads
    no table, so it runs outside the retrieval snapshot."""
    if not texts:
        return []
    # Its own short transaction: on a connection that is not in autocommit mode (a pool's), a
    # bare statement would leave a transaction open, and the query log would then only write a
    # savepoint inside it.
    with conn.transaction():
        rows = conn.execute(
            """
            SELECT t.ord, coalesce(array_agg(u.lexeme) FILTER (WHERE u.lexeme IS NOT NULL), '{}')
            FROM unnest(%(texts)s::text[]) WITH ORDINALITY AS t (body, ord)
            LEFT JOIN LATERAL unnest(to_tsvector(%(config)s::regconfig, t.body)) u ON true
            GROUP BY t.ord
            ORDER BY t.ord
            """,
            {"texts": list(texts), "config": TEXT_SEARCH_CONFIG},
            prepare=False,
        ).fetchall()
    return [frozenset(str(lexeme) for lexeme in lexemes) for _, lexemes in rows]
