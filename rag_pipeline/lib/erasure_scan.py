"""Find, and scrub, what is left of an erased document's text in any table of a database.

The erasure deletes rows by key (erasure_delete.py). This module answers the auditor's question
"is the text still anywhere?" without trusting that list of keys: it takes fragments of the text,
collected before the erasure (40-character windows of every chunk, parse element and the title),
and looks for them in every text, varchar, json, jsonb, text[] and bytea column of every table of
a database, the pipeline's and Dagster's alike.

Text is stored in several spellings, so each fragment is searched in each of them: as is, with
whitespace collapsed (the Dagster previews flatten excerpts, `defs/markdown.py`), with `|` escaped
(markdown table cells), JSON-escaped with raw Unicode (PostgreSQL's `jsonb::text`) and with
`\\uXXXX` escapes (Dagster's serdes writes `json.dumps` defaults). Windows start every
`FRAGMENT_STRIDE` characters, so any surviving copy of at least `FRAGMENT_LENGTH +
FRAGMENT_STRIDE - 1` consecutive characters (59) contains a whole window and is found; every
excerpt this project writes into Dagster metadata is longer than that (80 to 160 characters).

Scrubbing rewrites a value in place instead of deleting the row: Dagster's event log must stay
readable, so a JSON value is decoded, each string that holds a fragment has the offending markdown
table cell (or line) replaced by `[erased]`, and the value is re-encoded; a value Dagster's serdes
could read before must still deserialize afterwards, or nothing is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

FRAGMENT_LENGTH = 40
FRAGMENT_STRIDE = 20
# A window needs this many letters or digits to say anything about the document (a row of
# dashes or a run of spaces is in every document).
MIN_ALNUM_PER_FRAGMENT = 16
# A whole title shorter than a window is still searched for if it is at least this long.
MIN_TITLE_CHARS = 8
ERASED = "[erased]"

_TEXT_TYPES = {"text", "varchar", "bpchar", "xml", "json", "jsonb"}
_ARRAY_TYPES = {"_text", "_varchar"}
_BYTEA = "bytea"
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class Column:
    schema: str
    table: str
    column: str
    type_name: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class ScanHit:
    database: str
    table: str
    column: str
    rows: int


def flatten(text: str) -> str:
    """Whitespace collapsed to single spaces, as the metadata previews show text."""
    return " ".join(text.split())


def windows(text: str) -> list[str]:
    """FRAGMENT_LENGTH-character windows every FRAGMENT_STRIDE characters, plus the last one."""
    text = text.strip()
    if len(text) < FRAGMENT_LENGTH:
        return [text] if _distinctive(text, MIN_ALNUM_PER_FRAGMENT) else []
    starts = list(range(0, len(text) - FRAGMENT_LENGTH + 1, FRAGMENT_STRIDE))
    if starts[-1] != len(text) - FRAGMENT_LENGTH:
        starts.append(len(text) - FRAGMENT_LENGTH)
    found = (text[start : start + FRAGMENT_LENGTH] for start in starts)
    return [window for window in found if _distinctive(window, MIN_ALNUM_PER_FRAGMENT)]


def _distinctive(text: str, min_alnum: int) -> bool:
    return sum(char.isalnum() for char in text) >= min_alnum


def text_fragments(texts: Iterable[str], titles: Iterable[str] = ()) -> list[str]:
    """The windows of every text, as stored and flattened, and each title whole; deduplicated."""
    found: dict[str, None] = {}
    for text in texts:
        if not text:
            continue
        for variant in (text, flatten(text)):
            for window in windows(variant):
                found.setdefault(window, None)
    for title in titles:
        if not title:
            continue
        for variant in (title.strip(), flatten(title)):
            if len(variant) >= MIN_TITLE_CHARS and _distinctive(variant, MIN_TITLE_CHARS // 2):
                found.setdefault(variant, None)
            if len(variant) > FRAGMENT_LENGTH:
                for window in windows(variant):
                    found.setdefault(window, None)
    return list(found)


def _json_inner(text: str, ascii_only: bool) -> str:
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1]


def needles(fragments: Iterable[str]) -> list[str]:
    """Every fragment in the forms a decoded string can hold it: as is and with `|` escaped."""
    found: dict[str, None] = {}
    for fragment in fragments:
        found.setdefault(fragment, None)
        if "|" in fragment:
            found.setdefault(fragment.replace("|", "\\|"), None)
    return list(found)


def stored_variants(fragments: Iterable[str]) -> list[str]:
    """Every form a fragment can take inside a stored text value: `needles` plus JSON escapes."""
    found: dict[str, None] = {}
    for needle in needles(fragments):
        found.setdefault(needle, None)
        found.setdefault(_json_inner(needle, ascii_only=False), None)
        found.setdefault(_json_inner(needle, ascii_only=True), None)
    return list(found)


def scannable_columns(conn: psycopg.Connection) -> list[Column]:
    """Every text-like and bytea column of every ordinary table outside the system schemas.

    Partitions are reached through their parent, so no row is counted twice.
    """
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, a.attname, t.typname
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
          AND a.attnum > 0 AND NOT a.attisdropped
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
          AND t.typname = ANY(%s::text[])
        ORDER BY n.nspname, c.relname, a.attnum
        """,
        (sorted(_TEXT_TYPES | _ARRAY_TYPES | {_BYTEA}),),
    ).fetchall()
    return [Column(*row) for row in rows]


def _value_expression(column: Column) -> sql.Composable:
    ident = sql.Identifier(column.column)
    if column.type_name in _ARRAY_TYPES:
        return sql.SQL("array_to_string({}, {})").format(ident, sql.Literal("\n"))
    if column.type_name == _BYTEA:
        return ident
    return sql.SQL("{}::text").format(ident)


def _matching_rows_query(column: Column, select: sql.Composable) -> sql.Composed:
    """Rows of the column's table whose value holds any of the bound fragments (`%(f)s`).

    `OFFSET 0` keeps the planner from re-evaluating the text conversion once per fragment.
    """
    bytea = column.type_name == _BYTEA
    return sql.SQL(
        "SELECT {select} FROM (SELECT ctid AS row_id, {expr} AS v FROM {table}"
        " WHERE {col} IS NOT NULL OFFSET 0) s"
        " WHERE EXISTS (SELECT 1 FROM unnest(%(f)s::{array_type}) f WHERE {test})"
    ).format(
        select=select,
        expr=_value_expression(column),
        table=sql.Identifier(column.schema, column.table),
        col=sql.Identifier(column.column),
        array_type=sql.SQL("bytea[]" if bytea else "text[]"),
        test=sql.SQL("position(f IN s.v) > 0" if bytea else "strpos(s.v, f) > 0"),
    )


def scan(
    conn: psycopg.Connection,
    fragments: Sequence[str],
    database_label: str,
    exclude_tables: Iterable[str] = (),
) -> list[ScanHit]:
    """(table, column, rows) of every column with at least one row holding a fragment."""
    if not fragments:
        return []
    text_params = stored_variants(fragments)
    byte_params = [needle.encode() for needle in needles(fragments)]
    excluded = set(exclude_tables)
    hits: list[ScanHit] = []
    for column in scannable_columns(conn):
        if column.qualified in excluded:
            continue
        params = byte_params if column.type_name == _BYTEA else text_params
        query = _matching_rows_query(column, sql.SQL("count(*)"))
        rows = conn.execute(query, {"f": params}).fetchone()
        if rows and rows[0]:
            hits.append(ScanHit(database_label, column.qualified, column.column, int(rows[0])))
    return hits


def scrub_string(value: str, found: Sequence[str]) -> str:
    """`value` with every markdown table cell, or else line, holding a needle replaced.

    Falls back to replacing the whole string when a needle spans lines.
    """
    if not any(needle in value for needle in found):
        return value
    lines = []
    for line in value.split("\n"):
        if not any(needle in line for needle in found):
            lines.append(line)
        elif line.lstrip().startswith("|"):
            cells = _CELL_SPLIT.split(line)
            lines.append(
                "|".join(
                    f" {ERASED} " if any(needle in cell for needle in found) else cell
                    for cell in cells
                )
            )
        else:
            lines.append(ERASED)
    scrubbed = "\n".join(lines)
    if any(needle in scrubbed for needle in found):
        return ERASED
    return scrubbed


def scrub_json(value: Any, found: Sequence[str], replace_exact: frozenset[str]) -> Any:
    """A decoded JSON value with every string scrubbed; strings equal to one of
    `replace_exact` (erased chunk ids) become `[erased]`. Dict keys are left alone."""
    if isinstance(value, str):
        return ERASED if value in replace_exact else scrub_string(value, found)
    if isinstance(value, list):
        return [scrub_json(item, found, replace_exact) for item in value]
    if isinstance(value, dict):
        return {key: scrub_json(item, found, replace_exact) for key, item in value.items()}
    return value


def _serdes_readable(text: str) -> bool:
    from dagster._serdes import deserialize_value

    try:
        deserialize_value(text)
    except Exception:
        return False
    return True


def scrub_value(text: str, found: Sequence[str], replace_exact: frozenset[str]) -> str:
    """One stored text value scrubbed; JSON stays JSON, serdes-readable stays serdes-readable."""
    try:
        decoded = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return scrub_string(text, found)
    if isinstance(decoded, str):
        return json.dumps(scrub_json(decoded, found, replace_exact))
    rewritten = json.dumps(scrub_json(decoded, found, replace_exact))
    if rewritten == json.dumps(decoded):
        return text
    if "__class__" in text and _serdes_readable(text) and not _serdes_readable(rewritten):
        raise ValueError("scrubbing would make a serialized Dagster value unreadable")
    return rewritten


def scrub_database(
    conn: psycopg.Connection,
    fragments: Sequence[str],
    exclude_tables: Iterable[str] = (),
    replace_exact: Iterable[str] = (),
    dry_run: bool = False,
) -> dict[str, int]:
    """Rewrite, in the caller's transaction, every text/json value holding a fragment (or an
    exact `replace_exact` string inside JSON); returns rows rewritten per `table.column`.

    bytea and array columns are not rewritten (they are deleted by key, and the scan reports
    what is left). Idempotent: a second run finds nothing.
    """
    exact = frozenset(replace_exact)
    probes = stored_variants(fragments) + sorted(exact)
    found = needles(fragments)
    if not probes:
        return {}
    excluded = set(exclude_tables)
    rewritten: dict[str, int] = {}
    for column in scannable_columns(conn):
        if column.qualified in excluded or column.type_name not in _TEXT_TYPES:
            continue
        query = _matching_rows_query(column, sql.SQL("s.row_id::text, s.v"))
        rows = conn.execute(query, {"f": probes}).fetchall()
        changed = 0
        for row_id, value in rows:
            new_value = scrub_value(value, found, exact)
            if new_value == value:
                continue
            changed += 1
            if dry_run:
                continue
            update = sql.SQL("UPDATE {t} SET {col} = CAST(%s AS {type}) WHERE ctid = %s::tid")
            conn.execute(
                update.format(
                    t=sql.Identifier(column.schema, column.table),
                    col=sql.Identifier(column.column),
                    type=sql.Identifier(column.type_name),
                ),
                (new_value, row_id),
            )
        if changed:
            rewritten[f"{column.qualified}.{column.column}"] = changed
    return rewritten
