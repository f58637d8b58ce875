"""`GitConnector`: the `connector: git` entry, validating, scanning and fingerprinting a source.

A scan updates a remote's mirror, resolves the ref, reports the documents that went away since
the last indexed commit, then the documents of the commit's tree; its cursor is that commit. The
fingerprint is the ref's commit (asked of the remote without fetching) and a digest of the options.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import ClassVar

from rag_pipeline.lib.catalog import SourceConfig
from rag_pipeline.lib.connectors.base import RemovedDocument, ScannedItem, ScanState
from rag_pipeline.lib.connectors.git.options import parse_settings, public_url
from rag_pipeline.lib.connectors.git.repository import (
    open_repository,
    remote_head,
    resolve,
    update_mirror,
)
from rag_pipeline.lib.connectors.git.scan import CommitScan, Departures, find_departures


class GitConnector:
    """`connector: git`: the files of one commit of a git repository (see the package doc)."""

    name: ClassVar[str] = "git"
    option_keys: ClassVar[frozenset[str]] = frozenset(
        {"path", "url", "ref", "include", "exclude", "acl_rules", "mirror_dir"}
    )

    def validate(self, source: SourceConfig) -> None:
        settings = parse_settings(source)
        if settings.local_path is not None:
            open_repository(settings, source.where).close()

    def scan(self, source: SourceConfig, state: ScanState) -> Iterator[ScannedItem]:
        settings = parse_settings(source)
        if settings.remote_url is not None and settings.mirror_dir is not None:
            update_mirror(settings.remote_url, settings.mirror_dir, source.where)
        with open_repository(settings, source.where) as repo:
            commit_id, commit = resolve(repo, settings.ref, source.where)
            commit_sha = commit_id.decode()
            departures = find_departures(repo.object_store, state.cursor, commit, state)
            yield from self._removals(source, state, departures, commit_sha)
            scan = CommitScan(source, settings, state, repo.object_store, commit, departures)
            yield from scan.items()
        state.next_cursor = {"commit": commit_sha, "ref": settings.ref or "HEAD"}

    def _removals(
        self, source: SourceConfig, state: ScanState, departures: Departures, commit: str
    ) -> Iterator[RemovedDocument]:
        reasons = [
            (old, f"renamed to {new} in {commit}") for new, old in departures.renamed_from.items()
        ]
        reasons += [(old, f"deleted in commit {commit}") for old in departures.deleted]
        for old, reason in sorted(reasons):
            known = state.known.get(f"{source.name}:{old}")
            if known is not None and not known.deleted:
                yield RemovedDocument(f"{source.name}:{old}", reason)

    def fingerprint(self, source: SourceConfig) -> str:
        try:
            options = json.dumps(
                [str(source.path), dict(source.options), dict(source.defaults)],
                sort_keys=True,
                default=str,
            )
            settings = parse_settings(source)
            if settings.remote_url is not None:
                head = remote_head(settings)
            else:
                with open_repository(settings, source.where) as repo:
                    head = resolve(repo, settings.ref, source.where)[0].decode()
            return f"{head}:{hashlib.sha256(options.encode()).hexdigest()[:16]}"
        except Exception as error:  # a fingerprint never raises: the scan reports
            message = str(error)
            url = source.options.get("url")
            if isinstance(url, str) and url:
                message = message.replace(url, public_url(url))
            return f"unavailable:{type(error).__name__}:{message}"
