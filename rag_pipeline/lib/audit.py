"""The audit trail: who switched the serving index, why, and what the gates said; overrides of a
failed quality gate; erasures.

Read from what the pipeline already records, never from a separate log that could drift:
`rag.index_promotions` (every promotion and rollback, with actor and reason),
`rag.index_version_checks` (each gate's result for each version; an override of the quality
gate is stored in its `detail` with the run id and reason) and, where the erasure migration is
installed, `rag.erasure_tombstones`. Shown by `rag-pipeline audit` and in `active_index`
metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

KINDS = ("promotion", "rollback", "override", "erasure")


@dataclass(frozen=True)
class GateResult:
    check_name: str
    passed: bool
    blocking: bool
    checked_at: datetime
    overridden: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "check_name": self.check_name,
            "passed": self.passed,
            "blocking": self.blocking,
            "checked_at": self.checked_at.isoformat(),
            "overridden": self.overridden,
        }


@dataclass(frozen=True)
class AuditEntry:
    kind: str
    at: datetime
    actor: str
    reason: str | None
    from_version: int | None = None
    to_version: int | None = None
    gates: list[GateResult] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def gates_summary(self) -> str:
        """`6/6 passed`, or the failed and overridden gates by name."""
        if not self.gates:
            return "no gate recorded"
        failed = [g.check_name for g in self.gates if not g.passed]
        overridden = [g.check_name for g in self.gates if g.overridden]
        parts = [f"{sum(g.passed for g in self.gates)}/{len(self.gates)} passed"]
        if failed:
            parts.append(f"failed: {', '.join(failed)}")
        if overridden:
            parts.append(f"overridden: {', '.join(overridden)}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "reason": self.reason,
            "from_version": self.from_version,
            "to_version": self.to_version,
        }
        if self.gates:
            data["gates"] = [gate.as_dict() for gate in self.gates]
            data["gates_summary"] = self.gates_summary
        if self.detail:
            data["detail"] = self.detail
        return {key: value for key, value in data.items() if value is not None}


def _gates(conn: psycopg.Connection, version_ids: Sequence[int]) -> dict[int, list[GateResult]]:
    rows = conn.execute(
        """
        SELECT version_id, check_name, passed, blocking, checked_at,
               detail -> 'override' IS NOT NULL
        FROM rag.index_version_checks
        WHERE version_id = ANY(%s::bigint[])
        ORDER BY version_id, check_name
        """,
        (list(version_ids),),
    ).fetchall()
    gates: dict[int, list[GateResult]] = {}
    for version_id, name, passed, blocking, checked_at, overridden in rows:
        gates.setdefault(int(version_id), []).append(
            GateResult(name, passed, blocking, checked_at, overridden)
        )
    return gates


def _switches(conn: psycopg.Connection, kinds: set[str], limit: int) -> list[AuditEntry]:
    actions = [
        action
        for kind, action in (("promotion", "promote"), ("rollback", "rollback"))
        if kind in kinds
    ]
    if not actions:
        return []
    rows = conn.execute(
        """
        SELECT promotion_id, action, from_version, to_version, actor, reason, switched_at
        FROM rag.index_promotions
        WHERE action = ANY(%s::text[])
        ORDER BY switched_at DESC, promotion_id DESC
        LIMIT %s
        """,
        (actions, limit),
    ).fetchall()
    gates = _gates(conn, sorted({int(row[3]) for row in rows}))
    entries = []
    for promotion_id, action, from_version, to_version, actor, reason, switched_at in rows:
        version_gates = gates.get(int(to_version), [])
        entries.append(
            AuditEntry(
                kind="promotion" if action == "promote" else "rollback",
                at=switched_at,
                actor=actor,
                reason=reason,
                from_version=int(from_version) if from_version is not None else None,
                to_version=int(to_version),
                gates=version_gates,
                detail={
                    "promotion_id": int(promotion_id),
                    # A gate re-run after the switch shows its newer result: say so.
                    "gates_rechecked_after_switch": sorted(
                        g.check_name for g in version_gates if g.checked_at > switched_at
                    ),
                },
            )
        )
    return entries


def _overrides(conn: psycopg.Connection, limit: int) -> list[AuditEntry]:
    rows = conn.execute(
        """
        SELECT version_id, check_name, checked_at, detail -> 'override' ->> 'run_id',
               detail -> 'override' ->> 'reason', detail -> 'failures'
        FROM rag.index_version_checks
        WHERE detail -> 'override' IS NOT NULL
        ORDER BY checked_at DESC, version_id DESC
        LIMIT %s
        """,
        (limit,),
    ).fetchall()
    return [
        AuditEntry(
            kind="override",
            at=checked_at,
            actor=f"dagster run {run_id}" if run_id else "unknown (no run id recorded)",
            reason=reason,
            to_version=int(version_id),
            detail={
                "check_name": check_name,
                **({"run_id": run_id} if run_id else {}),
                **({"failures_overridden": failures} if failures else {}),
            },
        )
        for version_id, check_name, checked_at, run_id, reason, failures in rows
    ]


def erasure_table_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('rag.erasure_tombstones') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _erasures(conn: psycopg.Connection, limit: int) -> list[AuditEntry]:
    if not erasure_table_exists(conn):
        return []
    rows = conn.execute(
        """
        SELECT erasure_id, doc_id, source, tenant, requested_by, reason, erased_at, rows_removed
        FROM rag.erasure_tombstones
        ORDER BY erased_at DESC
        LIMIT %s
        """,
        (limit,),
    ).fetchall()
    return [
        AuditEntry(
            kind="erasure",
            at=erased_at,
            actor=requested_by,
            reason=reason,
            detail={
                "erasure_id": str(erasure_id),
                "doc_id": doc_id,
                "source": source,
                "tenant": tenant,
                **({"rows_removed": removed} if removed is not None else {}),
            },
        )
        for erasure_id, doc_id, source, tenant, requested_by, reason, erased_at, removed in rows
    ]


def audit_trail(
    conn: psycopg.Connection, *, limit: int = 20, kinds: Sequence[str] = KINDS
) -> list[AuditEntry]:
    """The newest `limit` entries of the chosen kinds, newest first."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown audit kinds {unknown}; known: {list(KINDS)}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1 (got {limit})")
    wanted = set(kinds)
    entries = _switches(conn, wanted, limit)
    if "override" in wanted:
        entries += _overrides(conn, limit)
    if "erasure" in wanted:
        entries += _erasures(conn, limit)
    entries.sort(key=lambda entry: entry.at, reverse=True)
    return entries[:limit]


def audit_markdown(entries: Sequence[AuditEntry]) -> str:
    """A table for Dagster metadata: when, what, who, why, versions, gates."""
    if not entries:
        return "No promotion, rollback, override or erasure recorded yet."
    lines = [
        "| when (UTC) | what | who | why | versions | gates |",
        "|---|---|---|---|---|---|",
    ]
    for entry in entries:
        versions = (
            f"{entry.from_version if entry.from_version is not None else '(none)'} → "
            f"{entry.to_version}"
            if entry.kind in ("promotion", "rollback")
            else (f"v{entry.to_version}" if entry.to_version is not None else "")
        )
        what = entry.kind
        if entry.kind == "erasure":
            what = f"erasure of `{entry.detail.get('doc_id')}`"
        elif entry.kind == "override":
            what = f"override of `{entry.detail.get('check_name')}`"
        cells = [
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            what,
            entry.actor,
            entry.reason or "(no reason given)",
            versions,
            entry.gates_summary if entry.kind in ("promotion", "rollback") else "",
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
