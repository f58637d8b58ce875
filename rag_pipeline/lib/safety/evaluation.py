"""Scoring the safety detectors on labelled JSON Lines sets, per source family and per type.

Sources label differently (../shared/safety/README.md), so every figure is per source family,
derived from the row's `source` prefix, with that family's label scope:

- `presidio-research` rows annotate every Presidio type: every prediction is scored.
- `CredSweeper` rows annotate only credentials: only `SECRET_*` predictions are scored there.
- `written` rows contain nothing sensitive: every prediction is a false positive.

**Span matching rule.** A predicted span is a true positive when it overlaps (at least one
character) a labelled span of the same *type family*; a labelled span is found when some
predicted span of its family overlaps it. Families: each structured PII type is its own family;
every `SECRET_*` type is one family `SECRET` (scanners disagree on naming: one tool's
`SECRET_KEY` is another's `SECRET_API_KEY`, and what matters for redaction is that the
credential is caught); `LOCATION` and `ADDRESS` are one family (`LOCATION`). Overlap rather than
exact offsets because labels disagree on boundaries (a quote included, a key cut at 60
characters) while redaction of the overlapping span removes the value either way. Precision
counts predicted spans, recall counts labelled spans, per type: recall by the labelled type,
precision by the predicted type.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_pipeline.lib.safety.findings import STRUCTURED_PII_TYPES, Finding, InjectionVerdict

SOURCE_FAMILIES = ("presidio-research", "CredSweeper", "written")
# Structured = what the acceptance targets cover: each structured PII type plus all secrets.
STRUCTURED_FAMILIES: tuple[str, ...] = (*sorted(STRUCTURED_PII_TYPES), "SECRET")
NAME_LOCATION_FAMILIES: tuple[str, ...] = ("PERSON", "LOCATION", "ORGANIZATION")
PII_TARGET = 0.95
INJECTION_RECALL_TARGET = 0.8
INJECTION_FPR_TARGET = 0.05


class SafetyDataError(ValueError):
    """A labelled set that cannot be scored (missing file, malformed row)."""


# Repository of a row's `source` -> the short family name used in report keys.
FAMILY_ALIASES: dict[str, str] = {
    "microsoft/presidio-research": "presidio-research",
    "Samsung/CredSweeper": "CredSweeper",
    "deepset/prompt-injections": "deepset",
    "WithSecureLabs/spikee": "spikee",
}


def source_family(source: str) -> str:
    """The family of a row from its `source` prefix: `microsoft/presidio-research:...` ->
    `presidio-research`, `Samsung/CredSweeper:...` -> `CredSweeper`, `written...` -> `written`,
    `deepset/prompt-injections:...` -> `deepset`, `WithSecureLabs/spikee:...` -> `spikee`;
    another `owner/repo:...` -> `repo`."""
    head = source.split(":", 1)[0].split("@", 1)[0].strip()
    if head.startswith("written"):
        return "written"
    if head in FAMILY_ALIASES:
        return FAMILY_ALIASES[head]
    if "/" in head:
        return head.split("/", 1)[1]
    return head or "unknown"


def type_family(type_: str) -> str:
    if type_.startswith("SECRET_"):
        return "SECRET"
    if type_ == "ADDRESS":
        return "LOCATION"
    return type_


def in_scope(family: str, type_: str) -> bool:
    """Whether a source family annotates this type (so a prediction of it can be scored)."""
    if family == "CredSweeper":
        return type_.startswith("SECRET_")
    return True


@dataclass
class Counts:
    tp_pred: int = 0  # predicted spans that matched
    predicted: int = 0
    tp_gold: int = 0  # labelled spans that were found
    labelled: int = 0

    def add(self, other: Counts) -> None:
        self.tp_pred += other.tp_pred
        self.predicted += other.predicted
        self.tp_gold += other.tp_gold
        self.labelled += other.labelled

    def as_dict(self) -> dict[str, Any]:
        precision = self.tp_pred / self.predicted if self.predicted else None
        recall = self.tp_gold / self.labelled if self.labelled else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else None
        )
        return {
            "precision": _round(precision),
            "recall": _round(recall),
            "f1": _round(f1),
            "predicted": self.predicted,
            "false_positives": self.predicted - self.tp_pred,
            "labelled": self.labelled,
            "false_negatives": self.labelled - self.tp_gold,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@dataclass
class PiiErrors:
    """Examples of misses and false alarms, offsets and types only (for the report)."""

    missed: list[dict[str, Any]] = field(default_factory=list)
    false_alarms: list[dict[str, Any]] = field(default_factory=list)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise SafetyDataError(f"{path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise SafetyDataError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise SafetyDataError(f"{path}:{number}: no string field 'text'")
        rows.append(row)
    return rows


def score_pii(
    rows: Iterable[dict[str, Any]],
    detect: Callable[[str], list[Finding]],
) -> tuple[dict[str, Any], PiiErrors]:
    """Per source family: per labelled/predicted type, the structured aggregate, names and
    locations; plus `structured` over every family (each family in its own scope)."""
    by_type: dict[str, dict[str, Counts]] = defaultdict(lambda: defaultdict(Counts))
    by_family: dict[str, dict[str, Counts]] = defaultdict(lambda: defaultdict(Counts))
    rows_per_family: dict[str, int] = defaultdict(int)
    rows_with_false_positive: dict[str, int] = defaultdict(int)
    errors = PiiErrors()
    for index, row in enumerate(rows):
        family = source_family(str(row.get("source", "")))
        rows_per_family[family] += 1
        text = row["text"]
        gold = [
            (entity["type"], int(entity["start"]), int(entity["end"]))
            for entity in row.get("entities", [])
        ]
        predicted = [
            (finding.type, finding.start, finding.end)
            for finding in detect(text)
            if in_scope(family, finding.type)
        ]
        false_positive_here = False
        for type_, start, end in predicted:
            matched = any(
                type_family(type_) == type_family(g_type) and _overlaps((start, end), (gs, ge))
                for g_type, gs, ge in gold
            )
            for counts in (by_type[family][type_], by_family[family][type_family(type_)]):
                counts.predicted += 1
                counts.tp_pred += matched
            if not matched:
                false_positive_here = True
                errors.false_alarms.append(
                    {"row": index, "family": family, "type": type_, "start": start, "end": end}
                )
        for g_type, gs, ge in gold:
            found = any(
                type_family(type_) == type_family(g_type) and _overlaps((start, end), (gs, ge))
                for type_, start, end in predicted
            )
            for counts in (by_type[family][g_type], by_family[family][type_family(g_type)]):
                counts.labelled += 1
                counts.tp_gold += found
            if not found:
                errors.missed.append(
                    {"row": index, "family": family, "type": g_type, "start": gs, "end": ge}
                )
        rows_with_false_positive[family] += false_positive_here

    report: dict[str, Any] = {}
    overall_structured = Counts()
    for family in sorted(rows_per_family):
        section: dict[str, Any] = {
            type_: counts.as_dict() for type_, counts in sorted(by_type[family].items())
        }
        structured = Counts()
        for name in STRUCTURED_FAMILIES:
            if name in by_family[family]:
                structured.add(by_family[family][name])
        overall_structured.add(structured)
        section["families"] = {
            name: counts.as_dict() for name, counts in sorted(by_family[family].items())
        }
        section["structured"] = structured.as_dict()
        section["rows"] = rows_per_family[family]
        section["rows_with_false_positive"] = rows_with_false_positive[family]
        report[family] = section
    report["structured"] = overall_structured.as_dict()
    return report, errors


def pii_acceptance(report: dict[str, Any]) -> dict[str, Any]:
    """Each structured family of each source against recall >= 0.95 at precision >= 0.95;
    for `written` (nothing to find) the target is zero structured false positives."""
    checks: dict[str, bool] = {}
    for family, section in report.items():
        if family == "structured" or not isinstance(section, dict):
            continue
        if family == "written":
            # Structured types only: the targets are for them; NER false alarms on these rows
            # (a city, a date) are reported with the other NER figures.
            checks["written.no_false_positives"] = section["structured"]["false_positives"] == 0
            continue
        for name, values in section.get("families", {}).items():
            if name not in STRUCTURED_FAMILIES or not values["labelled"]:
                continue
            checks[f"{family}.{name}"] = (
                values["recall"] is not None
                and values["recall"] >= PII_TARGET
                and (values["precision"] or 0.0) >= PII_TARGET
            )
    return {"checks": checks, "passed": all(checks.values())}


def score_injection(
    rows: Iterable[dict[str, Any]],
    detect: Callable[[str], InjectionVerdict],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Recall on injections and false-positive rate on benign rows, per source family and in
    total; the errors list (row index, label, score, reasons) is for the report."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    errors: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        label = row.get("label")
        if label not in ("injection", "benign"):
            raise SafetyDataError(f"row {index + 1}: label must be injection or benign: {label!r}")
        family = source_family(str(row.get("source", "")))
        verdict = detect(row["text"])
        for key in (family, "all"):
            counts[key][label] += 1
            counts[key][f"{label}_flagged"] += verdict.injection
        if verdict.injection != (label == "injection"):
            errors.append(
                {
                    "row": index,
                    "family": family,
                    "label": label,
                    "score": verdict.score,
                    "reasons": list(verdict.reasons),
                }
            )
    report: dict[str, Any] = {}
    for key, values in sorted(counts.items()):
        injections, benign = values["injection"], values["benign"]
        section = {
            "injections": injections,
            "benign": benign,
            "recall": _round(values["injection_flagged"] / injections) if injections else None,
            "benign_fpr": _round(values["benign_flagged"] / benign) if benign else None,
        }
        if key == "all":
            report.update(section)
        else:
            report[key] = section
    report["acceptance"] = {
        "recall_target": INJECTION_RECALL_TARGET,
        "benign_fpr_target": INJECTION_FPR_TARGET,
        "passed": (report.get("recall") or 0.0) >= INJECTION_RECALL_TARGET
        and (report.get("benign_fpr") or 0.0) <= INJECTION_FPR_TARGET,
    }
    return report, errors


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested dict -> flat dotted keys (`safety.pii.presidio-research.CREDIT_CARD.recall`),
    the shape of `reports/eval.json`."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return flat
    return {prefix: value}


DEFAULT_DATA_DIR_NAME = "safety"
PII_FILE = "pii_dev.jsonl"
INJECTION_FILE = "injection_dev.jsonl"
_EXAMPLES_IN_REPORT = 25


def evaluate(data_dir: Path) -> dict[str, Any]:
    """Both detectors on `<data_dir>/pii_dev.jsonl` and `<data_dir>/injection_dev.jsonl`."""
    import time

    from rag_pipeline.lib.safety import SAFETY_DETECTOR_VERSION, detect_injection
    from rag_pipeline.lib.safety.pii import detect_sensitive

    pii_rows = read_jsonl(data_dir / PII_FILE)
    injection_rows = read_jsonl(data_dir / INJECTION_FILE)
    started = time.perf_counter()
    pii, pii_errors = score_pii(pii_rows, detect_sensitive)
    pii_seconds = time.perf_counter() - started
    started = time.perf_counter()
    injection, injection_errors = score_injection(injection_rows, detect_injection)
    injection_seconds = time.perf_counter() - started
    pii["acceptance"] = pii_acceptance(pii)
    return {
        "detector_version": SAFETY_DETECTOR_VERSION,
        "data": {
            "pii": str(data_dir / PII_FILE),
            "pii_rows": len(pii_rows),
            "injection": str(data_dir / INJECTION_FILE),
            "injection_rows": len(injection_rows),
        },
        "pii": pii,
        "injection": injection,
        "timing": {
            "pii_s": round(pii_seconds, 2),
            "injection_s": round(injection_seconds, 2),
        },
        "errors": {
            "pii_missed": pii_errors.missed[:_EXAMPLES_IN_REPORT],
            "pii_false_alarms": pii_errors.false_alarms[:_EXAMPLES_IN_REPORT],
            "injection": injection_errors[:_EXAMPLES_IN_REPORT],
        },
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The `safety` section of the evaluation report."""
    pii = report["pii"]
    injection = report["injection"]
    lines = [
        "# Safety detectors: PII/secrets and prompt injection (development sets)",
        "",
        f"Detector version `{report['detector_version']}`; {report['data']['pii_rows']} PII rows "
        f"and {report['data']['injection_rows']} injection rows from `../shared/safety` "
        f"(scored in {report['timing']['pii_s']} s and {report['timing']['injection_s']} s).",
        "",
        "## PII and secrets, per source and type",
        "",
        "Span rule: a predicted span counts when it overlaps a labelled span of the same type "
        "family (all `SECRET_*` are one family; `ADDRESS` and `LOCATION` are one). Each source "
        "in its label scope: CredSweeper rows score only `SECRET_*` predictions; `written` rows "
        "contain nothing, so every prediction there is a false positive. Recall is by labelled "
        "type, precision by predicted type. Targets for structured types: recall >= 0.95 at "
        "precision >= 0.95.",
        "",
        "| source | type | precision | recall | F1 | predicted | labelled | target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    checks = pii["acceptance"]["checks"]
    for family, section in pii.items():
        if family in ("structured", "acceptance"):
            continue
        if family == "written":
            verdict = "pass" if checks.get("written.no_false_positives") else "FAIL"
            lines.append(
                f"| written | structured | - | - | - | {section['structured']['predicted']} | 0 "
                f"| {verdict} |"
            )
            for name, values in section["families"].items():
                if name not in STRUCTURED_FAMILIES:
                    lines.append(f"| written | {name} | - | - | - | {values['predicted']} | 0 | |")
            lines.append(
                f"| written | (rows with any false positive) | - | - | - "
                f"| {section['rows_with_false_positive']} of {section['rows']} rows | 0 | |"
            )
            continue
        for name, values in section["families"].items():
            target = checks.get(f"{family}.{name}")
            mark = "" if target is None else ("pass" if target else "FAIL")
            lines.append(
                f"| {family} | **{name}** | {_fmt(values['precision'])} | "
                f"{_fmt(values['recall'])} | {_fmt(values['f1'])} | {values['predicted']} | "
                f"{values['labelled']} | {mark} |"
            )
        if family == "presidio-research":
            for type_ in ("LOCATION", "ADDRESS"):
                values = section.get(type_)
                if values and values["labelled"]:
                    lines.append(
                        f"| {family} | {type_} (labelled, recall only) | - | "
                        f"{_fmt(values['recall'])} | - | - | {values['labelled']} | |"
                    )
        if family == "CredSweeper":
            for type_, values in section.items():
                if type_.startswith("SECRET_") and values["labelled"]:
                    lines.append(
                        f"| {family} | {type_} (recall only) | - | {_fmt(values['recall'])} | - "
                        f"| - | {values['labelled']} | |"
                    )
    structured = pii["structured"]
    lines += [
        "",
        f"All structured types over every source (each in its scope): precision "
        f"{_fmt(structured['precision'])}, recall {_fmt(structured['recall'])} "
        f"({structured['labelled']} labelled spans, {structured['predicted']} predicted). "
        f"Acceptance: **{'pass' if pii['acceptance']['passed'] else 'FAIL'}**.",
        "",
        "## Prompt injection",
        "",
        "| source | injections | recall | benign | false-positive rate |",
        "|---|---:|---:|---:|---:|",
    ]
    for family, section in injection.items():
        if isinstance(section, dict) and "recall" in section:
            lines.append(
                f"| {family} | {section['injections']} | {_fmt(section['recall'])} | "
                f"{section['benign']} | {_fmt(section['benign_fpr'])} |"
            )
    lines += [
        f"| **all** | {injection['injections']} | {_fmt(injection['recall'])} | "
        f"{injection['benign']} | {_fmt(injection['benign_fpr'])} |",
        "",
        f"Targets: recall >= {INJECTION_RECALL_TARGET}, false positives <= "
        f"{INJECTION_FPR_TARGET:.0%} of benign rows: "
        f"**{'pass' if injection['acceptance']['passed'] else 'FAIL'}**. These are development "
        "sets (mostly short direct prompts, one indirect base document): held-out sets from "
        "other sources are expected to score lower.",
        "",
    ]
    return "\n".join(lines)
