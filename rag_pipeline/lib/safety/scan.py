"""`rag-pipeline safety scan FILE.jsonl`: both detectors over a JSON Lines file.

One output line per input line, in order:
`{"pii": [{"type", "start", "end"}], "injection": bool, "injection_score": float}` -- offsets,
never the values, so the output can be shared without leaking what it points at. Blank lines are
input lines too: they get no output, and the error messages count them, so a reported line number
is the line an editor shows.

Malformed input fails the whole scan: a line that is not JSON, not an object, or has no string
`text` raises `ScanInputError` naming the line (the CLI exits 2), before anything is written. A
scan that silently skipped or half-wrote a line would look complete and hide the gap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from rag_pipeline.lib.safety.findings import Finding
from rag_pipeline.lib.safety.injection import detect_injection
from rag_pipeline.lib.safety.pii import detect_sensitive


class ScanInputError(ValueError):
    """A scan input line that cannot be scanned (names the file and the line)."""


def read_texts(lines: Iterable[str], name: str = "input") -> list[str]:
    """Every line's `text`, validated before any scanning (blank lines skipped)."""
    texts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ScanInputError(f"{name}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ScanInputError(
                f"{name}:{number}: expected a JSON object, got {type(row).__name__}"
            )
        text = row.get("text")
        if not isinstance(text, str):
            found = "missing" if "text" not in row else type(text).__name__
            raise ScanInputError(f"{name}:{number}: field 'text' must be a string ({found})")
        texts.append(text)
    return texts


def scan_text(text: str) -> dict[str, Any]:
    """One output record for one text."""
    findings: list[Finding] = detect_sensitive(text)
    verdict = detect_injection(text)
    return {
        "pii": [{"type": f.type, "start": f.start, "end": f.end} for f in findings],
        "injection": verdict.injection,
        "injection_score": verdict.score,
    }


def scan_lines(texts: Iterable[str]) -> Iterator[dict[str, Any]]:
    for text in texts:
        yield scan_text(text)


def load_texts(path: Path) -> list[str]:
    """The validated texts of a JSON Lines file."""
    if not path.is_file():
        raise ScanInputError(f"{path}: no such file")
    with path.open(encoding="utf-8") as handle:
        try:
            return read_texts(handle, str(path))
        except UnicodeDecodeError as error:
            raise ScanInputError(f"{path}: not UTF-8 ({error.reason})") from None


def run_scan(path: Path, output: Path | None, stdout: IO[str]) -> int:
    """Scan `path` to `output` (written to a temporary file, then renamed: never a partial
    result under the final name) or to `stdout`; returns the number of records."""
    texts = load_texts(path)
    if output is None:
        for record in scan_lines(texts):
            stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return len(texts)
    partial = output.with_name(output.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for record in scan_lines(texts):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(output)
    return len(texts)
