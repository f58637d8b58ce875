"""Structure-aware chunking: budget, provenance, sections, heading paths and splitting."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import random
import re

import pytest

from rag_pipeline.lib.chunking import Chunk, ChunkingConfig, chunk_document, document_text
from rag_pipeline.lib.embedding import load_token_counter
from rag_pipeline.lib.parsing import ParsedElement

TITLE = "Handbook"


class WordCounter:
    """One token per whitespace-separated word: exact and instant."""

    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())


class PieceCounter:
    """One token per started group of four characters of each word, like word pieces."""

    name = "pieces"

    def count(self, text: str) -> int:
        return sum(math.ceil(len(word) / 4) for word in text.split())


def make_elements(*specs: tuple[str, str, int | None, int | None]) -> list[ParsedElement]:
    """Elements from (type, text, depth, page) tuples, indexed in order."""
    return [
        ParsedElement(index=i, element_type=kind, text=text, depth=depth, page_number=page)
        for i, (kind, text, depth, page) in enumerate(specs)
    ]


def heading(text: str, depth: int, page: int | None = None) -> tuple[str, str, int, int | None]:
    return ("Title", text, depth, page)


def para(text: str, page: int | None = None) -> tuple[str, str, None, int | None]:
    return ("NarrativeText", text, None, page)


def words(count: int, stem: str = "word") -> str:
    return " ".join(f"{stem}{i}" for i in range(count))


def sentences(count: int, length: int = 5) -> str:
    return " ".join(
        " ".join(f"s{n}w{i}" for i in range(length)).capitalize() + "." for n in range(count)
    )


def random_document(seed: int) -> list[ParsedElement]:
    rng = random.Random(seed)
    specs: list[tuple[str, str, int | None, int | None]] = []
    for section in range(rng.randint(2, 6)):
        specs.append(heading(f"Section {seed}.{section}", rng.randint(0, 2), page=section + 1))
        for _ in range(rng.randint(1, 4)):
            specs.append(para(sentences(rng.randint(1, 12), rng.randint(2, 9)), page=section + 1))
    return make_elements(*specs)


def assert_provenance(elements: list[ParsedElement], chunks: list[Chunk]) -> None:
    full_text = document_text(elements)
    for chunk in chunks:
        assert full_text[chunk.char_start : chunk.char_end] == chunk.text
        covered = document_text(elements[chunk.element_start : chunk.element_end])
        assert chunk.text in covered


SMALL = ChunkingConfig(max_tokens=40, special_tokens=2, min_tokens=8)


def test_empty_input_gives_no_chunks() -> None:
    assert chunk_document(TITLE, [], WordCounter(), SMALL) == []


def test_budget_is_max_tokens_minus_special_tokens() -> None:
    assert ChunkingConfig(max_tokens=256, special_tokens=2).budget == 254
    assert SMALL.budget == 38


@pytest.mark.parametrize("seed", range(8))
def test_every_chunk_is_within_budget_counting_search_text(seed: int) -> None:
    counter = WordCounter()
    chunks = chunk_document(TITLE, random_document(seed), counter, SMALL)
    assert chunks
    for chunk in chunks:
        assert chunk.token_count == counter.count(chunk.search_text)
        assert chunk.token_count <= SMALL.budget


@pytest.mark.parametrize("seed", range(8))
def test_chunk_text_is_the_document_text_slice_and_covers_everything(seed: int) -> None:
    elements = random_document(seed)
    chunks = chunk_document(TITLE, elements, WordCounter(), SMALL)
    assert_provenance(elements, chunks)
    full_text = document_text(elements)
    covered: set[int] = set()
    for chunk in chunks:
        covered.update(range(chunk.char_start, chunk.char_end))
    missing = [i for i, char in enumerate(full_text) if not char.isspace() and i not in covered]
    assert missing == []


def test_ordinals_are_consecutive_from_zero_in_document_order() -> None:
    chunks = chunk_document(TITLE, random_document(3), WordCounter(), SMALL)
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    starts = [chunk.char_start for chunk in chunks]
    assert starts == sorted(starts)


def test_chunks_do_not_cross_sections_that_are_big_enough() -> None:
    elements = make_elements(
        heading("Alpha", 0),
        para(words(12, "a")),
        heading("Beta", 0),
        para(words(12, "b")),
    )
    chunks = chunk_document(TITLE, elements, WordCounter(), SMALL)
    assert [(c.element_start, c.element_end) for c in chunks] == [(0, 2), (2, 4)]
    assert [c.heading_path for c in chunks] == [("Alpha",), ("Beta",)]


def test_section_under_min_tokens_is_merged_with_the_next_one() -> None:
    elements = make_elements(
        heading("Alpha", 0),
        para("tiny"),
        heading("Beta", 0),
        para(words(12, "b")),
    )
    chunks = chunk_document(TITLE, elements, WordCounter(), SMALL)
    assert len(chunks) == 1
    assert (chunks[0].element_start, chunks[0].element_end) == (0, 4)
    assert chunks[0].heading_path == ()  # the common part of ("Alpha",) and ("Beta",)


def test_with_zero_min_tokens_no_chunk_spans_two_sections() -> None:
    elements = random_document(5)
    section_of: list[int] = []
    for element in elements:
        section_of.append(element.index if element.is_heading else section_of[-1])
    config = dataclasses.replace(SMALL, min_tokens=0)
    chunks = chunk_document(TITLE, elements, WordCounter(), config)
    for chunk in chunks:
        sections = {section_of[i] for i in range(chunk.element_start, chunk.element_end)}
        assert len(sections) == 1
        assert chunk.heading_path[-1] == elements[sections.pop()].text
    assert len(chunks) >= sum(element.is_heading for element in elements)


def test_heading_path_follows_heading_depth_and_pops_on_a_shallower_heading() -> None:
    elements = make_elements(
        heading("Guide", 0),
        para(words(3, "g")),
        heading("Install", 1),
        para(words(3, "i")),
        heading("Linux", 2),
        para(words(3, "l")),
        heading("Usage", 1),
        para(words(3, "u")),
        heading("Appendix", 0),
        para(words(3, "x")),
    )
    config = ChunkingConfig(max_tokens=40, special_tokens=2, min_tokens=0)
    chunks = chunk_document(TITLE, elements, WordCounter(), config)
    assert [c.heading_path for c in chunks] == [
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Install", "Linux"),
        ("Guide", "Usage"),
        ("Appendix",),
    ]
    assert chunks[2].search_text.startswith(f"{TITLE}\nGuide > Install > Linux\n\n")
    assert chunks[2].search_text.endswith(chunks[2].text)


def test_long_element_is_split_at_sentence_boundaries_within_budget() -> None:
    text = sentences(20, 5)  # 100 words, 20 sentences
    elements = make_elements(para(text))
    counter = WordCounter()
    chunks = chunk_document(TITLE, elements, counter, SMALL)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.token_count <= SMALL.budget
        assert chunk.text.endswith(".")
        assert re.match(r"S\d+w0 ", chunk.text)
        assert (chunk.element_start, chunk.element_end) == (0, 1)
    assert " ".join(chunk.text for chunk in chunks) == text


def test_sentence_longer_than_budget_is_split_at_word_boundaries() -> None:
    text = words(100)  # no sentence end at all
    chunks = chunk_document(TITLE, make_elements(para(text)), WordCounter(), SMALL)
    assert len(chunks) > 1
    assert all(chunk.token_count <= SMALL.budget for chunk in chunks)
    assert " ".join(chunk.text for chunk in chunks) == text


def test_single_giant_word_is_still_split_within_budget() -> None:
    blob = base64.b64encode(random.Random(7).randbytes(2250)).decode()
    assert len(blob) == 3000
    elements = make_elements(para("Attachment follows."), para(blob))
    counter = PieceCounter()
    chunks = chunk_document(TITLE, elements, counter, SMALL)
    assert len(chunks) > 10
    assert all(chunk.token_count <= SMALL.budget for chunk in chunks)
    assert_provenance(elements, chunks)
    blob_chunks = [chunk for chunk in chunks if chunk.element_start == 1]
    assert "".join(chunk.text for chunk in blob_chunks) == blob


def test_page_numbers_are_collected_from_every_element_of_a_chunk() -> None:
    elements = make_elements(
        heading("Policy", 0, page=1),
        para(words(3), page=1),
        para(words(3), page=2),
        para(words(3), page=4),
        para(words(3), page=None),
    )
    chunks = chunk_document(TITLE, elements, WordCounter(), SMALL)
    assert len(chunks) == 1
    assert chunks[0].page_numbers == (1, 2, 4)


def test_elements_without_pages_give_no_page_numbers() -> None:
    chunks = chunk_document(TITLE, make_elements(para(words(5))), WordCounter(), SMALL)
    assert chunks[0].page_numbers == ()


def test_chunking_config_key_changes_when_any_field_changes() -> None:
    base = ChunkingConfig()
    keys = {
        base.key("words"),
        base.key("other-tokenizer"),
        ChunkingConfig(max_tokens=128).key("words"),
        ChunkingConfig(special_tokens=3).key("words"),
        ChunkingConfig(min_tokens=10).key("words"),
    }
    assert len(keys) == 5
    assert ChunkingConfig().key("words") == base.key("words")
    assert base.key("words").startswith("structure-v2-256-")


def test_text_hash_is_sha256_of_search_text() -> None:
    chunk = chunk_document(TITLE, make_elements(para(words(5))), WordCounter(), SMALL)[0]
    assert chunk.text_hash == hashlib.sha256(chunk.search_text.encode()).hexdigest()


def test_chunks_stay_within_budget_under_a_very_long_heading() -> None:
    elements = make_elements(heading(words(245, "h"), 0), para(words(100)))
    counter = WordCounter()
    config = ChunkingConfig()
    chunks = chunk_document(TITLE, elements, counter, config)
    assert chunks
    assert max(chunk.token_count for chunk in chunks) <= config.budget


def test_real_tokenizer_keeps_chunks_within_budget_and_exact_offsets() -> None:
    counter = load_token_counter()
    config = ChunkingConfig()
    blob = base64.b64encode(random.Random(11).randbytes(2250)).decode()
    elements = make_elements(
        heading("Incident runbook", 0, page=1),
        para(sentences(60, 12), page=1),
        heading("Evidence", 1, page=2),
        para(blob, page=2),
        heading("Follow-up", 1, page=3),
        para("Rotate the credentials. Notify the owners; close the ticket.", page=3),
    )
    chunks = chunk_document("Postmortem", elements, counter, config)
    assert len(chunks) > 3
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.token_count == counter.count(chunk.search_text)
        assert chunk.token_count <= config.budget
    assert_provenance(elements, chunks)
    assert chunks[-1].heading_path == ("Incident runbook", "Follow-up")
    assert chunks[-1].page_numbers == (3,)
