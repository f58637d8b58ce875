"""Freshness rules as pure functions: time is passed in, facts are built by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rag_pipeline.lib.freshness import (
    ChangeEvent,
    Promotion,
    ServedContent,
    change_outcomes,
    format_duration,
    parse_duration,
    plan_breaches,
    source_freshness,
    uncovered_late_changes,
)

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
ACL = ("group:staff",)


def change(
    event_id: int,
    doc: str,
    event: str,
    at: datetime,
    content: str | None = "h1",
    acl: tuple[str, ...] | None = ACL,
    source: str = "notes",
    quarantined: bool = False,
) -> ChangeEvent:
    return ChangeEvent(
        event_id=event_id,
        doc_id=doc,
        source=source,
        event=event,
        detected_at=at,
        content_hash=content,
        tenant="initech",
        acl_principals=acl,
        quarantined=quarantined,
    )


def served(content: str, acl: tuple[str, ...] = ACL) -> list[ServedContent]:
    return [ServedContent(content, "initech", frozenset(acl))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 1d6h ", timedelta(days=1, hours=6)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "x") == expected


@pytest.mark.parametrize("bad", ["", "0m", "30s", "1.5h", "h", "24", 24, None, "1m1h", "-2h"])
def test_bad_durations_are_refused_with_where_and_value(bad: object) -> None:
    with pytest.raises(ValueError, match=r"sources\[0\]") as error:
        parse_duration(bad, "sources[0]")
    assert repr(bad) in str(error.value)


def test_format_duration() -> None:
    assert format_duration(timedelta(seconds=42)) == "42s"
    assert format_duration(timedelta(hours=3, minutes=5)) == "3h 5m"
    assert format_duration(timedelta(days=1, hours=2)) == "1d 2h"
    assert format_duration(timedelta(hours=1)) == "1h"


def test_lag_runs_from_detection_to_the_first_promotion_holding_the_content() -> None:
    changes = [
        change(1, "notes:a", "added", T0, "a1"),
        change(2, "notes:a", "changed", T0 + timedelta(hours=1), "a2"),
        change(3, "notes:b", "changed", T0 + timedelta(hours=1), "b2"),
    ]
    promotions = [
        Promotion(1, T0 + timedelta(minutes=10)),  # has a1
        Promotion(2, T0 + timedelta(hours=3)),  # has a2, still b1
        Promotion(1, T0 + timedelta(hours=4)),  # a rollback: not "first" any more
    ]
    contents = {
        (1, "notes:a"): served("a1"),
        (1, "notes:b"): served("b1"),
        (2, "notes:a"): served("a2"),
        (2, "notes:b"): served("b1"),
    }
    outcomes = {o.change.event_id: o for o in change_outcomes(changes, promotions, contents)}
    assert outcomes[1].status == "searchable" and outcomes[1].lag == timedelta(minutes=10)
    assert outcomes[2].status == "searchable" and outcomes[2].lag == timedelta(hours=2)
    assert outcomes[2].version_id == 2
    assert outcomes[3].status == "pending"

    state = source_freshness(
        "notes",
        outcomes.values(),
        now=T0 + timedelta(hours=26),
        window=timedelta(days=7),
        target=timedelta(hours=24),
    )
    assert state.latest_lag == timedelta(hours=2) and state.latest_doc_id == "notes:a"
    assert state.max_lag == timedelta(hours=2)
    assert state.pending_changes == 1 and state.oldest_pending_doc_id == "notes:b"
    assert state.oldest_pending_age == timedelta(hours=25)
    assert state.breached and state.state == "breach"
    # The same facts one hour earlier: pending for 23 hours, within the 24-hour target.
    earlier = source_freshness(
        "notes",
        outcomes.values(),
        now=T0 + timedelta(hours=24),
        window=timedelta(days=7),
        target=timedelta(hours=24),
    )
    assert not earlier.breached and earlier.state == "ok"
    # No target: measured, never breached.
    untargeted = source_freshness(
        "notes",
        outcomes.values(),
        now=T0 + timedelta(days=9),
        window=timedelta(days=7),
        target=None,
    )
    assert untargeted.state == "no_target" and untargeted.pending_changes == 1
    # The window bounds the max lag, not the pending changes.
    assert untargeted.max_lag is None and untargeted.latest_lag == timedelta(hours=2)


def test_content_already_serving_is_searchable_at_detection() -> None:
    # A restored document (an unmounted share that came back) whose content the serving
    # version still holds is searchable the moment the scan restores it.
    changes = [change(1, "notes:a", "restored", T0 + timedelta(hours=2), "a1")]
    outcomes = change_outcomes(changes, [Promotion(7, T0)], {(7, "notes:a"): served("a1")})
    assert outcomes[0].status == "searchable" and outcomes[0].lag == timedelta(0)


def test_a_wider_acl_waits_for_a_version_built_after_it() -> None:
    wider = ("group:staff", "group:contractors")
    changes = [change(1, "notes:a", "metadata_changed", T0, "a1", acl=wider)]
    promotions = [Promotion(1, T0 - timedelta(hours=1)), Promotion(2, T0 + timedelta(hours=5))]
    contents = {(1, "notes:a"): served("a1"), (2, "notes:a"): served("a1", wider)}
    (outcome,) = change_outcomes(changes, promotions, contents)
    assert outcome.status == "searchable" and outcome.lag == timedelta(hours=5)
    # A narrower ACL takes effect at once (serving also checks the current ACL).
    narrower = [change(2, "notes:a", "metadata_changed", T0, "a1", acl=("group:staff",))]
    (outcome,) = change_outcomes(narrower, promotions, contents)
    assert outcome.lag == timedelta(0)


def test_a_later_change_searchable_first_settles_the_earlier_one() -> None:
    changes = [
        change(1, "notes:a", "changed", T0, "a1"),
        change(2, "notes:a", "changed", T0 + timedelta(hours=1), "a2"),
    ]
    promotions = [Promotion(5, T0 + timedelta(hours=3))]
    (first, second) = change_outcomes(changes, promotions, {(5, "notes:a"): served("a2")})
    assert first.status == second.status == "searchable"
    assert first.lag == timedelta(hours=3) and second.lag == timedelta(hours=2)


def test_removals_refusals_and_superseded_changes_are_never_pending() -> None:
    changes = [
        # Added, then deleted before any version held it: superseded, then removed.
        change(1, "notes:a", "added", T0, "a1"),
        change(2, "notes:a", "deleted", T0 + timedelta(hours=1), None),
        # Content a stage refused, and a document without an ACL: never served by design.
        change(3, "notes:b", "added", T0, "b1", quarantined=True),
        change(4, "notes:c", "added", T0, "c1", acl=()),
    ]
    outcomes = {o.change.event_id: o.status for o in change_outcomes(changes, [], {})}
    assert outcomes == {1: "superseded", 2: "removed", 3: "refused", 4: "refused"}
    state = source_freshness(
        "notes",
        [o for o in change_outcomes(changes, [], {})],
        now=T0 + timedelta(days=3),
        window=timedelta(days=7),
        target=timedelta(hours=1),
    )
    assert state.pending_changes == 0 and not state.breached and state.refused_changes == 2


def test_a_version_holding_the_content_only_after_a_deletion_does_not_count() -> None:
    changes = [
        change(1, "notes:a", "changed", T0, "a2"),
        change(2, "notes:a", "deleted", T0 + timedelta(hours=1), None),
    ]
    promotions = [Promotion(3, T0 + timedelta(hours=2))]
    outcomes = change_outcomes(changes, promotions, {(3, "notes:a"): served("a2")})
    assert [o.status for o in outcomes] == ["superseded", "removed"]


def test_breach_plan_opens_once_refreshes_and_resolves() -> None:
    changes = [change(1, "notes:a", "changed", T0, "a2", source="notes")]
    outcomes = change_outcomes(changes, [], {})
    target = timedelta(hours=1)
    late = source_freshness(
        "notes", outcomes, now=T0 + timedelta(hours=2), window=timedelta(days=1), target=target
    )
    fine = source_freshness(
        "wiki", [], now=T0 + timedelta(hours=2), window=timedelta(days=1), target=target
    )
    plan = plan_breaches([late, fine], open_sources=[])
    assert [s.source for s in plan.to_open] == ["notes"] and not plan.to_resolve
    plan = plan_breaches([late, fine], open_sources=["notes"])
    assert not plan.to_open and [s.source for s in plan.still_open] == ["notes"]
    settled = change_outcomes(
        changes, [Promotion(2, T0 + timedelta(hours=3))], {(2, "notes:a"): served("a2")}
    )
    back = source_freshness(
        "notes", settled, now=T0 + timedelta(hours=4), window=timedelta(days=1), target=target
    )
    assert back.latest_lag == timedelta(hours=3) and back.max_lag_within_target is False
    plan = plan_breaches([back, fine], open_sources=["notes", "gone"])
    assert plan.to_resolve == {
        "notes": "pending changes searchable again",
        "gone": "source no longer configured",
    }


def test_late_changes_are_listed_and_matched_against_recorded_breaches() -> None:
    changes = [
        change(1, "notes:a", "changed", T0, "a2"),
        change(2, "notes:b", "changed", T0 + timedelta(minutes=30), "b2"),
    ]
    promotions = [Promotion(2, T0 + timedelta(hours=2))]
    contents = {(2, "notes:a"): served("a2"), (2, "notes:b"): served("b2")}
    state = source_freshness(
        "notes",
        change_outcomes(changes, promotions, contents),
        now=T0 + timedelta(hours=3),
        window=timedelta(days=1),
        target=timedelta(hours=1, minutes=40),
    )
    # a: 2h > 1h40m, late; b: 1h30m, within target.
    assert [c.doc_id for c in state.late_changes] == ["notes:a"]
    assert state.late_changes[0].lag == timedelta(hours=2) and not state.breached
    searchable = T0 + timedelta(hours=2)
    # No breach recorded: uncovered. A breach open (or resolved after) when it became
    # searchable, covering its detection: covered. One resolved before, or about later
    # changes only: not.
    assert uncovered_late_changes(state.late_changes, []) == state.late_changes
    assert uncovered_late_changes(state.late_changes, [(T0, None)]) == []
    assert uncovered_late_changes(state.late_changes, [(T0, searchable)]) == []
    assert (
        uncovered_late_changes(state.late_changes, [(T0, searchable - timedelta(minutes=1))])
        == state.late_changes
    )
    assert (
        uncovered_late_changes(state.late_changes, [(T0 + timedelta(minutes=5), None)])
        == state.late_changes
    )
