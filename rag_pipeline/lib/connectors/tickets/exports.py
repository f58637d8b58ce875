"""Which files of a source are exports, and which format each is in when `format` is not set."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import ijson

from rag_pipeline.lib.catalog import ConfigurationError
from rag_pipeline.lib.connectors.base import ScanState
from rag_pipeline.lib.connectors.tickets.options import FORMATS
from rag_pipeline.lib.connectors.tickets.readers import skip_bom

JSON_SUFFIXES = frozenset({".json", ".jsonl", ".ndjson"})
CSV_SUFFIXES = frozenset({".csv"})
# How many parse events format inference may read before giving up (the first ticket).
_INFERENCE_EVENT_LIMIT = 200_000


def export_files(path: Path) -> list[Path]:
    """The export file, or the candidate files of a folder in name order (hidden ones skipped)."""
    if path.is_file():
        return [path]
    try:
        with os.scandir(path) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot list the export folder: {error}") from error
    return [
        Path(entry.path)
        for entry in entries
        if not entry.name.startswith((".", "_")) and entry.is_file()
    ]


def _suffix_fits(path: Path, export_format: str) -> bool:
    suffixes = CSV_SUFFIXES if export_format.endswith("_csv") else JSON_SUFFIXES
    return path.suffix.lower() in suffixes


def infer_format(path: Path) -> str:
    """One export file's format from its name and first bytes; `ConfigurationError` if unsure."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        header = _csv_header(path)
        if "Issue key" in header:
            return "jira_csv"
        if "Id" in header and "Subject" in header:
            return "zendesk_csv"
        raise ConfigurationError(
            f"{path}: cannot tell the CSV export's format from its header (neither Jira's "
            "'Issue key' nor Zendesk's 'Id' and 'Subject' columns); set 'format'"
        )
    if suffix in (".jsonl", ".ndjson"):
        return "zendesk_json"
    if suffix == ".json":
        return _infer_json_format(path)
    raise ConfigurationError(
        f"{path}: cannot tell the format of a {suffix or 'suffix-less'} file; set 'format' "
        f"(one of {list(FORMATS)})"
    )


def _infer_json_format(path: Path) -> str:
    """Jira if the root has `issues` or the first ticket `key` and `fields`; Zendesk if `subject`.

    Zendesk tickets have a `fields` list too, so the first ticket's keys are read in full
    before deciding.
    """
    keys: set[str] = set()
    try:
        with path.open("rb") as handle:
            skip_bom(handle)
            events = ijson.parse(handle, multiple_values=True)
            for count, (prefix, event, value) in enumerate(events):
                if event == "map_key" and prefix in ("", "item"):
                    if prefix == "" and value == "issues":
                        return "jira_json"
                    keys.add(value)
                if (
                    event == "end_map" and prefix in ("", "item")
                ) or count > _INFERENCE_EVENT_LIMIT:
                    break
    except ijson.JSONError as error:
        raise ConfigurationError(f"{path}: not valid JSON: {error}") from error
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot be read: {error}") from error
    if "subject" in keys:
        return "zendesk_json"
    if {"key", "fields"} <= keys:
        return "jira_json"
    raise ConfigurationError(
        f"{path}: cannot tell whether this is a Jira or a Zendesk export (no 'issues', "
        "'key' and 'fields', or 'subject' key in its first ticket); set 'format'"
    )


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle, strict=True), [])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigurationError(f"{path}: not a readable CSV file: {error}") from error


def is_export_candidate(path: Path, export_format: str | None, state: ScanState) -> bool:
    """Whether a file of an export folder is read; the others are named in a warning."""
    if export_format is not None and not _suffix_fits(path, export_format):
        state.warnings.append(f"{path.name} skipped: not a {export_format} file")
        return False
    if export_format is None and path.suffix.lower() not in JSON_SUFFIXES | CSV_SUFFIXES:
        state.warnings.append(f"{path.name} skipped: not a JSON or CSV export")
        return False
    return True
