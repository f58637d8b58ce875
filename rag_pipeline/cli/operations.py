"""Commands that operate the platform: `db`, `ui`, `index`, `serve`, `api-key`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rag_pipeline.cli.common import _database_url, _reader, cli_actor
from rag_pipeline.lib import database
from rag_pipeline.settings import Settings, current_settings

if TYPE_CHECKING:
    import dagster as dg


def cmd_db(args: argparse.Namespace) -> int:
    if args.action == "start":
        url = database.start_embedded_server(args.data_dir)
        with database.connection(url):
            pass
        print(f"embedded PostgreSQL running: {url}")
    elif args.action == "stop":
        stopped = database.stop_embedded_server(args.data_dir)
        print("stopped" if stopped else "not running")
    elif args.action == "status":
        status = database.embedded_server_status(args.data_dir)
        print(json.dumps({k: str(v) for k, v in asdict(status).items()}, indent=2))
    elif args.action == "url":
        if args.dagster:
            print(database.embedded_dagster_storage_url(args.data_dir))
        else:
            print(database.start_embedded_server(args.data_dir))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from rag_pipeline.runner import REPO_ROOT, prepare_dagster_home

    home = prepare_dagster_home(current_settings().data_dir)
    print(
        f"DAGSTER_HOME={home}; storage on {database.redact_url(os.environ['RAG_DAGSTER_PG_URL'])}"
    )
    workspace = str(REPO_ROOT / "workspace.yaml")
    # The `dagster` next to this interpreter: the venv need not be activated.
    dagster = str(Path(sys.executable).with_name("dagster"))
    extra = [arg for arg in args.dagster_args if arg != "--"]
    os.execv(dagster, [dagster, "dev", "-w", workspace, *extra])
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from rag_pipeline.defs.indexes.history import (
        report_garbage_collection,
        report_serving_changes,
    )
    from rag_pipeline.lib import index_versions
    from rag_pipeline.lib.quality_gates import PROMOTION_CHECKS

    settings = current_settings()
    with database.connection(_database_url(settings)) as conn:
        if args.action == "status":
            active = index_versions.active_version_id(conn)
            print(f"serving version: {active}")
            for version in index_versions.list_versions(conn):
                failed = f" failed={version.failed_checks}" if version.failed_checks else ""
                print(
                    f"  v{version.version_id:<4} {version.status:<9}"
                    f" docs={version.document_count:<6} chunks={version.chunk_count:<7}"
                    f" created={version.created_at:%Y-%m-%d %H:%M:%S}"
                    f" model={version.model_key}{failed}"
                )
        elif args.action == "diff":
            version = args.version or index_versions.active_version_id(conn)
            if version is None:
                print("no index version yet", file=sys.stderr)
                return 1
            print(json.dumps(index_versions.version_diff(conn, version), indent=2))
        elif args.action == "promote":
            switched = index_versions.promote(
                conn,
                args.version,
                actor=cli_actor(),
                required_checks=PROMOTION_CHECKS,
                reason=args.reason,
            )
            print(f"version {args.version} is serving" + ("" if switched else " (already was)"))
            _publish_to_dagster(settings, lambda instance: report_serving_changes(instance, conn))
        elif args.action == "gc":
            keep = args.keep if args.keep is not None else settings.keep_index_versions
            report = index_versions.garbage_collect(conn, keep)
            print(json.dumps(asdict(report), indent=2))
            _publish_to_dagster(
                settings, lambda instance: report_garbage_collection(instance, conn, report, keep)
            )
        elif args.action == "rollback":
            previous = index_versions.rollback(conn, actor=cli_actor(), reason=args.reason)
            print(f"rolled back: version {previous} is serving")
            _publish_to_dagster(settings, lambda instance: report_serving_changes(instance, conn))
    return 0


def _publish_to_dagster(
    settings: Settings, publish: Callable[[dg.DagsterInstance], object]
) -> None:
    """Show a switch or GC done here on `active_index`'s page at once (the change itself is
    already committed; if Dagster's storage is unreachable, `serving_history_sensor` publishes
    promotions and rollbacks later)."""
    import dagster as dg

    from rag_pipeline.runner import prepare_dagster_home

    try:
        prepare_dagster_home(settings.data_dir)
        with dg.DagsterInstance.get() as instance:
            publish(instance)
    except Exception as error:  # the index change stands whatever Dagster's storage says
        print(f"warning: not recorded in the Dagster UI yet ({error})", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rag_pipeline.api import create_app

    settings = current_settings()
    host = args.host or settings.api_host
    port = args.port or settings.api_port
    # One process: the model and the connection pool are loaded once, and the per-key rate
    # limit is counted in this process's memory.
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    from rag_pipeline.lib import api_keys

    settings = current_settings()
    with database.connection(_database_url(settings)) as conn:
        if args.action == "create":
            access = _reader(settings, args.user, args.directory)
            created = api_keys.create_key(conn, access, args.label)
            key = created.key
            print(
                f"API key {key.key_id} for {key.user} (tenant {key.tenant}, "
                f"{', '.join(key.principals)}). Shown once, stored only hashed:",
                file=sys.stderr,
            )
            print(created.secret)
        elif args.action == "list":
            for key in api_keys.list_keys(conn, include_revoked=args.all):
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "live"
                label = f" label={key.label!r}" if key.label else ""
                print(
                    f"  {key.key_id:<5} {key.key_prefix}…  {key.user:<12} tenant={key.tenant}"
                    f" created={key.created_at:%Y-%m-%d %H:%M:%S} {state}{label}"
                )
        elif args.action == "revoke":
            revoked = api_keys.revoke_key(conn, args.key_id)
            print(f"API key {args.key_id} " + ("revoked" if revoked else "was already revoked"))
    return 0
