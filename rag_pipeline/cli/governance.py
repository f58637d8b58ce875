"""Governance commands: `status` (freshness), `audit`, `erase`, `safety scan`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rag_pipeline.cli.common import _dagster_connection_factory, _database_url, _print_table
from rag_pipeline.lib import database
from rag_pipeline.settings import current_settings


def cmd_status(args: argparse.Namespace) -> int:
    """Per source: the freshness target, measured lag, pending changes, last scan, breaches."""
    import dagster as dg

    from rag_pipeline.defs.freshness.sensors import (
        FRESHNESS_HEADERS,
        freshness_rows,
        last_successful_scans,
    )
    from rag_pipeline.lib.catalog import load_sources
    from rag_pipeline.lib.freshness import parse_duration
    from rag_pipeline.lib.freshness_store import database_now, list_breaches, measure
    from rag_pipeline.runner import prepare_dagster_home

    settings = current_settings()
    window = parse_duration(args.window, "--window")
    targets = {source.name: source.freshness for source in load_sources(settings.sources_file)}
    prepare_dagster_home(settings.data_dir)
    try:
        with dg.DagsterInstance.get() as instance:
            scans = last_successful_scans(instance, sorted(targets))
    except Exception as error:
        # The scan times live in Dagster's storage; the lag does not need them.
        print(f"warning: last scan times unknown (Dagster storage: {error})", file=sys.stderr)
        scans = {}
    with database.connection(_database_url(settings)) as conn:
        states = measure(conn, targets, now=database_now(conn), window=window, last_scans=scans)
        open_breaches = {b.source: b for b in list_breaches(conn, open_only=True)}
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **state.as_dict(),
                        "pending_doc_ids": state.pending_doc_ids,
                        **(
                            {"open_breach": open_breaches[state.source].as_dict()}
                            if state.source in open_breaches
                            else {}
                        ),
                    }
                    for state in states
                ],
                indent=2,
            )
        )
        return 0
    _print_table(
        (*FRESHNESS_HEADERS, "breach recorded"),
        [
            (
                *row,
                f"since {open_breaches[state.source].detected_at:%Y-%m-%d %H:%M:%S}"
                if state.source in open_breaches
                else "-",
            )
            for row, state in zip(freshness_rows(states), states, strict=True)
        ],
    )
    print(
        "\nlag: from the scan that detected a change to the first serving version holding it; "
        f"max lag over the last {args.window}. Breaches are recorded by freshness_sla_sensor "
        "(the Dagster daemon runs it)."
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Promotions and rollbacks (who, why, versions, gates), overrides and erasures."""
    from rag_pipeline.lib.audit import KINDS, audit_trail

    settings = current_settings()
    kinds = args.kind or list(KINDS)
    with database.connection(_database_url(settings)) as conn:
        entries = audit_trail(conn, limit=args.limit, kinds=kinds)
    if args.json:
        print(json.dumps([entry.as_dict() for entry in entries], indent=2))
        return 0
    if not entries:
        print("no promotion, rollback, override or erasure recorded yet")
        return 0
    for entry in entries:
        if entry.kind in ("promotion", "rollback"):
            before = f"v{entry.from_version}" if entry.from_version is not None else "(none)"
            what = f"{entry.kind} {before} -> v{entry.to_version}"
            extra = f"gates: {entry.gates_summary}"
        elif entry.kind == "override":
            what = f"override of {entry.detail.get('check_name')} on v{entry.to_version}"
            extra = ", ".join(entry.detail.get("failures_overridden") or [])
        else:
            what = f"erasure of {entry.detail.get('doc_id')}"
            extra = json.dumps(entry.detail.get("rows_removed", {}), sort_keys=True)
        print(f"{entry.at:%Y-%m-%d %H:%M:%S}  {what}  by {entry.actor}")
        print(f"    why: {entry.reason or '(no reason given)'}")
        if extra:
            print(f"    {extra}")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    """Right to erasure: erase, verify again, or lift (rag_pipeline/lib/erasure.py)."""
    from rag_pipeline.lib import erasure, erasure_records

    settings = current_settings()
    requested_by = args.requested_by or os.environ.get("USER") or "cli"
    with database.connection(_database_url(settings)) as conn:
        if args.lift:
            erasure_records.lift_erasure(conn, args.lift, requested_by, args.reason or "")
            print(f"erasure of {args.lift} lifted: the next scan of its source ingests it again")
            return 0
        dagster, note = _dagster_connection_factory(settings)
        if args.verify:
            if not args.text_file:
                raise erasure_records.ErasureError("--verify needs --text-file (the erased text)")
            text = Path(args.text_file).read_text(encoding="utf-8", errors="replace")
            report = erasure.reverify(conn, args.verify, text, dagster, note)
        else:
            targets = erasure.resolve_targets(conn, args.doc or (), args.owner)
            report = erasure.erase_documents(
                conn,
                targets,
                args.reason or "",
                requested_by,
                dry_run=args.dry_run,
                dagster=dagster,
                dagster_note=note,
            )
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        verb = "would erase" if report.dry_run else "erased"
        for document in report.documents:
            removed = sum(document.rows_removed.values())
            print(f"{verb} {document.doc_id}: {removed} rows ({document.fragments} fragments)")
            for table, rows in document.rows_removed.items():
                print(f"    {table}: {rows}")
        if report.versions_updated:
            versions = ", ".join(map(str, report.versions_updated))
            print(f"index versions rewritten (memberships, counts, BM25 statistics): {versions}")
        if report.dagster is not None:
            rewritten = sum(report.dagster.values())
            print(
                f"Dagster event log: {rewritten} values rewritten (a separate, idempotent step; "
                "re-run it with `rag-pipeline erase --verify DOC --text-file FILE`)"
            )
    if report.dagster_note:
        print(f"warning: {report.dagster_note}", file=sys.stderr)
    if report.dry_run:
        return 0
    if report.hits:
        for hit in report.hits:
            print(
                f"error: text of the erased document still found in {hit.database}: "
                f"{hit.table}.{hit.column} ({hit.rows} rows)",
                file=sys.stderr,
            )
        return 1
    if not report.clean:
        return 1
    if not args.json:
        print(f"verified: no trace in any table of either database ({report.fragments} fragments)")
    return 0


def cmd_safety(args: argparse.Namespace) -> int:
    """`safety scan`: PII/secret spans and the injection verdict per JSON line; exit 2 on a
    malformed line (named), before any output is written."""
    from rag_pipeline.lib.safety.scan import ScanInputError, run_scan

    try:
        run_scan(Path(args.file), Path(args.output) if args.output else None, sys.stdout)
    except ScanInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
