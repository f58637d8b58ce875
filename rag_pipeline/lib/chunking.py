"""Structure-aware chunking under the embedder's token budget.

A chunk never crosses a section (the run of elements under one heading path) unless the chunk so
far is too small to stand alone, and never exceeds the budget: elements longer than the budget are
split at sentence, then word boundaries. Every chunk records exactly where it came from: the
element range and the character range in the document text, where the document text is the
elements' texts joined by `ELEMENT_SEPARATOR`. So `document_text[char_start:char_end] == text`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rag_pipeline.lib.parsing import ParsedElement

ELEMENT_SEPARATOR = "\n\n"
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_WHITESPACE = re.compile(r"\s+")


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int:
        """Word pieces in `text`, without the model's special tokens."""
        ...


@dataclass(frozen=True)
class ChunkingConfig:
    """`max_tokens` is the embedder's sequence length; two of those go to [CLS] and [SEP]."""

    max_tokens: int = 256
    special_tokens: int = 2
    min_tokens: int = 48

    @property
    def budget(self) -> int:
        return self.max_tokens - self.special_tokens

    def key(self, tokenizer_name: str) -> str:
        fields = {"algorithm": "structure-v2", "tokenizer": tokenizer_name, **self.__dict__}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
        return f"structure-v2-{self.max_tokens}-{digest}"


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    search_text: str
    token_count: int
    heading_path: tuple[str, ...]
    element_start: int
    element_end: int  # exclusive
    char_start: int
    char_end: int  # exclusive
    page_numbers: tuple[int, ...]

    @property
    def text_hash(self) -> str:
        return hashlib.sha256(self.search_text.encode()).hexdigest()


@dataclass(frozen=True)
class _Piece:
    """A span of one element, or a whole element, with its absolute character offsets."""

    element: ParsedElement
    char_start: int
    char_end: int
    heading_path: tuple[str, ...]
    tokens: int


def document_text(elements: Sequence[ParsedElement]) -> str:
    return ELEMENT_SEPARATOR.join(element.text for element in elements)


def _element_offsets(elements: Sequence[ParsedElement]) -> list[int]:
    offsets, position = [], 0
    for element in elements:
        offsets.append(position)
        position += len(element.text) + len(ELEMENT_SEPARATOR)
    return offsets


def _heading_paths(elements: Sequence[ParsedElement]) -> list[tuple[str, ...]]:
    """The heading path in force at each element (a heading belongs to its own section)."""
    stack: list[tuple[int, str]] = []
    paths = []
    for element in elements:
        if element.is_heading:
            depth = element.depth if element.depth is not None else 0
            while stack and stack[-1][0] >= depth:
                stack.pop()
            stack.append((depth, element.text))
        paths.append(tuple(text for _, text in stack))
    return paths


def _split_spans(text: str, limit: int, counter: TokenCounter) -> list[tuple[int, int]]:
    """Split `text` into spans of at most `limit` tokens at sentence, then word, boundaries."""
    units: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        units.append((start, match.start()))
        start = match.end()
    units.append((start, len(text)))
    fine: list[tuple[int, int]] = []
    for unit_start, unit_end in units:
        if counter.count(text[unit_start:unit_end]) <= limit:
            fine.append((unit_start, unit_end))
            continue
        words = [
            (m.start() + unit_start, m.end() + unit_start)
            for m in re.finditer(r"\S+", text[unit_start:unit_end])
        ]
        for word_start, word_end in words:
            if counter.count(text[word_start:word_end]) <= limit:
                fine.append((word_start, word_end))
                continue
            # A single "word" above the budget (a hash, a base64 blob): cut by characters.
            cut = word_start
            while cut < word_end:
                size = max(1, limit)
                while size > 1 and counter.count(text[cut : cut + size]) > limit:
                    size //= 2
                fine.append((cut, min(cut + size, word_end)))
                cut += size
    spans: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for span in fine:
        if current is None:
            current = span
        elif counter.count(text[current[0] : span[1]]) <= limit:
            current = (current[0], span[1])
        else:
            spans.append(current)
            current = span
    if current is not None:
        spans.append(current)
    return spans


def _prefix(title: str, heading_path: tuple[str, ...], counter: TokenCounter, limit: int) -> str:
    """Title and heading path put in front of the chunk text, cut to at most `limit` tokens.

    Headings are dropped from the top down, then the title is shortened: a pathological heading
    must never push a chunk over the embedder's budget.
    """
    headings = [heading for heading in heading_path if heading != title]
    while True:
        lines = [title, " > ".join(headings)] if headings else [title]
        prefix = "\n".join(line for line in lines if line) + "\n\n"
        if counter.count(prefix) <= limit:
            return prefix
        if headings:
            headings = headings[1:]
        elif len(title) > 1:
            title = title[: len(title) // 2]
        else:
            return ""


def chunk_document(
    title: str,
    elements: Sequence[ParsedElement],
    counter: TokenCounter,
    config: ChunkingConfig = ChunkingConfig(),
) -> list[Chunk]:
    """Chunks of one parsed document, in order, each within `config.budget` tokens."""
    if not elements:
        return []
    offsets = _element_offsets(elements)
    paths = _heading_paths(elements)
    full_text = document_text(elements)
    # Budget for the body: what is left after the longest prefix this document can produce.
    prefix_limit = config.budget // 4
    prefix_tokens = max(
        counter.count(_prefix(title, path, counter, prefix_limit)) for path in set(paths)
    )
    body_limit = config.budget - prefix_tokens

    pieces: list[_Piece] = []
    for element, start, path in zip(elements, offsets, paths, strict=True):
        tokens = counter.count(element.text)
        if tokens <= body_limit:
            pieces.append(_Piece(element, start, start + len(element.text), path, tokens))
            continue
        for span_start, span_end in _split_spans(element.text, body_limit, counter):
            piece_text = element.text[span_start:span_end]
            pieces.append(
                _Piece(
                    element, start + span_start, start + span_end, path, counter.count(piece_text)
                )
            )

    groups: list[list[_Piece]] = []
    current: list[_Piece] = []
    current_tokens = 0
    for piece in pieces:
        same_section = bool(current) and current[-1].heading_path == piece.heading_path
        fits = current_tokens + piece.tokens <= body_limit
        too_small = current_tokens < config.min_tokens
        if current and fits and (same_section or too_small):
            current.append(piece)
            current_tokens += piece.tokens
            continue
        if current:
            groups.append(current)
        current, current_tokens = [piece], piece.tokens
    if current:
        groups.append(current)

    chunks: list[Chunk] = []
    for group in groups:
        chunk = _make_chunk(len(chunks), title, group, full_text, counter, prefix_limit)
        if chunk.token_count > config.budget:
            # Token counts of pieces do not always add up exactly; split the group and retry.
            for piece in group:
                chunks.append(
                    _make_chunk(len(chunks), title, [piece], full_text, counter, prefix_limit)
                )
        else:
            chunks.append(chunk)
    return chunks


def _common_path(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    common = paths[0]
    for path in paths[1:]:
        length = 0
        while length < min(len(common), len(path)) and common[length] == path[length]:
            length += 1
        common = common[:length]
    return common


def _make_chunk(
    ordinal: int,
    title: str,
    group: list[_Piece],
    full_text: str,
    counter: TokenCounter,
    prefix_limit: int,
) -> Chunk:
    char_start, char_end = group[0].char_start, group[-1].char_end
    text = full_text[char_start:char_end]
    heading_path = _common_path([piece.heading_path for piece in group])
    search_text = _prefix(title, heading_path, counter, prefix_limit) + text
    pages = sorted({p.element.page_number for p in group if p.element.page_number is not None})
    return Chunk(
        ordinal=ordinal,
        text=text,
        search_text=search_text,
        token_count=counter.count(search_text),
        heading_path=heading_path,
        element_start=group[0].element.index,
        element_end=group[-1].element.index + 1,
        char_start=char_start,
        char_end=char_end,
        page_numbers=tuple(pages),
    )
