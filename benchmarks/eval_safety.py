# ruff: noqa: T201
"""Safety detectors on the labelled development sets: `make eval` (after eval.py), or alone:

    .venv/bin/python benchmarks/eval_safety.py --out reports

Scores `rag_pipeline.lib.safety` (PII/secret spans and prompt-injection verdicts) on
`../shared/safety/pii_dev.jsonl` and `injection_dev.jsonl` per source family and type (scoring
rules in `rag_pipeline/lib/safety/evaluation.py`), and writes `<out>/safety.json` (nested) and
`<out>/safety.md`. With `--merge-into reports/eval.json` it also adds the figures as flat
`safety.*` keys to that report and appends the markdown to the `.md` next to it.
Exit status 1 when an acceptance target is missed (`--no-fail` to report only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import rag_pipeline  # noqa: F401  (offline environment before anything else is imported)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "safety"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("EVAL_SAFETY_DIR") or DEFAULT_DATA),
        help="folder with pii_dev.jsonl and injection_dev.jsonl (default ../shared/safety)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument(
        "--merge-into",
        type=Path,
        help="an eval.json to add flat `safety.*` keys to (its .md gets the markdown appended)",
    )
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a target fails")
    return parser.parse_args(argv)


def merge_into(report: dict[str, Any], markdown: str, eval_json: Path) -> None:
    """Add `safety.*` keys to an existing eval.json and append the section to its eval.md."""
    from rag_pipeline.lib.safety.evaluation import flatten

    existing: dict[str, Any] = {}
    if eval_json.is_file():
        existing = json.loads(eval_json.read_text(encoding="utf-8"))
    existing = {key: value for key, value in existing.items() if not key.startswith("safety.")}
    existing.update(flatten("safety", {k: v for k, v in report.items() if k != "errors"}))
    eval_json.write_text(json.dumps(existing, indent=2) + "\n", encoding="utf-8")
    eval_md = eval_json.with_suffix(".md")
    previous = eval_md.read_text(encoding="utf-8") if eval_md.is_file() else ""
    marker = "\n<!-- safety -->\n"
    previous = previous.split(marker, 1)[0].rstrip("\n")
    eval_md.write_text(previous + "\n" + marker + "\n" + markdown, encoding="utf-8")


def write_reports(data: Path, out: Path, eval_json: Path | None = None) -> dict[str, Any]:
    """Evaluate, write `<out>/safety.{json,md}` and optionally merge into `eval_json`.
    Raises `SafetyDataError` when the data is missing or malformed."""
    from rag_pipeline.lib.safety.evaluation import evaluate, render_markdown

    report = evaluate(data)
    markdown = render_markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "safety.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "safety.md").write_text(markdown, encoding="utf-8")
    if eval_json is not None:
        merge_into(report, markdown, eval_json)
    report["markdown"] = markdown
    return report


def main(argv: list[str] | None = None) -> int:
    from rag_pipeline.lib.safety.evaluation import SafetyDataError

    args = parse_args(argv)
    try:
        report = write_reports(args.data, args.out, args.merge_into)
    except SafetyDataError as error:
        print(f"eval_safety: error: {error}", file=sys.stderr)
        return 2
    print(report["markdown"])
    passed = report["pii"]["acceptance"]["passed"] and report["injection"]["acceptance"]["passed"]
    if not passed:
        print("eval_safety: an acceptance target was missed", file=sys.stderr)
    return 0 if passed or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
