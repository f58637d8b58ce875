"""Streaming readers of export files: raw items (records and their positions), not tickets.

Streaming: JSON arrays are read event by event (ijson), JSON lines line by line and CSV row by
row, so memory does not grow with the size of the export (only the set of ticket keys seen,
for duplicate detection, does). A malformed ticket is quarantined alone; an export that is not
valid JSON/CSV as a whole, or is truncated, raises `ConfigurationError` naming the file and the
position, so a broken export never tombstones the tickets after the break.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ijson

from rag_pipeline.lib.catalog import ConfigurationError

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class RawItem:
    """One item of an export file and where it is (`line`, `index` or `row` and its number)."""

    record: Any
    position_kind: str
    position: int


def _read_json_lines(path: Path, handle: IO[bytes]) -> Iterator[RawItem]:
    for line_number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            truncated = not line.endswith(b"\n")
            raise ConfigurationError(
                f"{path}: line {line_number} is not valid JSON"
                f"{' (the file looks truncated)' if truncated else ''}: {error} (a Zendesk "
                "JSON export has one ticket per line)"
            ) from error
        yield RawItem(record, "line", line_number)


def _read_json_array(path: Path, handle: IO[bytes], root_key: str | None) -> Iterator[RawItem]:
    """The elements of the top-level array, or of the array under `root_key`, one at a time.

    Built from parse events so that the array's presence is checked too: an export without
    it must fail rather than look like an export in which every ticket was deleted.
    """
    item_prefix = f"{root_key}.item" if root_key else "item"
    found_array = False
    index = 0
    builder: ijson.ObjectBuilder | None = None
    depth = 0
    try:
        for prefix, event, value in ijson.parse(handle, use_float=True):
            if builder is not None:
                builder.event(event, value)
                if event in ("start_map", "start_array"):
                    depth += 1
                elif event in ("end_map", "end_array"):
                    depth -= 1
                if depth == 0:
                    yield RawItem(builder.value, "index", index)
                    index += 1
                    builder = None
                continue
            if prefix == "" and event in ("start_map", "start_array") and not found_array:
                root_is_map = event == "start_map"
                if root_is_map != (root_key is not None):
                    raise ConfigurationError(
                        f"{path}: expected "
                        + (f"an object with an '{root_key}' array" if root_key else "an array")
                        + " at the top level"
                    )
                found_array = not root_is_map
                continue
            if root_key and prefix == root_key and event == "start_array":
                found_array = True
                continue
            if prefix == item_prefix and found_array:
                builder = ijson.ObjectBuilder()
                builder.event(event, value)
                if event in ("start_map", "start_array"):
                    depth = 1
                else:  # a scalar where a ticket should be: complete at once
                    yield RawItem(builder.value, "index", index)
                    index += 1
                    builder = None
    except ijson.JSONError as error:
        raise ConfigurationError(
            f"{path}: not valid JSON after {index} complete ticket(s), near byte "
            f"{handle.tell()} (truncated or corrupt export): {error}"
        ) from error
    if not found_array:
        raise ConfigurationError(
            f"{path}: no '{root_key}' array: not a Jira search-results export"
            if root_key
            else f"{path}: empty file"
        )


def _read_json(path: Path, export_format: str) -> Iterator[RawItem]:
    with path.open("rb") as handle:
        first = _first_non_space(handle)
        if first == b"":
            raise ConfigurationError(f"{path}: the export file is empty")
        if export_format == "jira_json":
            yield from _read_json_array(path, handle, None if first == b"[" else "issues")
        elif first == b"[":
            yield from _read_json_array(path, handle, None)
        else:
            yield from _read_json_lines(path, handle)


def _first_non_space(handle: IO[bytes]) -> bytes:
    """The first significant byte of a file; leaves the handle after a UTF-8 BOM, if any."""
    head = handle.read(4096)
    while head and not head.lstrip().lstrip(_BOM).lstrip():
        head = handle.read(4096)
    skip_bom(handle)
    return head.lstrip().lstrip(_BOM).lstrip()[:1]


def skip_bom(handle: IO[bytes]) -> None:
    """Position the handle at the start of the JSON text: after a BOM, which ijson rejects."""
    handle.seek(0)
    if handle.read(len(_BOM)) != _BOM:
        handle.seek(0)


def _read_csv(path: Path, max_field_bytes: int) -> Iterator[RawItem]:
    """Rows as {column: [values]} (Jira repeats a column for each comment, label, ...)."""
    # Descriptions longer than the csv module's default 128 KiB would fail the whole file.
    csv.field_size_limit(max(csv.field_size_limit(), max_field_bytes))
    row_number = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if not header:
                raise ConfigurationError(f"{path}: the CSV export has no header row")
            for row in reader:
                if not row:
                    continue
                row_number += 1
                if len(row) != len(header):
                    raise ConfigurationError(
                        f"{path}: row {row_number} (line {reader.line_num}) has {len(row)} "
                        f"cells, the header {len(header)} (truncated or corrupt export)"
                    )
                record: dict[str, list[str]] = {}
                for column, cell in zip(header, row, strict=True):
                    record.setdefault(column.strip(), []).append(cell)
                yield RawItem(record, "row", row_number)
    except (csv.Error, UnicodeDecodeError) as error:
        raise ConfigurationError(
            f"{path}: not valid CSV after row {row_number} (truncated or corrupt export): {error}"
        ) from error


def read_export(path: Path, export_format: str, max_field_bytes: int) -> Iterator[RawItem]:
    """The raw items of one export file, lazily; `ConfigurationError` if the file is broken."""
    try:
        if export_format.endswith("_csv"):
            yield from _read_csv(path, max_field_bytes)
        else:
            yield from _read_json(path, export_format)
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot be read: {error}") from error
