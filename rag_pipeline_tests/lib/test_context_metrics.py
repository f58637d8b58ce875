"""Offline context precision/recall through ragas' non-LLM metrics."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rag_pipeline.lib.evaluation.context_metrics import (
    ContextScores,
    _ragas_metrics,
    acontext_scores,
    context_scores,
    evaluate_contexts,
)

PARIS = "Paris is the capital and most populous city of France, on the river Seine."
BERLIN = "Berlin is the capital of Germany and its largest city by population."
PHOTOSYNTHESIS = "Photosynthesis lets green plants turn sunlight, water and CO2 into sugar."
WESTPHALIA = "The Peace of Westphalia ended the Thirty Years' War in the year 1648."
# An extract of PARIS with light edits: a near match, as a re-chunked reference would be.
PARIS_EDITED = "Paris is the capital and the most populous city in France, on the Seine."


def test_identical_contexts_score_one() -> None:
    scores = context_scores([PARIS, BERLIN], [PARIS, BERLIN])

    assert scores.context_precision == pytest.approx(1.0)
    assert scores.context_recall == pytest.approx(1.0)


def test_near_match_counts_as_relevant() -> None:
    scores = context_scores([PARIS_EDITED], [PARIS])

    assert scores == ContextScores(context_precision=pytest.approx(1.0), context_recall=1.0)


def test_irrelevant_contexts_score_low() -> None:
    scores = context_scores([PHOTOSYNTHESIS, WESTPHALIA], [PARIS, BERLIN])

    assert scores.context_precision < 0.2
    assert scores.context_recall < 0.2


def test_precision_is_rank_aware_and_recall_is_not() -> None:
    first = context_scores([PARIS, PHOTOSYNTHESIS, WESTPHALIA], [PARIS])
    last = context_scores([PHOTOSYNTHESIS, WESTPHALIA, PARIS], [PARIS])

    assert first.context_precision == pytest.approx(1.0)
    assert last.context_precision == pytest.approx(1 / 3)
    assert first.context_recall == last.context_recall == 1.0


def test_partial_coverage_of_two_references_recalls_half() -> None:
    scores = context_scores([PARIS, PHOTOSYNTHESIS], [PARIS, BERLIN])

    assert scores.context_recall == pytest.approx(0.5)
    assert scores.context_precision == pytest.approx(1.0)  # the one relevant context is first


def test_threshold_decides_what_counts_as_relevant() -> None:
    lenient = context_scores([PARIS_EDITED], [PARIS], threshold=0.5)
    strict = context_scores([PARIS_EDITED], [PARIS], threshold=0.99)

    assert lenient.context_recall == 1.0
    assert strict == ContextScores(context_precision=0.0, context_recall=0.0)


def test_no_retrieved_contexts_scores_zero() -> None:
    assert context_scores([], [PARIS]) == ContextScores(context_precision=0.0, context_recall=0.0)


def test_no_reference_contexts_is_an_error() -> None:
    with pytest.raises(ValueError, match="no reference contexts"):
        context_scores([PARIS], [])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"measure": "cosine"}, "measure"),
        ({"max_context_chars": 0}, "max_context_chars"),
    ],
)
def test_bad_arguments_are_refused(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        context_scores([PARIS], [PARIS], **arguments)


def test_a_single_string_is_not_taken_for_a_list_of_contexts() -> None:
    with pytest.raises(TypeError):
        context_scores(PARIS, [PARIS])  # type: ignore[arg-type]


def test_other_string_measures_are_available() -> None:
    scores = context_scores([PARIS, PHOTOSYNTHESIS], [PARIS, BERLIN], measure="jaro_winkler")

    assert scores.context_precision == pytest.approx(1.0)
    assert 0.5 <= scores.context_recall <= 1.0


def test_very_long_contexts_are_cut_before_comparison() -> None:
    # Two 375,000-character texts take about 5 s per Levenshtein comparison uncut; they share
    # their first 10,050 characters, so under the default cap of 10,000 they are the same context.
    shared = (PARIS + " ") * 134
    long_retrieved = shared + PHOTOSYNTHESIS * 5_000
    long_reference = shared + WESTPHALIA * 5_000

    scores = context_scores([long_retrieved], [long_reference])
    cut_shorter = context_scores([long_retrieved], [long_reference], max_context_chars=40_000)

    assert scores.context_recall == 1.0
    assert cut_shorter.context_recall == 0.0  # past the shared prefix they differ


def test_evaluate_contexts_gives_per_question_scores_and_means() -> None:
    evaluation = evaluate_contexts(
        retrieved={
            "q1": [PARIS, BERLIN],
            "q2": [PHOTOSYNTHESIS, PARIS],
            "not-judged": [WESTPHALIA],
        },
        references={"q1": [PARIS, BERLIN], "q2": [PARIS, BERLIN], "q3": [WESTPHALIA]},
    )

    assert evaluation.questions == 3
    assert set(evaluation.per_question) == {"q1", "q2", "q3"}
    assert evaluation.per_question["q2"].context_precision == pytest.approx(0.5)
    assert evaluation.per_question["q2"].context_recall == pytest.approx(0.5)
    assert evaluation.per_question["q3"] == ContextScores(0.0, 0.0)  # nothing retrieved
    assert evaluation.mean_context_precision == pytest.approx(1.5 / 3)
    assert evaluation.mean_context_recall == pytest.approx(1.5 / 3)


def test_evaluate_contexts_names_a_question_without_references() -> None:
    with pytest.raises(ValueError, match="'q2'"):
        evaluate_contexts({"q1": [PARIS]}, {"q1": [PARIS], "q2": []})
    with pytest.raises(ValueError, match="no questions"):
        evaluate_contexts({"q1": [PARIS]}, {})


def test_callable_inside_a_running_event_loop_without_patching_asyncio() -> None:
    async def score_both_ways() -> tuple[ContextScores, ContextScores, bool]:
        from_sync = context_scores([PHOTOSYNTHESIS, PARIS], [PARIS])
        awaited = await acontext_scores([PHOTOSYNTHESIS, PARIS], [PARIS])
        # nest_asyncio marks every loop it patches; ragas' sync API would have applied it here.
        patched = hasattr(asyncio.get_running_loop(), "_nest_patched")
        return from_sync, awaited, patched

    from_sync, awaited, patched = asyncio.run(score_both_ways())

    assert from_sync == awaited
    assert from_sync.context_precision == pytest.approx(0.5)
    assert not patched


def test_callable_from_a_thread_without_an_event_loop() -> None:
    results: list[ContextScores] = []
    worker = threading.Thread(target=lambda: results.append(context_scores([PARIS], [PARIS])))
    worker.start()
    worker.join(timeout=60)

    assert results and results[0].context_recall == 1.0


@pytest.fixture()
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Record (and refuse) every non-loopback lookup or connection, including silenced ones.

    The session-wide guard in conftest raises, but ragas swallows errors from its telemetry, so
    a refused attempt would go unnoticed without this record.
    """
    attempts: list[Any] = []
    loopback = {"127.0.0.1", "::1", "localhost", None}

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in loopback:
            attempts.append(host)
            raise OSError(f"name lookup of {host!r} refused in tests")
        return original_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] not in loopback:
            attempts.append(address)
            raise OSError(f"connection to {address!r} refused in tests")
        return original_connect(self, address)

    original_getaddrinfo = socket.getaddrinfo
    original_connect = socket.socket.connect
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts


def test_scoring_sends_no_telemetry(
    network_attempts: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragas import _analytics

    for _ in range(12):  # more than ragas' telemetry batch of 10
        context_scores([PARIS], [PARIS])
    _analytics._analytics_batcher.flush()

    assert network_attempts == []

    # The recorder does see ragas' telemetry when it is on: the check above can fail.
    monkeypatch.setattr(_analytics, "do_not_track", lambda: False)
    context_scores([PARIS], [PARIS])
    _analytics._analytics_batcher.flush()

    assert network_attempts


def test_refuses_to_score_when_ragas_telemetry_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragas import _analytics

    monkeypatch.setattr(_analytics, "do_not_track", lambda: False)
    _ragas_metrics.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="RAGAS_DO_NOT_TRACK"):
            context_scores([PARIS], [PARIS])
    finally:
        _ragas_metrics.cache_clear()
