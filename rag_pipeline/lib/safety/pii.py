"""`detect_sensitive`: PII and secrets in one pass, as non-overlapping spans.

Order of trust when spans overlap: secrets (a credential is never partly redacted), then the
validated structured types, then the statistical NER model; within a kind the higher score, then
the longer span wins.
"""

from __future__ import annotations

from rag_pipeline.lib.safety.findings import (
    ALL_TYPES,
    NER_TYPES,
    SECRET_TYPES,
    STRUCTURED_PII_TYPES,
    Finding,
)
from rag_pipeline.lib.safety.ner import find_entities
from rag_pipeline.lib.safety.patterns import find_structured_pii
from rag_pipeline.lib.safety.secrets import find_secrets


def _rank(finding: Finding) -> tuple[int, float, int]:
    kind = 0 if finding.type in SECRET_TYPES else 1 if finding.type in STRUCTURED_PII_TYPES else 2
    return (kind, -finding.score, -(finding.end - finding.start))


def resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Keep the most trusted finding of every overlapping group; sorted by start."""
    kept: list[Finding] = []
    for finding in sorted(findings, key=_rank):
        if finding.end <= finding.start:
            continue
        if all(finding.end <= other.start or finding.start >= other.end for other in kept):
            kept.append(finding)
    return sorted(kept, key=lambda finding: (finding.start, finding.end))


def detect_sensitive(
    text: str, types: frozenset[str] | None = None, *, include_examples: bool = False
) -> list[Finding]:
    """PII + secrets; non-overlapping, sorted by start; types=None means every type.

    Asking only for structured types (`STRUCTURED_TYPES`) never loads spaCy.
    `include_examples` also reports credentials that say they are examples (redaction wants
    them removed; a scan, like a secret scanner, does not report them).
    """
    if not isinstance(text, str):
        raise TypeError(f"detect_sensitive needs a str, got {type(text).__name__}")
    wanted = ALL_TYPES if types is None else frozenset(types)
    unknown = wanted - ALL_TYPES
    if unknown:
        raise ValueError(f"unknown PII/secret types: {sorted(unknown)}")
    # Secrets and structured PII are cheap and always computed, so that the overlap decision
    # does not depend on `types`: a key shaped like a phone number never comes back as a phone.
    candidates: list[Finding] = [
        *find_secrets(text, include_examples=include_examples),
        *find_structured_pii(text),
    ]
    if wanted & NER_TYPES:
        candidates.extend(find_entities(text, wanted & NER_TYPES))
    return [finding for finding in resolve_overlaps(candidates) if finding.type in wanted]
