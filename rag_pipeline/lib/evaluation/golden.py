"""Golden sets: labelled questions with the documents that answer them, as JSON Lines.

One object per line (format documented in `eval_sets/README.md`):

    {"id": "q01", "question": "...", "principal": "user:alice",
     "relevant_doc_ids": ["acme_engineering:runbooks/postgres-failover.md"]}

Optional: `relevance` (graded judgments, `{doc_id: grade}`; absent means grade 1 for every
relevant document) and any other key (kept in `extra`, for example the `beir` provenance that
`import-beir` writes). The first sets used `query` and `user`; they are read as `question` and
`principal`, so older files keep working.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_pipeline.lib.catalog import ConfigurationError

_KNOWN_KEYS = {"id", "question", "query", "principal", "user", "relevant_doc_ids", "relevance"}


@dataclass(frozen=True)
class GoldenQuestion:
    id: str
    question: str
    # A user of the directory file, as `user:<id>` (a bare `<id>` is accepted on reading).
    principal: str
    relevant_doc_ids: tuple[str, ...]
    # Graded judgments; None means every relevant document has grade 1.
    relevance: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> str:
        """The directory user the question is asked as (the principal without `user:`)."""
        return self.principal.removeprefix("user:")

    def judgments(self) -> dict[str, int]:
        """Document id -> relevance grade, for the metrics."""
        if self.relevance is not None:
            return dict(self.relevance)
        return {doc_id: 1 for doc_id in self.relevant_doc_ids}

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "question": self.question,
            "principal": self.principal,
            "relevant_doc_ids": list(self.relevant_doc_ids),
        }
        if self.relevance is not None:
            record["relevance"] = self.relevance
        record.update(self.extra)
        return record


def _principal(record: dict[str, Any], where: str) -> str:
    value = record.get("principal", record.get("user"))
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}: 'principal' must be a user id such as 'user:alice'")
    value = value.strip()
    if value.startswith("group:"):
        # Retrieval runs as a user (tenant + groups from the directory), never as a bare group.
        raise ConfigurationError(f"{where}: 'principal' must be a user, not {value!r}")
    return value if value.startswith("user:") else f"user:{value}"


def parse_golden_question(record: Any, where: str) -> GoldenQuestion:
    """One golden-set line, checked field by field; raises `ConfigurationError` naming `where`."""
    if not isinstance(record, dict):
        raise ConfigurationError(f"{where}: expected a JSON object")
    qid = record.get("id")
    if not isinstance(qid, str | int) or isinstance(qid, bool) or str(qid) == "":
        raise ConfigurationError(f"{where}: 'id' must be a non-empty string")
    question = record.get("question", record.get("query"))
    if not isinstance(question, str) or not question.strip():
        raise ConfigurationError(f"{where}: 'question' must be a non-empty string")
    relevant = record.get("relevant_doc_ids", [])
    if not isinstance(relevant, list) or not all(isinstance(d, str) and d for d in relevant):
        raise ConfigurationError(f"{where}: 'relevant_doc_ids' must be a list of document ids")
    relevance = record.get("relevance")
    if relevance is not None:
        if not isinstance(relevance, dict) or not all(
            isinstance(grade, int) and not isinstance(grade, bool) for grade in relevance.values()
        ):
            raise ConfigurationError(f"{where}: 'relevance' must map document ids to integers")
        missing = set(relevant) - set(relevance)
        if missing:
            raise ConfigurationError(f"{where}: 'relevance' has no grade for {sorted(missing)}")
    return GoldenQuestion(
        id=str(qid),
        question=question,
        principal=_principal(record, where),
        relevant_doc_ids=tuple(relevant),
        relevance=dict(relevance) if relevance is not None else None,
        extra={key: value for key, value in record.items() if key not in _KNOWN_KEYS},
    )


def json_lines(
    path: Path, error: type[ConfigurationError] = ConfigurationError
) -> Iterator[tuple[str, Any]]:
    """(`file:line`, parsed value) for each non-blank line; `error` names the line otherwise."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as problem:
                raise error(f"{where}: not JSON ({problem.msg})") from None


def iter_golden_set(path: Path | str) -> Iterator[GoldenQuestion]:
    """The questions of a golden-set file, in file order; blank lines are skipped."""
    seen: set[str] = set()
    for where, record in json_lines(Path(path)):
        question = parse_golden_question(record, where)
        if question.id in seen:
            raise ConfigurationError(f"{where}: duplicate id {question.id!r}")
        seen.add(question.id)
        yield question


def read_golden_set(path: Path | str) -> list[GoldenQuestion]:
    return list(iter_golden_set(path))


def write_golden_set(path: Path | str, questions: Iterable[GoldenQuestion]) -> int:
    """Write questions as JSON Lines (UTF-8, one object per line); returns how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for question in questions:
            handle.write(json.dumps(question.to_json(), ensure_ascii=False) + "\n")
            count += 1
    return count


def judged_questions(questions: Iterable[GoldenQuestion]) -> list[GoldenQuestion]:
    """Questions with at least one relevant document: the only ones IR metrics can score.

    Questions whose right answer is a refusal (nothing the principal may read) are scored by
    refusal accuracy instead, not by nDCG.
    """
    return [question for question in questions if question.relevant_doc_ids]
