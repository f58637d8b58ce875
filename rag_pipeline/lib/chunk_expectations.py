"""A Great Expectations suite over a candidate index version's chunks.

The version's chunks, with the tenant and ACL they are served under, are read with one query into
a pandas DataFrame; a few derived columns (printable and letter shares, a normalised-text
duplicate flag, heading-path presence) are computed in pandas, and a GE 1.x suite built in code
is validated on an ephemeral context. The result is a plain dataclass: one row per expectation
and a markdown table, so the Dagster check and the tests read the same thing.

Great Expectations is imported when the suite first runs, not with this module: it takes about
3 s to import, which loading the Dagster definitions should not pay. Creating the ephemeral
context is cheap once imported (a few ms), so each call builds its own and shares nothing; the
whole suite takes about 0.4 s on the sample corpus's 220 chunks.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd
import psycopg

CHECK_NAME = "chunk_expectations"

# Control characters other than tab, newline and carriage return (PostgreSQL text cannot hold NUL,
# so a NUL never reaches a chunk; the class keeps it for DataFrames built elsewhere).
CONTROL_CHARACTERS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
REPLACEMENT_CHARACTER = "\ufffd"
# UTF-8 read as Latin-1/cp1252: "Ã©" for "é", "â€™" for a right quotation mark. Legitimate text
# almost never has a capital A-tilde followed by a Latin-1 symbol, or "â€" -- except when it quotes
# mojibake: the sample corpus has a support ticket about "Ã©" in a CSV export. So a chunk is only
# suspect when such sequences are at least as frequent as correctly decoded non-ASCII letters (a
# mis-decoded text has none of those left).
MOJIBAKE = re.compile(r"Ã[\u0080-\u00bf]|â€")
NOT_BLANK = r"\S"

CHUNKS_QUERY = """
WITH members AS (
    SELECT m.chunk_id, m.tenant, m.acl_principals, c.doc_id, c.ordinal, c.text, c.token_count,
           c.heading_path, c.content_hash, c.parser_key
    FROM rag.index_version_chunks m
    JOIN rag.chunks c ON c.chunk_id = m.chunk_id
    WHERE m.version_id = %(version)s
), parsed AS (
    SELECT p.doc_id, p.content_hash, p.parser_key,
           jsonb_path_exists(p.elements, '$[*] ? (@.element_type == "Title")') AS has_headings
    FROM rag.parsed_documents p
    WHERE (p.doc_id, p.content_hash, p.parser_key) IN
          (SELECT DISTINCT doc_id, content_hash, parser_key FROM members)
)
SELECT x.chunk_id, x.doc_id, x.text, x.token_count, x.heading_path, x.tenant,
       x.acl_principals, coalesce(p.has_headings, false) AS document_has_headings
FROM members x
LEFT JOIN parsed p ON p.doc_id = x.doc_id AND p.content_hash = x.content_hash
    AND p.parser_key = x.parser_key
ORDER BY x.doc_id, x.ordinal
"""


@dataclass(frozen=True)
class ChunkExpectationThresholds:
    """The suite's limits; the defaults hold for the sample corpus with a margin.

    - `min_heading_coverage`: of the chunks of documents that have headings (a parsed `Title`
      element), the share whose heading path is non-empty. Plain-text documents have no
      headings and are not counted; a chunk before a document's first heading, or one merged
      across two top-level sections, legitimately has none, hence a share and not "all".
    - `max_near_duplicate_rate`: share of chunks whose normalised text (NFKC, case-folded,
      punctuation and whitespace collapsed) also occurs in another document. Copies inside one
      document are the chunker's business, copies across documents crowd out search results.
    - `min_printable_share`: per chunk, the share of characters that are printable or whitespace.
    - `min_letter_share` / `letter_share_mostly`: language sanity. A chunk of prose is mostly
      letters (any script); a chunk below `min_letter_share` letters among its non-space
      characters is a hash dump, a base64 blob or a table of numbers. Some are legitimate
      (code, figures), so only `letter_share_mostly` of the chunks must reach it.
    - `max_encoding_error_rate`: share of chunks allowed a U+FFFD, a control character or
      mojibake. Published corpora carry a few from their own sources (BEIR SciFact: 11 of 12,313
      chunks, e.g. "Nuclear Factor-\ufffdB"), which must not block a whole index; a source
      decoded wrongly shows in far more than 0.1% of the chunks (on a corpus under 1,000 chunks,
      a single one fails). The offending chunks are listed either way.
    - `examples`/`example_chars`: how many offending chunks each failed expectation shows, and
      how much of each value.
    """

    min_heading_coverage: float = 0.8
    max_near_duplicate_rate: float = 0.05
    min_printable_share: float = 0.98
    min_letter_share: float = 0.4
    letter_share_mostly: float = 0.9
    max_encoding_error_rate: float = 0.001
    examples: int = 3
    example_chars: int = 80


DEFAULT_THRESHOLDS = ChunkExpectationThresholds()


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, in plain values (JSON-serialisable with `asdict`)."""

    name: str
    expectation: str
    column: str
    rule: str
    success: bool
    observed: str
    checked: int
    unexpected_count: int
    unexpected_percent: float
    examples: tuple[str, ...]


@dataclass(frozen=True)
class ChunkExpectationsResult:
    version_id: int
    passed: bool
    chunk_count: int
    budget: int
    duration_s: float
    outcomes: tuple[ExpectationOutcome, ...]
    thresholds: ChunkExpectationThresholds

    @property
    def failed(self) -> list[str]:
        return [outcome.name for outcome in self.outcomes if not outcome.success]

    @property
    def summary(self) -> str:
        total = len(self.outcomes)
        if self.passed:
            return f"all {total} expectations met on {self.chunk_count} chunks"
        return f"{len(self.failed)} of {total} expectations failed: {', '.join(self.failed)}"

    def markdown(self) -> str:
        lines = [
            f"Version **{self.version_id}**: {self.chunk_count} chunks, {self.summary}",
            "",
            "| | expectation | column | rule | observed | unexpected | examples |",
            "|---|---|---|---|---|---|---|",
        ]
        for outcome in self.outcomes:
            examples = "<br>".join(_cell(example) for example in outcome.examples)
            lines.append(
                f"| {'✅' if outcome.success else '❌'} | `{outcome.name}` | `{outcome.column}` "
                f"| {_cell(outcome.rule)} | {_cell(outcome.observed)} "
                f"| {outcome.unexpected_count} ({outcome.unexpected_percent:.1f}%) | {examples} |"
            )
        return "\n".join(lines)

    def detail(self) -> dict[str, Any]:
        """What is stored with the check result in `rag.index_version_checks`."""
        return {
            "chunks": self.chunk_count,
            "budget": self.budget,
            "failed_expectations": self.failed,
            "duration_s": self.duration_s,
            "thresholds": asdict(self.thresholds),
            "expectations": [asdict(outcome) for outcome in self.outcomes],
        }


def _cell(text: str) -> str:
    """`text` safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def normalised_text(text: str) -> str:
    """Text as compared for near-duplicates: NFKC, case-folded, words separated by one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"\w+", folded))


def _share(text: str, counts: Callable[[str], bool], among: Callable[[str], bool]) -> float:
    considered = [char for char in text if among(char)]
    if not considered:
        return 0.0
    return sum(1 for char in considered if counts(char)) / len(considered)


def printable_share(text: str) -> float:
    """Share of characters that are printable or ordinary whitespace (1.0 for an empty text)."""
    if not text:
        return 1.0
    return _share(text, lambda c: c.isprintable() or c in "\t\n\r", lambda c: True)


def letter_share(text: str) -> float | None:
    """Share of letters (any script) among the non-whitespace characters; None for a blank
    text, which is `text_not_blank`'s to report (GE leaves missing values out)."""
    if not text.strip():
        return None
    return _share(text, str.isalpha, lambda c: not c.isspace())


def mojibake_suspect(text: str) -> bool:
    """True if `text` looks mis-decoded: mojibake sequences at least as frequent as clean
    non-ASCII letters."""
    sequences = MOJIBAKE.findall(text)
    if not sequences:
        return False
    clean = MOJIBAKE.sub("", text)
    return len(sequences) >= sum(1 for char in clean if not char.isascii() and char.isalpha())


def load_chunks(conn: psycopg.Connection, version_id: int) -> pd.DataFrame:
    """The version's chunks with their served tenant and ACL, plus the derived columns."""
    cursor = conn.execute(CHUNKS_QUERY, {"version": version_id})
    columns = [column.name for column in cursor.description or ()]
    frame = pd.DataFrame(cursor.fetchall(), columns=columns)
    return with_derived_columns(frame)


def with_derived_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the columns the suite checks that SQL does not hold directly."""
    frame = frame.copy()
    frame["text"] = frame["text"].fillna("")
    frame["tenant"] = frame["tenant"].fillna("")
    frame["acl_principal_count"] = [
        sum(1 for principal in acl or () if principal and principal.strip())
        for acl in frame["acl_principals"]
    ]
    # None (not counted) for documents without headings; True/False for the others.
    frame["heading_path_present"] = pd.Series(
        [
            bool(path) and any(part.strip() for part in path) if has_headings else None
            for path, has_headings in zip(
                frame["heading_path"], frame["document_has_headings"], strict=True
            )
        ],
        index=frame.index,
        dtype=object,
    )
    normalised = [normalised_text(text) for text in frame["text"]]
    frame["normalised_hash"] = [hashlib.sha256(text.encode()).hexdigest() for text in normalised]
    documents_per_hash = frame.groupby("normalised_hash")["doc_id"].nunique()
    frame["duplicated_across_documents"] = [
        bool(text) and bool(documents_per_hash[digest] > 1)
        for digest, text in zip(frame["normalised_hash"], normalised, strict=True)
    ]
    frame["mojibake_suspect"] = [mojibake_suspect(text) for text in frame["text"]]
    frame["printable_share"] = [printable_share(text) for text in frame["text"]]
    frame["letter_share"] = [letter_share(text) for text in frame["text"]]
    return frame


@dataclass(frozen=True)
class _Spec:
    name: str
    rule: str
    expectation: Any
    # Column whose value is shown as an example of an offending chunk.
    shown: str


def _suite_specs(budget: int, limits: ChunkExpectationThresholds) -> list[_Spec]:
    import great_expectations as gx

    e = gx.expectations
    near_duplicates_mostly = 1 - limits.max_near_duplicate_rate
    encoding_mostly = 1 - limits.max_encoding_error_rate
    specs = [
        _Spec(
            "text_not_blank",
            "text has a non-whitespace character",
            e.ExpectColumnValuesToMatchRegex(column="text", regex=NOT_BLANK),
            "text",
        ),
        _Spec(
            "token_count_within_budget",
            f"1 <= token_count <= {budget}",
            e.ExpectColumnValuesToBeBetween(column="token_count", min_value=1, max_value=budget),
            "token_count",
        ),
        _Spec(
            "heading_path_coverage",
            f">= {limits.min_heading_coverage:.0%} of chunks of documents with headings have a "
            "heading path",
            e.ExpectColumnValuesToBeInSet(
                column="heading_path_present",
                value_set=[True],
                mostly=limits.min_heading_coverage,
            ),
            "heading_path",
        ),
        _Spec(
            "acl_not_empty",
            "at least one non-blank ACL principal",
            e.ExpectColumnValuesToBeBetween(column="acl_principal_count", min_value=1),
            "doc_id",
        ),
        _Spec(
            "tenant_present",
            "tenant is not blank",
            e.ExpectColumnValuesToMatchRegex(column="tenant", regex=NOT_BLANK),
            "doc_id",
        ),
        _Spec(
            "near_duplicate_rate",
            f"<= {limits.max_near_duplicate_rate:.0%} of chunks repeat another document's "
            "normalised text",
            e.ExpectColumnValuesToBeInSet(
                column="duplicated_across_documents",
                value_set=[False],
                mostly=near_duplicates_mostly,
            ),
            "text",
        ),
        _Spec(
            "no_replacement_characters",
            f"no U+FFFD (text decoded with errors) in >= {encoding_mostly:.1%} of chunks",
            e.ExpectColumnValuesToNotMatchRegex(
                column="text", regex=REPLACEMENT_CHARACTER, mostly=encoding_mostly
            ),
            "text",
        ),
        _Spec(
            "no_control_characters",
            "no control characters besides tab, newline, carriage return in >= "
            f"{encoding_mostly:.1%} of chunks",
            e.ExpectColumnValuesToNotMatchRegex(
                column="text", regex=CONTROL_CHARACTERS, mostly=encoding_mostly
            ),
            "text",
        ),
        _Spec(
            "no_mojibake",
            "no chunk mostly decoded as Latin-1 instead of UTF-8 (Ã©, â€™ outnumber é, \u2019) "
            f"in >= {encoding_mostly:.1%} of chunks",
            e.ExpectColumnValuesToBeInSet(
                column="mojibake_suspect", value_set=[False], mostly=encoding_mostly
            ),
            "text",
        ),
        _Spec(
            "mostly_printable",
            f">= {limits.min_printable_share:.0%} printable characters per chunk",
            e.ExpectColumnValuesToBeBetween(
                column="printable_share", min_value=limits.min_printable_share
            ),
            "text",
        ),
        _Spec(
            "letter_share",
            f">= {limits.letter_share_mostly:.0%} of chunks are >= "
            f"{limits.min_letter_share:.0%} letters",
            e.ExpectColumnValuesToBeBetween(
                column="letter_share",
                min_value=limits.min_letter_share,
                mostly=limits.letter_share_mostly,
            ),
            "text",
        ),
    ]
    for spec in specs:
        spec.expectation.meta = {"name": spec.name}
    return specs


def _observed(result: dict[str, Any], expectation: Any) -> str:
    mostly = getattr(expectation, "mostly", 1.0) or 1.0
    unexpected = float(result.get("unexpected_percent_nonmissing") or 0.0)
    met = 100.0 - unexpected
    text = f"{met:.1f}% met"
    if mostly < 1:
        text += f" (needs {mostly:.0%})"
    return text


def validate_frame(
    frame: pd.DataFrame,
    version_id: int,
    budget: int,
    thresholds: ChunkExpectationThresholds = DEFAULT_THRESHOLDS,
) -> ChunkExpectationsResult:
    """Run the suite on a DataFrame from `load_chunks` (or built the same way)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    started = time.perf_counter()
    # In memory, without a data-docs site or progress bars: the result is read from the return
    # value, and the check's log should not fill with tqdm lines.
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    batch = (
        context.data_sources.add_pandas("rag")
        .add_dataframe_asset("chunks")
        .add_batch_definition_whole_dataframe("version")
    )
    specs = _suite_specs(budget, thresholds)
    suite = context.suites.add(gx.ExpectationSuite(name=CHECK_NAME))
    for spec in specs:
        suite.add_expectation(spec.expectation)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=CHECK_NAME, data=batch, suite=suite)
    )
    run = validation.run(
        batch_parameters={"dataframe": frame},
        result_format={
            "result_format": "SUMMARY",
            "partial_unexpected_count": thresholds.examples,
        },
    )
    by_name = {r.expectation_config.meta.get("name"): r for r in run.results}
    outcomes = []
    for spec in specs:
        validated = by_name[spec.name]
        result = dict(validated.result or {})
        if validated.exception_info and validated.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"expectation {spec.name} raised: {validated.exception_info['exception_message']}"
            )
        indexes = list(result.get("partial_unexpected_index_list") or [])[: thresholds.examples]
        examples = tuple(
            f"{frame.at[index, 'chunk_id']}: "
            f"{repr(frame.at[index, spec.shown])[: thresholds.example_chars]}"
            for index in indexes
        )
        element_count = int(result.get("element_count") or 0)
        missing = int(result.get("missing_count") or 0)
        outcomes.append(
            ExpectationOutcome(
                name=spec.name,
                expectation=validated.expectation_config.type,
                column=spec.expectation.column,
                rule=spec.rule,
                success=bool(validated.success),
                observed=_observed(result, spec.expectation),
                checked=element_count - missing,
                unexpected_count=int(result.get("unexpected_count") or 0),
                unexpected_percent=round(float(result.get("unexpected_percent") or 0.0), 2),
                examples=examples,
            )
        )
    return ChunkExpectationsResult(
        version_id=version_id,
        passed=all(outcome.success for outcome in outcomes),
        chunk_count=len(frame),
        budget=budget,
        duration_s=round(time.perf_counter() - started, 3),
        outcomes=tuple(outcomes),
        thresholds=thresholds,
    )


def validate_chunks(
    conn: psycopg.Connection,
    version_id: int,
    budget: int,
    thresholds: ChunkExpectationThresholds = DEFAULT_THRESHOLDS,
) -> ChunkExpectationsResult:
    """Load the version's chunks and run the suite on them; the duration covers both."""
    started = time.perf_counter()
    result = validate_frame(load_chunks(conn, version_id), version_id, budget, thresholds)
    return replace(result, duration_s=round(time.perf_counter() - started, 3))
