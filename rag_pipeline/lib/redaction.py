"""PII and secret redaction of parsed documents, and prompt-injection verdicts on chunks.

Redaction is its own versioned step between parsing and chunking:

    parsed elements -> detect (once per document version and detector) -> apply the source's
    policy -> redacted elements -> chunks

Detection runs over the document's whole text (elements joined by a blank line), so a detector
sees the context around a value (`aws_secret_access_key = ...` on the line before the key), and
each finding is then split back onto the elements it covers. Findings hold types and offsets only,
never the value, so they can be stored and audited; a change of policy re-applies the stored
findings without scanning the document again.

Policies (per source in `sources.yaml`, see `RedactionPolicy`):
- `pii: redact` (default) replaces a value with its type in brackets (`[EMAIL_ADDRESS]`);
  `mask` replaces every character with `*` (same length, so offsets do not move); `flag` keeps
  the text and only records the finding. Secrets (`SECRET_*`) are always redacted, whatever the
  policy: a masked key still gives its length and a flagged one is a leaked credential. Card
  numbers, IBANs and SSNs are never kept verbatim either: `flag` redacts them (it is meant for
  contact details such as a team's mailbox, not for what lets someone pay or impersonate).
- `pii_scope: structured` (default) detects emails, phones, cards, IBANs, SSNs, IPs and secrets
  (validated patterns, measured precision >= 0.95); `all` adds names, locations and other spaCy
  entities, whose precision is lower, so redacting them is a per-source decision.
- `injection: tag` (default) keeps a chunk that tries to instruct a model, marked with its score
  and reasons (answers leave it out by default); `quarantine` does not index it at all.

Everything here is pure: the detectors are imported from `rag_pipeline.lib.safety` and the
database work is in `rag_pipeline.lib.stores.redaction`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    # Only for hints: importing the parser (unstructured) or the detectors would make the
    # catalog, which reads the policy from here, slow to import.
    from rag_pipeline.lib.parsing import ParsedElement
    from rag_pipeline.lib.safety import Finding

# Bump when the way findings are applied changes (placeholders, splitting, title handling): it is
# part of the redaction key, so every document is redacted and chunked again.
REDACTION_STEP_VERSION = "redact-v1"
PII_ACTIONS = ("redact", "mask", "flag")
INJECTION_ACTIONS = ("tag", "quarantine")
PII_SCOPES = ("structured", "all")
SECRET_PREFIX = "SECRET_"
# Identifiers that let someone pay, bank or impersonate: `flag` never keeps them verbatim.
NEVER_VERBATIM = frozenset({"CREDIT_CARD", "IBAN_CODE", "US_SSN"})
# How elements are joined for detection (and nowhere else): a blank line, so no pattern matches
# across two elements unless it would across two paragraphs.
ELEMENT_SEPARATOR = "\n\n"
# Element index used for findings in the document title.
TITLE_ELEMENT = -1
MASK_CHAR = "*"

PiiAction = Literal["redact", "mask", "flag"]
InjectionAction = Literal["tag", "quarantine"]


class RedactionPolicyError(ValueError):
    """A source's redaction policy in `sources.yaml` is malformed."""


@dataclass(frozen=True)
class RedactionPolicy:
    """What one source does with what the detectors find (see the module docstring)."""

    pii: PiiAction = "redact"
    injection: InjectionAction = "tag"
    pii_scope: Literal["structured", "all"] = "structured"

    @classmethod
    def from_config(cls, value: Any, where: str) -> RedactionPolicy:
        """Parse the `redaction:` mapping of a source; None means the defaults."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise RedactionPolicyError(
                f"{where}: 'redaction' must be a mapping like "
                "{pii: redact, injection: tag} (got {value!r})"
            )
        unknown = sorted(set(value) - {"pii", "injection", "pii_scope"})
        if unknown:
            raise RedactionPolicyError(
                f"{where}: unknown key(s) {unknown} in 'redaction'; "
                "known: pii, injection, pii_scope"
            )
        choices = {"pii": PII_ACTIONS, "injection": INJECTION_ACTIONS, "pii_scope": PII_SCOPES}
        for key, allowed in choices.items():
            if key in value and value[key] not in allowed:
                raise RedactionPolicyError(
                    f"{where}: redaction.{key} must be one of {list(allowed)} (got {value[key]!r})"
                )
        return cls(
            pii=value.get("pii", "redact"),
            injection=value.get("injection", "tag"),
            pii_scope=value.get("pii_scope", "structured"),
        )

    def to_json(self) -> dict[str, str]:
        return {"pii": self.pii, "injection": self.injection, "pii_scope": self.pii_scope}

    @property
    def key(self) -> str:
        return f"pii={self.pii},scope={self.pii_scope},injection={self.injection}"


DEFAULT_REDACTION_POLICY = RedactionPolicy()


def engine_key(detector_version: str) -> str:
    """The part of the redaction key every source shares: the step and the detectors.

    Folded into the chunker key, so a new detector version re-chunks every source and builds a
    new index version (reusing every cached embedding whose text did not change).
    """
    return f"{REDACTION_STEP_VERSION}+{detector_version}"


def scan_key(detector_version: str, scope: str) -> str:
    """What a stored scan is valid for: the detectors and which types they looked for."""
    return f"{detector_version}:{scope}"


def redaction_key(detector_version: str, policy: RedactionPolicy) -> str:
    """Identifies one source's redacted documents and chunks: engine plus policy."""
    return f"{engine_key(detector_version)}+{policy.key}"


@dataclass(frozen=True)
class ElementFinding:
    """A finding placed in one element's text (`element` = TITLE_ELEMENT for the title)."""

    element: int
    start: int
    end: int
    type: str
    detector: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "element": self.element,
            "start": self.start,
            "end": self.end,
            "type": self.type,
            "detector": self.detector,
            "score": round(float(self.score), 4),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ElementFinding:
        return cls(
            int(data["element"]),
            int(data["start"]),
            int(data["end"]),
            str(data["type"]),
            str(data["detector"]),
            float(data["score"]),
        )


@dataclass(frozen=True)
class AppliedRedaction:
    """One audit record: where a value was and what was done, never the value.

    `start`/`end` are offsets in the parsed element's text; `new_start`/`new_end` where its
    replacement sits in the redacted element's text (what chunk offsets refer to).
    """

    element: int
    start: int
    end: int
    new_start: int
    new_end: int
    type: str
    detector: str
    score: float
    action: str


@dataclass(frozen=True)
class RedactedDocument:
    title: str
    elements: list[ParsedElement]
    applied: list[AppliedRedaction] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Findings per `TYPE:action`, for metadata."""
        counts: dict[str, int] = {}
        for item in self.applied:
            name = f"{item.type}:{item.action}"
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))


def join_elements(elements: Sequence[ParsedElement]) -> tuple[str, list[int]]:
    """The text detectors see, and where each element starts in it."""
    starts, position = [], 0
    for element in elements:
        starts.append(position)
        position += len(element.text) + len(ELEMENT_SEPARATOR)
    return ELEMENT_SEPARATOR.join(element.text for element in elements), starts


def split_findings(
    findings: Sequence[Finding], elements: Sequence[ParsedElement], starts: Sequence[int]
) -> list[ElementFinding]:
    """Place document-level findings onto elements; one spanning elements is split (each part
    is redacted in its element, and the separator between them belongs to no element)."""
    placed: list[ElementFinding] = []
    for finding in findings:
        if not 0 <= finding.start < finding.end:
            raise ValueError(f"finding with bad offsets {finding.start}..{finding.end}")
        for index, (element, element_start) in enumerate(zip(elements, starts, strict=True)):
            element_end = element_start + len(element.text)
            start, end = max(finding.start, element_start), min(finding.end, element_end)
            if start < end:
                placed.append(
                    ElementFinding(
                        index,
                        start - element_start,
                        end - element_start,
                        finding.type,
                        finding.detector,
                        finding.score,
                    )
                )
    return placed


def action_for(entity_type: str, policy: RedactionPolicy) -> str:
    """The action taken on one finding: secrets are redacted whatever the policy, and
    payment or national identifiers are redacted where the policy would keep them verbatim."""
    if entity_type.startswith(SECRET_PREFIX):
        return "redacted"
    if policy.pii == "flag" and entity_type in NEVER_VERBATIM:
        return "redacted"
    return {"redact": "redacted", "mask": "masked", "flag": "flagged"}[policy.pii]


def placeholder(entity_type: str) -> str:
    return f"[{entity_type}]"


def _apply_to_text(
    text: str, element: int, findings: Sequence[ElementFinding], policy: RedactionPolicy
) -> tuple[str, list[AppliedRedaction]]:
    """Rewrite one text; overlapping findings are merged first (the earliest type wins)."""
    ordered = sorted(findings, key=lambda f: (f.start, -f.end))
    merged: list[ElementFinding] = []
    for finding in ordered:
        if finding.end > len(text):
            raise ValueError(
                f"finding {finding.start}..{finding.end} beyond element {element} "
                f"of {len(text)} characters: findings do not belong to this text"
            )
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            # A secret inside another finding makes the merged span a secret (always redacted).
            kind = finding.type if finding.type.startswith(SECRET_PREFIX) else last.type
            merged[-1] = replace(last, end=max(last.end, finding.end), type=kind)
            continue
        merged.append(finding)
    pieces: list[str] = []
    applied: list[AppliedRedaction] = []
    cursor, length = 0, 0
    for finding in merged:
        pieces.append(text[cursor : finding.start])
        length += finding.start - cursor
        action = action_for(finding.type, policy)
        original = text[finding.start : finding.end]
        if action == "redacted":
            replacement = placeholder(finding.type)
        elif action == "masked":
            replacement = "".join(char if char.isspace() else MASK_CHAR for char in original)
        else:
            replacement = original
        pieces.append(replacement)
        applied.append(
            AppliedRedaction(
                element,
                finding.start,
                finding.end,
                length,
                length + len(replacement),
                finding.type,
                finding.detector,
                finding.score,
                action,
            )
        )
        length += len(replacement)
        cursor = finding.end
    pieces.append(text[cursor:])
    return "".join(pieces), applied


def apply_policy(
    title: str,
    elements: Sequence[ParsedElement],
    findings: Sequence[ElementFinding],
    policy: RedactionPolicy,
) -> RedactedDocument:
    """The document with every finding handled per `policy`; element indexes, types, depths and
    pages are kept, so chunk element ranges still point at the parsed elements."""
    by_element: dict[int, list[ElementFinding]] = {}
    for finding in findings:
        if finding.element != TITLE_ELEMENT and not 0 <= finding.element < len(elements):
            raise ValueError(f"finding for element {finding.element} of {len(elements)}")
        by_element.setdefault(finding.element, []).append(finding)
    title_findings = by_element.get(TITLE_ELEMENT, [])
    new_title, applied = _apply_to_text(title, TITLE_ELEMENT, title_findings, policy)
    redacted: list[ParsedElement] = []
    for position, element in enumerate(elements):
        text, done = _apply_to_text(element.text, position, by_element.get(position, []), policy)
        applied += done
        redacted.append(replace(element, text=text))
    return RedactedDocument(new_title, redacted, applied)


Detector = Callable[[str], Sequence["Finding"]]


def scan_document(
    title: str, elements: Sequence[ParsedElement], detect: Detector
) -> list[ElementFinding]:
    """Run `detect` over the title and the joined element text; findings per element."""
    text, starts = join_elements(elements)
    found = split_findings(detect(text), elements, starts)
    title_findings = [
        ElementFinding(TITLE_ELEMENT, f.start, f.end, f.type, f.detector, f.score)
        for f in detect(title)
    ]
    return title_findings + found


def sensitive_detector(scope: str) -> Detector:
    """`detect_sensitive` limited to the scope's types (structured: no spaCy model needed)."""
    from rag_pipeline.lib.safety import STRUCTURED_TYPES, detect_sensitive

    types = STRUCTURED_TYPES if scope == "structured" else None

    def detect(text: str) -> Sequence[Finding]:
        return detect_sensitive(text, types=types, include_examples=True)

    return detect


def redact_text(text: str) -> str:
    """`text` with every structured finding replaced by its placeholder.

    For the few places that show text outside the redaction step (the parsing asset's preview),
    so that Dagster's event log never holds a raw value.
    """
    if not text:
        return text
    from rag_pipeline.lib.safety import STRUCTURED_TYPES, detect_sensitive

    findings = [
        ElementFinding(0, f.start, f.end, f.type, f.detector, f.score)
        for f in detect_sensitive(text, types=STRUCTURED_TYPES, include_examples=True)
    ]
    redacted, _ = _apply_to_text(text, 0, findings, RedactionPolicy())
    return redacted


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def detector_version() -> str:
    """The detectors' version (`SAFETY_DETECTOR_VERSION`), imported only when needed."""
    from rag_pipeline.lib.safety import SAFETY_DETECTOR_VERSION

    return str(SAFETY_DETECTOR_VERSION)


def redacting_chunker_key(base_chunker_key: str) -> str:
    """The chunker key with the redaction engine folded in: chunks are cut from redacted text,
    so a new detector or redaction step version is a new chunker for the index key."""
    return f"{base_chunker_key}+{engine_key(detector_version())}"


@dataclass(frozen=True)
class InjectionDecision:
    """What the source's policy does with one chunk: keep it (maybe tagged) or leave it out."""

    injection: bool
    score: float
    reasons: tuple[str, ...]
    action: str  # "clean", "tagged" or "quarantined"


def decide_injection(
    injection: bool, score: float, reasons: Sequence[str], policy: RedactionPolicy
) -> InjectionDecision:
    if not injection:
        return InjectionDecision(False, score, tuple(reasons), "clean")
    action = "quarantined" if policy.injection == "quarantine" else "tagged"
    return InjectionDecision(True, score, tuple(reasons), action)
