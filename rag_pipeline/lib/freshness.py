"""Freshness: how long a change at a source takes to become searchable, and when that is too long.

Pure functions over facts read from Postgres (`rag_pipeline.lib.freshness_store` reads them):
the document events of each scan, the history of serving versions and what each version holds.
Time is always passed in (`now`), so every rule here is testable without a clock.

The measurement, per change (one `rag.document_events` row):

- It starts when the change was *detected*: the scan that recorded the event. A sidecar's
  `updated_at` is a declared value (often a publication date) and a file's mtime is not kept per
  event, so neither can say when the change happened; the time between the change and its scan is
  bounded by how often the source is scanned (`source_catalog_sensor` polls listings every
  minute), and `last_scan_at` is reported next to the lag.
- A change that adds content (`added`, `changed`, `restored`, `released`, `metadata_changed`)
  is *searchable* from the first moment the serving version holds that document content under a
  tenant equal to and an ACL covering what the event recorded: either the version already serving
  when it was detected (lag 0), or the first version promoted after it that does. A later change of
  the same document that becomes searchable first also makes the earlier one searchable (the
  reader sees a state at least as new).
- A removal (`deleted`, `source_removed`, `quarantined`) takes effect for readers in the scan's
  own transaction (`rag.readable_chunks` checks the current state), so it is never pending.
- A change whose content a stage refused (quarantine) or that has no ACL is never served by
  design: it is *refused*, not pending. A change replaced by a removal or a refusal before it
  became searchable is *superseded*.
- Anything else is *pending*: its age is `now - detected_at`.

A source breaches its target when its oldest pending change is older than the target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

CONTENT_EVENTS = frozenset({"added", "changed", "restored", "released", "metadata_changed"})
REMOVAL_EVENTS = frozenset({"deleted", "source_removed", "quarantined"})
# Dagster refuses a freshness policy window under one minute; a target under it would also be
# shorter than one sensor interval could ever observe.
MIN_TARGET = timedelta(minutes=1)
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
_UNITS = ("d", "h", "m")


def parse_duration(value: Any, where: str) -> timedelta:
    """`24h`, `90m`, `2d`, `1h30m` as a timedelta; a clear ValueError naming `where` otherwise.

    Whole days, hours and minutes only: seconds are below what a sensor evaluated every few
    minutes can observe, and a bare number would leave the unit to guesswork.
    """
    text = value.strip() if isinstance(value, str) else None
    match = _DURATION.match(text) if text else None
    if match is None or not any(match.groups()):
        raise ValueError(
            f"{where}: expected a duration such as '24h', '90m', '2d' or '1h30m' "
            f"(days d, hours h, minutes m), got {value!r}"
        )
    days, hours, minutes = (int(group or 0) for group in match.groups())
    duration = timedelta(days=days, hours=hours, minutes=minutes)
    if duration < MIN_TARGET:
        raise ValueError(f"{where}: must be at least 1m, got {value!r}")
    return duration


def format_duration(duration: timedelta) -> str:
    """Short human form, `1d 2h`, `3h 5m`, `42s`: for tables and metadata previews."""
    seconds = round(duration.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m"]
    return " ".join(part for part in parts if part and part != "0m") or "0m"


@dataclass(frozen=True)
class ChangeEvent:
    """One document event as the freshness measurement needs it."""

    event_id: int
    doc_id: str
    source: str
    event: str
    detected_at: datetime
    content_hash: str | None = None
    tenant: str | None = None
    acl_principals: tuple[str, ...] | None = None
    # The event's content is refused by some stage (quarantine) right now.
    quarantined: bool = False


@dataclass(frozen=True)
class ServedContent:
    """One document's content in one index version, with the access it is served under."""

    content_hash: str
    tenant: str
    acl_principals: frozenset[str]


@dataclass(frozen=True)
class Promotion:
    """From `switched_at` on, `version_id` served (until the next promotion or rollback)."""

    version_id: int
    switched_at: datetime


# (version_id, doc_id) -> the contents of that document in that version.
VersionContents = Mapping[tuple[int, str], Iterable[ServedContent]]


@dataclass(frozen=True)
class ChangeOutcome:
    change: ChangeEvent
    # searchable | pending | removed | refused | superseded
    status: str
    searchable_at: datetime | None = None
    version_id: int | None = None

    @property
    def lag(self) -> timedelta | None:
        if self.searchable_at is None:
            return None
        return max(self.searchable_at - self.change.detected_at, timedelta(0))


def _reflects(change: ChangeEvent, contents: Iterable[ServedContent]) -> bool:
    """The version serves this document content to (at least) the readers the event allowed."""
    for content in contents:
        if content.content_hash != change.content_hash:
            continue
        if change.tenant is not None and content.tenant != change.tenant:
            continue
        if change.acl_principals is not None and not set(change.acl_principals).issubset(
            content.acl_principals
        ):
            continue
        return True
    return False


def _first_serving(
    change: ChangeEvent,
    promotions: Sequence[Promotion],
    contents: VersionContents,
    before: datetime | None,
) -> tuple[datetime, int] | None:
    """The first moment at or after detection (and before `before`) a serving version holds it."""
    serving_at_detection: Promotion | None = None
    later: list[Promotion] = []
    for promotion in promotions:
        if promotion.switched_at <= change.detected_at:
            serving_at_detection = promotion
        else:
            later.append(promotion)
    candidates = ([serving_at_detection] if serving_at_detection else []) + later
    for promotion in candidates:
        moment = max(promotion.switched_at, change.detected_at)
        if before is not None and moment >= before:
            return None
        if _reflects(change, contents.get((promotion.version_id, change.doc_id), ())):
            return moment, promotion.version_id
    return None


def _never_served(change: ChangeEvent) -> bool:
    return change.quarantined or (
        change.acl_principals is not None and len(change.acl_principals) == 0
    )


def change_outcomes(
    changes: Iterable[ChangeEvent],
    promotions: Iterable[Promotion],
    contents: VersionContents,
) -> list[ChangeOutcome]:
    """What became of each change: searchable (when, in which version), pending, or neither.

    `promotions` is every switch of the serving pointer (promotions and rollbacks); `contents`
    holds, per (version, document), what the version serves. See the module docstring for the
    rules.
    """
    ordered_promotions = sorted(promotions, key=lambda p: p.switched_at)
    by_document: dict[str, list[ChangeEvent]] = {}
    for change in changes:
        by_document.setdefault(change.doc_id, []).append(change)
    outcomes: list[ChangeOutcome] = []
    for history in by_document.values():
        history.sort(key=lambda c: (c.detected_at, c.event_id))
        # Walk backwards: each change knows the first removal or refusal after it, and the
        # earliest moment it or a later change (before that boundary) became searchable.
        boundary: datetime | None = None
        best: tuple[datetime, int] | None = None
        reversed_outcomes: list[ChangeOutcome] = []
        for change in reversed(history):
            if change.event in REMOVAL_EVENTS:
                reversed_outcomes.append(ChangeOutcome(change, "removed", change.detected_at))
                boundary, best = change.detected_at, None
                continue
            if change.event not in CONTENT_EVENTS:
                continue  # an event kind this measurement does not know says nothing either way
            if _never_served(change):
                reversed_outcomes.append(ChangeOutcome(change, "refused"))
                boundary, best = change.detected_at, None
                continue
            own = _first_serving(change, ordered_promotions, contents, boundary)
            if own is not None and (best is None or own[0] <= best[0]):
                best = own
            if best is not None:
                reversed_outcomes.append(ChangeOutcome(change, "searchable", best[0], best[1]))
            elif boundary is not None:
                reversed_outcomes.append(ChangeOutcome(change, "superseded"))
            else:
                reversed_outcomes.append(ChangeOutcome(change, "pending"))
        outcomes.extend(reversed(reversed_outcomes))
    return outcomes


@dataclass(frozen=True)
class LateChange:
    """A change that became searchable, but later than its source's target allowed."""

    doc_id: str
    event: str
    detected_at: datetime
    searchable_at: datetime
    lag: timedelta


@dataclass(frozen=True)
class SourceFreshness:
    """One source's freshness at `evaluated_at`, against its target (None: no SLA declared)."""

    source: str
    evaluated_at: datetime
    window: timedelta
    target: timedelta | None
    last_scan_at: datetime | None
    changes_searchable_in_window: int
    latest_lag: timedelta | None
    latest_searchable_at: datetime | None
    latest_doc_id: str | None
    max_lag: timedelta | None
    pending_changes: int
    pending_documents: int
    oldest_pending_change_at: datetime | None
    oldest_pending_doc_id: str | None
    oldest_pending_event: str | None
    refused_changes: int
    pending_doc_ids: list[str] = field(default_factory=list)
    # Changes searchable within the window whose lag exceeded the target, oldest first: a breach
    # that began and ended between two evaluations is still recorded from these.
    late_changes: list[LateChange] = field(default_factory=list)
    # Live, servable documents whose current content the serving version lacks right now (for
    # example after a rollback): their changes were searchable once, so they are not pending,
    # but search serves an older state of them.
    documents_behind_serving: int = 0

    @property
    def oldest_pending_age(self) -> timedelta | None:
        if self.oldest_pending_change_at is None:
            return None
        return max(self.evaluated_at - self.oldest_pending_change_at, timedelta(0))

    @property
    def current_lag(self) -> timedelta:
        """How far behind the source search is now: the oldest pending change's age, or 0."""
        return self.oldest_pending_age or timedelta(0)

    @property
    def breached(self) -> bool:
        return self.target is not None and self.current_lag > self.target

    @property
    def state(self) -> str:
        if self.target is None:
            return "no_target"
        return "breach" if self.breached else "ok"

    @property
    def max_lag_within_target(self) -> bool | None:
        if self.target is None or self.max_lag is None:
            return None
        return self.max_lag <= self.target

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; durations in seconds, times in ISO 8601; absent facts are left out."""

        def seconds(value: timedelta | None) -> float | None:
            return round(value.total_seconds(), 3) if value is not None else None

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        data: dict[str, Any] = {
            "source": self.source,
            "state": self.state,
            "evaluated_at": iso(self.evaluated_at),
            "target_seconds": seconds(self.target),
            "current_lag_seconds": seconds(self.current_lag),
            "window_seconds": seconds(self.window),
            "last_scan_at": iso(self.last_scan_at),
            "changes_searchable_in_window": self.changes_searchable_in_window,
            "latest_lag_seconds": seconds(self.latest_lag),
            "latest_searchable_at": iso(self.latest_searchable_at),
            "latest_doc_id": self.latest_doc_id,
            "max_lag_seconds": seconds(self.max_lag),
            "max_lag_within_target": self.max_lag_within_target,
            "pending_changes": self.pending_changes,
            "pending_documents": self.pending_documents,
            "oldest_pending_change_at": iso(self.oldest_pending_change_at),
            "oldest_pending_age_seconds": seconds(self.oldest_pending_age),
            "oldest_pending_doc_id": self.oldest_pending_doc_id,
            "oldest_pending_event": self.oldest_pending_event,
            "refused_changes": self.refused_changes,
            "documents_behind_serving": self.documents_behind_serving,
        }
        return {key: value for key, value in data.items() if value is not None}


def source_freshness(
    source: str,
    outcomes: Iterable[ChangeOutcome],
    *,
    now: datetime,
    window: timedelta,
    target: timedelta | None,
    last_scan_at: datetime | None = None,
) -> SourceFreshness:
    """Summarise one source's change outcomes at `now`.

    Latest lag: the change that became searchable last (ties: the one detected last). Max lag:
    over the changes that became searchable within `window` before `now`. Pending: every pending
    change, however old (an old one is exactly what an SLA is for).
    """
    mine = [outcome for outcome in outcomes if outcome.change.source == source]
    searchable = [o for o in mine if o.status == "searchable" and o.searchable_at is not None]
    recent = [o for o in searchable if o.searchable_at and o.searchable_at >= now - window]
    latest = max(
        searchable,
        key=lambda o: (o.searchable_at, o.change.detected_at, o.change.event_id),
        default=None,
    )
    pending = sorted(
        (o for o in mine if o.status == "pending"),
        key=lambda o: (o.change.detected_at, o.change.event_id),
    )
    oldest = pending[0].change if pending else None
    lags = [o.lag for o in recent if o.lag is not None]
    late = sorted(
        (
            LateChange(
                o.change.doc_id, o.change.event, o.change.detected_at, o.searchable_at, o.lag
            )
            for o in recent
            if target is not None and o.lag is not None and o.lag > target and o.searchable_at
        ),
        key=lambda change: (change.detected_at, change.doc_id),
    )
    return SourceFreshness(
        source=source,
        evaluated_at=now,
        window=window,
        target=target,
        last_scan_at=last_scan_at,
        changes_searchable_in_window=len(recent),
        latest_lag=latest.lag if latest else None,
        latest_searchable_at=latest.searchable_at if latest else None,
        latest_doc_id=latest.change.doc_id if latest else None,
        max_lag=max(lags) if lags else None,
        pending_changes=len(pending),
        pending_documents=len({o.change.doc_id for o in pending}),
        oldest_pending_change_at=oldest.detected_at if oldest else None,
        oldest_pending_doc_id=oldest.doc_id if oldest else None,
        oldest_pending_event=oldest.event if oldest else None,
        refused_changes=sum(1 for o in mine if o.status == "refused"),
        pending_doc_ids=sorted({o.change.doc_id for o in pending}),
        late_changes=late,
    )


@dataclass(frozen=True)
class BreachPlan:
    """What the breach recorder must do: open these, resolve those (source -> why), refresh."""

    to_open: list[SourceFreshness]
    to_resolve: dict[str, str]
    still_open: list[SourceFreshness]


def plan_breaches(states: Iterable[SourceFreshness], open_sources: Iterable[str]) -> BreachPlan:
    """Compare the measured states with the breaches recorded as open.

    A breached source with no open breach opens one; a breach that goes on is refreshed, never
    duplicated; an open breach is resolved when its source is back within its target, lost its
    target, or is no longer configured (it is then not among `states`).
    """
    states = list(states)
    open_now = set(open_sources)
    measured = {s.source: s for s in states}
    to_resolve: dict[str, str] = {}
    for name in sorted(open_now):
        state = measured.get(name)
        if state is None:
            to_resolve[name] = "source no longer configured"
        elif state.target is None:
            to_resolve[name] = "source has no freshness target any more"
        elif not state.breached:
            to_resolve[name] = (
                "pending changes searchable again"
                if state.pending_changes == 0
                else "oldest pending change within target again"
            )
    return BreachPlan(
        to_open=[s for s in states if s.breached and s.source not in open_now],
        to_resolve=to_resolve,
        still_open=[s for s in states if s.breached and s.source in open_now],
    )


def uncovered_late_changes(
    late: Iterable[LateChange], breaches: Iterable[tuple[datetime, datetime | None]]
) -> list[LateChange]:
    """The late changes no recorded breach of their source accounts for.

    `breaches` are (oldest pending change at, resolved at or None) of the source's breaches. A
    breach accounts for a change if it covers the change's detection (its oldest pending change
    is no newer) and was still open when the change became searchable. A change late only
    between two evaluations (pending past its target, searchable before the next tick) is
    covered by none: the recorder then records it after the fact, once.
    """
    recorded = list(breaches)
    return [
        change
        for change in late
        if not any(
            oldest <= change.detected_at and (resolved is None or resolved >= change.searchable_at)
            for oldest, resolved in recorded
        )
    ]
