"""The scan of one commit: why documents went away since the cursor, and the commit's documents.

- a path is selected by `include` / `exclude` globs (`**` spans folders); by default every file
  whose format `formats.py` supports. A file matching `include` whose format is not supported is
  quarantined `unsupported_format` rather than skipped: somebody asked for it.
- Incremental: a document's change token is its blob id. A path recorded with the same blob id
  and the same access metadata is reported unchanged without reading its blob. Quarantined
  documents carry no token, so they are judged again on every scan (the limit or the format table
  may have changed since).
- With the last indexed commit (the scan's cursor) still in the repository, a tree diff with
  rename detection between it and the new commit says why documents went away: a rename
  (`renamed to <new> in <commit>`, and the new document's `source_metadata.renamed_from`) or a
  deletion (`deleted in commit <commit>`: the scanned commit, the first indexed one without it).
- Symbolic links are not followed (quarantined `unsupported_format`); submodules are skipped with
  a warning; blobs above the size limit are quarantined `too_large`.

Document ids are `<source>:<path in the repository>`; `uri` is
`git+<repository URL>@<commit>#<path>` (for a local repository `git+file:///abs/repo@<commit>#p`),
the commit being the one scanned when this version of the document was read.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dulwich.diff_tree import CHANGE_ADD, CHANGE_DELETE, CHANGE_RENAME, RenameDetector, tree_changes
from dulwich.object_store import BaseObjectStore
from dulwich.objects import S_ISGITLINK, Blob, Commit

from rag_pipeline.lib.catalog import SourceConfig
from rag_pipeline.lib.connectors.access import item_metadata
from rag_pipeline.lib.connectors.base import (
    UNREAD_CONTENT_HASH,
    DiscoveredDocument,
    QuarantineReason,
    ScannedItem,
    ScanState,
    UnchangedDocument,
    content_hash,
)
from rag_pipeline.lib.connectors.filesystem import classify_content
from rag_pipeline.lib.connectors.formats import mime_type_for, supported_suffixes
from rag_pipeline.lib.connectors.git.options import Settings, matches


@dataclass(frozen=True)
class Departures:
    """Why paths of the last indexed commit are gone: renamed (new path -> old) or deleted."""

    renamed_from: Mapping[str, str]
    deleted: tuple[str, ...]


def find_departures(
    store: BaseObjectStore, cursor: Mapping[str, Any] | None, commit: Commit, state: ScanState
) -> Departures:
    previous = (cursor or {}).get("commit")
    if not isinstance(previous, str) or previous.encode() == commit.id:
        return Departures({}, ())
    try:
        old = store[previous.encode()]
    except (KeyError, ValueError):
        old = None
    if not isinstance(old, Commit):
        # History rewritten and collected, or another repository: the pipeline still removes
        # what is gone, without saying how it went.
        state.warnings.append(
            f"last indexed commit {previous} is not in the repository any more; "
            "renames and deletions are reported without their commit"
        )
        return Departures({}, ())
    # Trees only: a path that is merely gone, or merely new, reads no blob.
    changes = list(tree_changes(store, old.tree, commit.tree))
    kinds = {change.type for change in changes}
    if CHANGE_DELETE in kinds and CHANGE_ADD in kinds:
        # Something may have moved: dulwich's detector pairs identical blobs by id and similar
        # ones by content, which reads the blobs of the changed paths (never unchanged ones).
        changes = list(
            tree_changes(store, old.tree, commit.tree, rename_detector=RenameDetector(store))
        )
    renamed_from: dict[str, str] = {}
    deleted: list[str] = []
    for change in changes:
        if change.type == CHANGE_RENAME and change.old and change.new:
            old_path = change.old.path.decode("utf-8", "backslashreplace")
            renamed_from[change.new.path.decode("utf-8", "backslashreplace")] = old_path
        elif change.type == CHANGE_DELETE and change.old:
            deleted.append(change.old.path.decode("utf-8", "backslashreplace"))
    return Departures(renamed_from, tuple(sorted(deleted)))


def _path_text(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), False


class CommitScan:
    """The documents of one commit's tree, in tree order."""

    def __init__(
        self,
        source: SourceConfig,
        settings: Settings,
        state: ScanState,
        store: BaseObjectStore,
        commit: Commit,
        departures: Departures,
    ) -> None:
        self.source = source
        self.settings = settings
        self.state = state
        self.store = store
        self.commit = commit
        self.commit_sha = commit.id.decode()
        self.committed_at = datetime.fromtimestamp(commit.commit_time, tz=UTC)
        self.departures = departures

    def items(self) -> Iterator[ScannedItem]:
        for entry in self.store.iter_tree_contents(self.commit.tree):
            path, name_valid = _path_text(entry.path)
            if S_ISGITLINK(entry.mode):
                # A submodule is another repository (another ACL owner, another history).
                if self._in_scope(path):
                    self.state.warnings.append(
                        f"{self.source.name}: submodule {path!r} at {self.commit_sha} is skipped"
                        " (submodules are not followed)"
                    )
                continue
            if self._in_scope(path) and (self.settings.include or mime_type_for(path) is not None):
                yield self._item(path, name_valid, entry.mode, entry.sha)

    def _in_scope(self, path: str) -> bool:
        """Not excluded, and matching `include` when there is one."""
        if self.settings.include and not matches(self.settings.include, path):
            return False
        return not matches(self.settings.exclude, path)

    def _rule_entry(self, path: str) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = None
        for rule in self.settings.rules:
            if matches(rule.paths, path):
                entry = dict(rule.entry)  # the last matching rule wins
        return entry

    def _item(self, path: str, name_valid: bool, mode: int, blob_id: bytes) -> ScannedItem:
        source = self.source
        blob_sha = blob_id.decode()
        meta, access = item_metadata(
            source, self._rule_entry(path), path, f"{source.where} (defaults or acl_rules)"
        )
        metadata: dict[str, Any] = {
            "repository": self.settings.repository,
            "ref": self.settings.ref or "HEAD",
            "commit": self.commit_sha,
            "path": path,
            "blob": blob_sha,
        }
        if path in self.departures.renamed_from:
            metadata["renamed_from"] = self.departures.renamed_from[path]
        mime_type = mime_type_for(path)
        document = DiscoveredDocument(
            doc_id=f"{source.name}:{path}",
            source=source.name,
            uri=f"{self.settings.uri_base}@{self.commit_sha}#{quote(path, safe='/')}",
            relative_path=path,
            content_hash=UNREAD_CONTENT_HASH,
            byte_size=0,
            mime_type=mime_type,
            encoding=meta.encoding,
            owner=meta.owner,
            tenant=meta.tenant,
            acl_principals=meta.acl,
            title=meta.title,
            updated_at=meta.updated_at or self.committed_at,
            source_metadata=metadata,
            change_token=blob_sha,
        )
        # Reasons that need no bytes first: a refused document's blob is never read.
        reason = None
        if not name_valid:
            reason = QuarantineReason(
                "invalid_file_name", "path is not valid UTF-8, so no acl_rules glob can name it"
            )
        elif stat.S_ISLNK(mode):
            reason = QuarantineReason(
                "unsupported_format", "symbolic link (git mode 120000): links are not followed"
            )
        reason = reason or access
        if reason is None and mime_type is None:
            suffix = Path(path).suffix.lower() or "(no extension)"
            reason = QuarantineReason(
                "unsupported_format",
                f"unsupported file type {suffix!r} (included by 'include'); "
                f"supported: {supported_suffixes()}",
            )
        if reason is not None:
            return self._refused(document, reason)
        if self.state.unchanged(document.doc_id, document.change_token, document.metadata_hash):
            return UnchangedDocument(document.doc_id)
        return self._read(document, blob_id)

    def _read(self, document: DiscoveredDocument, blob_id: bytes) -> DiscoveredDocument:
        blob = self.store[blob_id]
        if not isinstance(blob, Blob):
            return self._refused(
                document,
                QuarantineReason("unreadable_file", f"object {blob_id.decode()} is not a blob"),
            )
        data = blob.as_raw_string()
        document.content_hash = content_hash(data)
        document.byte_size = len(data)
        limit = self.state.max_document_bytes
        if len(data) > limit:
            return self._refused(
                document,
                QuarantineReason(
                    "too_large",
                    f"blob is {len(data):,} bytes, above the limit of {limit:,} "
                    "(RAG_MAX_DOCUMENT_BYTES)",
                ),
            )
        problem = classify_content(data, document.mime_type, document.encoding)
        if problem is not None:
            return self._refused(document, problem)
        document.content = data
        return document

    @staticmethod
    def _refused(document: DiscoveredDocument, reason: QuarantineReason) -> DiscoveredDocument:
        # No change token: a refusal may depend on more than the blob (the size limit, the format
        # table), so the next scan judges it again instead of taking it as unchanged.
        refused = document.quarantined(reason)
        refused.change_token = None
        return refused
