"""Progress of a pipeline build, read from Postgres while the build runs in another thread.

The stages commit per document (parse, chunk) or per batch (embeddings), so counting rows shows
how far a source has got without touching the pipeline. A full BEIR corpus takes half an hour to
embed on two cores: the counts, rate and ETA tell whoever runs `make eval` what is happening.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rag_pipeline.lib import database

# Current documents of a source and how far each stage got with their current content.
_COUNTS = """
WITH current AS (
    SELECT doc_id, content_hash FROM rag.documents
    WHERE source = %(source)s AND deleted_at IS NULL
), parsed AS (
    SELECT count(DISTINCT p.doc_id) AS n FROM rag.parsed_documents p
    JOIN current d ON d.doc_id = p.doc_id AND d.content_hash = p.content_hash
), chunked AS (
    SELECT c.text_hash FROM rag.chunks c
    JOIN current d ON d.doc_id = c.doc_id AND d.content_hash = c.content_hash
    WHERE c.chunker_key = %(chunker)s
)
SELECT (SELECT count(*) FROM current),
       (SELECT n FROM parsed),
       (SELECT count(*) FROM chunked),
       (SELECT count(*) FROM chunked k
        WHERE EXISTS (SELECT 1 FROM rag.embeddings e
                      WHERE e.text_hash = k.text_hash AND e.model_key = %(model)s))
"""


@dataclass(frozen=True)
class BuildCounts:
    documents: int
    parsed: int
    chunks: int
    embedded: int


def build_counts(database_url: str, source: str, chunker_key: str, model_key: str) -> BuildCounts:
    with database.connection(database_url) as conn:
        row = conn.execute(
            _COUNTS, {"source": source, "chunker": chunker_key, "model": model_key}
        ).fetchone()
    assert row is not None
    return BuildCounts(*(int(value or 0) for value in row))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class BuildProgress:
    """Reports `build_counts` every `interval` seconds from a daemon thread, with the current
    stage's rate and ETA, until stopped. Use as a context manager around the build."""

    def __init__(
        self,
        database_url: str,
        source: str,
        chunker_key: str,
        model_key: str,
        expected_documents: int,
        report: Callable[[str], None],
        interval: float = 15.0,
    ) -> None:
        self.database_url = database_url
        self.source = source
        self.chunker_key = chunker_key
        self.model_key = model_key
        self.expected_documents = expected_documents
        self.report = report
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="build-progress", daemon=True)
        self._started = 0.0
        # (time, count) when the current stage was first seen moving: its rate and ETA base.
        self._base: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> BuildProgress:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _rate(self, stage: str, done: int, total: int, now: float) -> str:
        base = self._base.setdefault(stage, (now, done))
        elapsed, gained = now - base[0], done - base[1]
        if elapsed <= 0 or gained <= 0:
            return ""
        rate = gained / elapsed
        return f" at {rate:.1f}/s, ETA {_clock(max(0, total - done) / rate)}"

    def line(self, counts: BuildCounts, now: float) -> str:
        total = self.expected_documents
        head = f"[eval] build {_clock(now - self._started)}:"
        if counts.parsed < total:
            stage = f"documents {counts.documents:,}/{total:,}, parsed {counts.parsed:,}/{total:,}"
            return head + " " + stage + self._rate("parse", counts.parsed, total, now)
        stage = (
            f"parsed {counts.parsed:,}/{total:,}, chunks {counts.chunks:,}, "
            f"embedded {counts.embedded:,}/{counts.chunks:,}"
        )
        return head + " " + stage + self._rate("embed", counts.embedded, counts.chunks, now)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                counts = build_counts(
                    self.database_url, self.source, self.chunker_key, self.model_key
                )
            except Exception as error:  # progress is best effort; the build decides success
                self.report(f"[eval] build progress unavailable: {type(error).__name__}: {error}")
                continue
            self.report(self.line(counts, time.perf_counter()))
