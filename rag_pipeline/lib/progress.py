"""Progress of long work: counts, rate and ETA, for a terminal and for Dagster's run logs.

Two audiences read the same counts. Whoever runs `rag-pipeline run`, `import-beir` or a
benchmark sees live bars on stderr (`rich`), only when stderr is a terminal and progress is not
switched off (`--quiet`, `RAG_PROGRESS=0`), so `--json` output, pipes and tests stay clean. The
Dagster UI shows the lines the assets log through `ProgressLog` every few seconds.

The pipeline stages commit per document (parse, chunk) or per batch (embeddings), so counting
rows in Postgres (`build_counts`) shows how far a source has got without touching the pipeline:
`BuildProgress` and `PipelineProgress` poll them while the build runs in the main thread.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO, TypeVar

from rag_pipeline.lib import database

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

Item = TypeVar("Item")


def progress_enabled(
    stream: TextIO | None = None,
    quiet: bool = False,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Whether live progress may be drawn on `stream` (stderr): a terminal, and not switched off
    by `--quiet` or `RAG_PROGRESS=0`."""
    from rag_pipeline.settings import Settings

    if quiet or not Settings.from_env(environ).progress_on:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def format_clock(seconds: float) -> str:
    """`6:12`, or `1:02:03` past an hour."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(
    verb: str, done: int, total: int, unit: str, rate: float | None, eta: float | None
) -> str:
    """`embedded 384/12,309 texts, 32.1/s, ETA 6:12`; rate and ETA only once known."""
    line = f"{verb} {done:,}/{total:,} {unit}"
    if rate is not None:
        line += f", {rate:.1f}/s"
    if eta is not None:
        line += f", ETA {format_clock(eta)}"
    return line


class ProgressLog:
    """Progress lines of a loop, sent to `log` (an asset's `context.log.info`) at the first item,
    then at most every `every_seconds`, and at the end: the counts, rate and ETA show in the
    Dagster run's logs without one event per item."""

    def __init__(
        self,
        log: Callable[[str], None],
        verb: str,
        total: int,
        unit: str,
        every_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.verb = verb
        self.total = total
        self.unit = unit
        self.every_seconds = every_seconds
        self.clock = clock
        self.started = clock()
        self._last_logged: float | None = None

    def advance(self, done: int) -> None:
        """`done` of `total` are finished; log if the line is due."""
        now = self.clock()
        finished = done >= self.total
        if (
            not finished
            and self._last_logged is not None
            and now - self._last_logged < self.every_seconds
        ):
            return
        self._last_logged = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        eta = None if finished or rate is None else (self.total - done) / rate
        self.log(progress_line(self.verb, done, self.total, self.unit, rate, eta))


def log_progress(
    log: Callable[[str], None],
    verb: str,
    unit: str,
    items: Iterable[Item],
    total: int,
    every_seconds: float = 10.0,
) -> Iterator[Item]:
    """Yield `items`, counting each one done when the loop body comes back for the next (a
    `continue` counts too), with `ProgressLog` lines along the way."""
    progress = ProgressLog(log, verb, total, unit, every_seconds)
    for number, item in enumerate(items, 1):
        yield item
        progress.advance(number)


# Current documents of a source and how far each stage got with their current content: parsed
# by this parser, cut into live chunks by this chunker, and those chunks' texts embedded. A
# document a stage refused (quarantined) is settled for that stage too: the bars reach the end.
_COUNTS = """
WITH current AS (
    SELECT doc_id, content_hash FROM rag.documents
    WHERE source = %(source)s AND deleted_at IS NULL
), parsed AS (
    SELECT DISTINCT p.doc_id FROM rag.parsed_documents p
    JOIN current d ON d.doc_id = p.doc_id AND d.content_hash = p.content_hash
    WHERE p.parser_key = %(parser)s
), chunked AS (
    SELECT doc_id, text_hash FROM rag.live_chunks(%(parser)s, %(chunker)s)
    WHERE source = %(source)s
), refused AS (
    SELECT DISTINCT q.doc_id, q.stage FROM rag.quarantine q
    JOIN current d ON d.doc_id = q.doc_id AND d.content_hash = q.content_hash
    WHERE q.stage IN (%(parse_stage)s, %(chunk_stage)s)
)
SELECT (SELECT count(*) FROM current),
       (SELECT count(*) FROM parsed),
       (SELECT count(*) FROM refused r
        WHERE r.stage = %(parse_stage)s AND r.doc_id NOT IN (SELECT doc_id FROM parsed)),
       (SELECT count(DISTINCT doc_id) FROM chunked),
       (SELECT count(*) FROM refused r
        WHERE r.stage = %(chunk_stage)s AND r.doc_id NOT IN (SELECT doc_id FROM chunked)),
       (SELECT count(*) FROM chunked),
       (SELECT count(*) FROM chunked k
        WHERE EXISTS (SELECT 1 FROM rag.embeddings e
                      WHERE e.text_hash = k.text_hash AND e.model_key = %(model)s))
"""


@dataclass(frozen=True)
class BuildCounts:
    """One source's current documents and how far each stage got with them."""

    documents: int
    parsed: int
    parse_refused: int
    chunked_documents: int
    chunk_refused: int
    chunks: int
    embedded: int


@dataclass(frozen=True)
class BuildKeys:
    """The processor keys whose rows count as done: those of the resources the run uses."""

    parser: str
    chunker: str
    model: str


def build_counts(database_url: str, source: str, keys: BuildKeys) -> BuildCounts:
    with database.connection(database_url) as conn:
        row = conn.execute(
            _COUNTS,
            {
                "source": source,
                "parser": keys.parser,
                "chunker": keys.chunker,
                "model": keys.model,
                "parse_stage": "parse",
                "chunk_stage": "chunk",
            },
        ).fetchone()
    assert row is not None
    return BuildCounts(*(int(value or 0) for value in row))


class _Poller:
    """Calls `tick` every `interval` seconds from a daemon thread until stopped."""

    def __init__(self, tick: Callable[[], None], interval: float, name: str) -> None:
        self.tick = tick
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()


class BuildProgress:
    """Reports `build_counts` of one source every `interval` seconds as a line, with the current
    stage's rate and ETA, until stopped (`make eval` logs). A context manager around the build."""

    def __init__(
        self,
        database_url: str,
        source: str,
        keys: BuildKeys,
        expected_documents: int,
        report: Callable[[str], None],
        interval: float = 15.0,
    ) -> None:
        self.database_url = database_url
        self.source = source
        self.keys = keys
        self.expected_documents = expected_documents
        self.report = report
        self._poller = _Poller(self._tick, interval, "build-progress")
        self._started = 0.0
        # (time, count) when the current stage was first seen moving: its rate and ETA base.
        self._base: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> BuildProgress:
        self._started = time.perf_counter()
        self._poller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._poller.stop()

    def _rate(self, stage: str, done: int, total: int, now: float) -> str:
        base = self._base.setdefault(stage, (now, done))
        elapsed, gained = now - base[0], done - base[1]
        if elapsed <= 0 or gained <= 0:
            return ""
        rate = gained / elapsed
        return f" at {rate:.1f}/s, ETA {format_clock(max(0, total - done) / rate)}"

    def line(self, counts: BuildCounts, now: float) -> str:
        total = self.expected_documents
        head = f"[eval] build {format_clock(now - self._started)}:"
        if counts.parsed < total:
            stage = f"documents {counts.documents:,}/{total:,}, parsed {counts.parsed:,}/{total:,}"
            return head + " " + stage + self._rate("parse", counts.parsed, total, now)
        stage = (
            f"parsed {counts.parsed:,}/{total:,}, chunks {counts.chunks:,}, "
            f"embedded {counts.embedded:,}/{counts.chunks:,}"
        )
        return head + " " + stage + self._rate("embed", counts.embedded, counts.chunks, now)

    def _tick(self) -> None:
        try:
            counts = build_counts(self.database_url, self.source, self.keys)
        except Exception as error:  # progress is best effort; the build decides success
            self.report(f"[eval] build progress unavailable: {type(error).__name__}: {error}")
            return
        self.report(self.line(counts, time.perf_counter()))


def progress_console() -> Console:
    """The console live progress draws on: stderr, so stdout stays the command's output."""
    # rich is imported only to draw: the assets import this module for `ProgressLog`.
    from rich.console import Console

    return Console(file=sys.stderr)


def _new_progress(console: Console, show_elapsed: bool = False) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        # rich's own rate over the last updates; empty until it has two of them.
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        *([TimeElapsedColumn()] if show_elapsed else []),
        console=console,
        refresh_per_second=4,
        # stdout is the command's output: never folded into the bars' stream.
        redirect_stdout=False,
    )


def _rate_text(speed: float | None) -> str:
    return f"{speed:>7.1f}/s" if speed else " " * 9


class PipelineProgress:
    """Live bars on stderr for a `run_pipeline` call (a `PipelineObserver`).

    While a source's ingest job runs, its documents parsed and chunked and its chunk texts
    embedded are read from Postgres (`build_counts`) every `interval` seconds; each bar shows
    count, total, rate and ETA. The index job gets a line with its elapsed time. Use as a
    context manager around the call (`runner.pipeline_progress` builds it, or nothing).
    """

    STAGES = (
        ("parse", "parsed", "documents"),
        ("chunk", "chunked", "documents"),
        ("embed", "embedded", "texts"),
    )

    def __init__(
        self,
        counts: Callable[[str], BuildCounts],
        console: Console | None = None,
        interval: float = 1.0,
    ) -> None:
        self.counts = counts
        self.interval = interval
        self._progress = _new_progress(console or progress_console(), show_elapsed=True)
        self._tasks: dict[str, TaskID] = {}
        self._source: str | None = None
        self._poller: _Poller | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> PipelineProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_polling()
        self._progress.stop()

    def job_started(self, job_name: str, source: str | None) -> None:
        if source is None:
            self._tasks["index"] = self._progress.add_task(
                f"{job_name}", total=None, rate=_rate_text(None)
            )
            return
        self._source = source
        for stage, verb, unit in self.STAGES:
            self._tasks[f"{source}:{stage}"] = self._progress.add_task(
                f"{source}: {verb} {unit}", total=None, rate=_rate_text(None)
            )
        self._update()
        self._poller = _Poller(self._update, self.interval, "pipeline-progress")
        self._poller.start()

    def job_finished(self, job_name: str, source: str | None, succeeded: bool) -> None:
        mark = "done" if succeeded else "FAILED"
        if source is None:
            task = self._tasks["index"]
            self._progress.update(task, total=1, completed=1, description=f"{job_name}: {mark}")
            return
        self._stop_polling()
        self._update()
        self._source = None
        if not succeeded:
            task = self._tasks[f"{source}:embed"]
            description = self._progress.tasks[task].description
            self._progress.update(task, description=f"{description} ({mark})")

    def _stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None

    def _update(self) -> None:
        with self._lock:
            source = self._source
            if source is None:
                return
            try:
                counts = self.counts(source)
            except Exception:  # progress is best effort; the run decides success
                return
            figures = {
                "parse": (counts.parsed + counts.parse_refused, counts.documents),
                "chunk": (counts.chunked_documents + counts.chunk_refused, counts.parsed),
                "embed": (counts.embedded, counts.chunks),
            }
            for stage, (done, total) in figures.items():
                task = self._tasks[f"{source}:{stage}"]
                self._progress.update(task, total=total, completed=done)
                speed = self._progress.tasks[task].speed
                self._progress.update(task, rate=_rate_text(speed))


# `import_beir` reports "  12,000 documents written (15,000 read)" every thousand documents.
_BEIR_PROGRESS = re.compile(r"([\d,]+) documents written \(([\d,]+) read\)")


def count_lines(path: os.PathLike[str] | str, chunk_bytes: int = 1 << 20) -> int:
    """Lines of a file, read in blocks (a BEIR corpus of millions of lines takes seconds)."""
    lines = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            lines += block.count(b"\n")
    return lines


class ImportProgress:
    """A bar of corpus documents read by `import_beir`, fed by its progress messages; other
    messages are printed above the bar. A context manager; call it with each message."""

    def __init__(self, corpus_documents: int, console: Console | None = None) -> None:
        self._console = console or progress_console()
        self._progress = _new_progress(self._console)
        self._task = self._progress.add_task(
            "import: documents read", total=corpus_documents, rate=_rate_text(None)
        )

    def __enter__(self) -> ImportProgress:
        self._progress.start()
        return self

    def __exit__(self, error_type: type[BaseException] | None, *exc: object) -> None:
        if error_type is None:
            # The importer reports every thousand documents; returning means it read them all.
            total = self._progress.tasks[self._task].total
            self._progress.update(self._task, completed=total)
        self._progress.stop()

    def __call__(self, message: str) -> None:
        found = _BEIR_PROGRESS.search(message)
        if found is None:
            self._progress.console.print(message, markup=False, highlight=False)
            return
        written, read = (int(group.replace(",", "")) for group in found.groups())
        self._progress.update(
            self._task, completed=read, description=f"import: read ({written:,} written)"
        )
        self._progress.update(self._task, rate=_rate_text(self._progress.tasks[self._task].speed))
