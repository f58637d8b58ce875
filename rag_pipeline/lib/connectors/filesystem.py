"""The filesystem connector: turn a folder and its sidecar metadata into document records.

Every file becomes exactly one `DiscoveredDocument`. Files the pipeline must not ingest (empty,
too large, binary junk under a text name, undecodable text, unknown formats, missing or doubtful
access control, unreadable files, names that are not UTF-8) are returned with a
`QuarantineReason` instead of being skipped silently, so that they are visible and auditable.

One bad file never fails its source. Only a problem with the source as a whole raises
`ConfigurationError`, which fails that source's partition and no other: its folder is missing or
cannot be listed, it has no `tenants` in `sources.yaml`, or its `_metadata.yaml` cannot be read as
a mapping of `defaults` and `documents` (or `defaults` has an unknown key).

Access metadata, and how it fails closed:

- The source's own defaults (`tenant`, `acl`, `owner` in its `sources.yaml` entry) apply to every
  file; `defaults` in `_metadata.yaml` override them field by field (so a source needs no
  sidecar at all) and also apply to every file. A `documents` entry applies
  to the file whose path (relative to the source folder, `/`-separated) is exactly its key, and
  overrides the defaults field by field.
- Owner rule: a per-document `acl` replaces both the defaults' `acl` and the defaults' `owner`.
  The document's own `owner` (or, when the document has no `acl` of its own, the defaults'
  `owner`) is added to its ACL; nobody else is.
- The document's `tenant` must be one of the `tenants` its source lists in `sources.yaml`, else
  it is quarantined `tenant_not_allowed`.
- A file is quarantined `sidecar_mismatch`, never given the defaults, when the sidecar may have
  meant it: it has no entry of its own and a stale entry (one naming no file) names its path
  up to letter case or Unicode normalisation, or names a file of the same name in another
  folder. `stores.sources.sync_source` adds the third case: a file with no entry whose bytes
  equal those of a recorded document of the same source whose entry is now stale (a rename).
- Each field is type-checked per entry (`title` a string, `owner` one principal, `acl` a list
  of principals, `tenant` a string, `updated_at` an ISO 8601 timestamp, `encoding` a text codec
  name) and an entry with an unknown key or a bad value quarantines just its file
  (`invalid_metadata`, `invalid_acl`, `unknown_encoding`), with a message naming the field and
  the expected type.
- A document quarantined because its name or metadata cannot be trusted
  (`ACCESS_UNCERTAIN_CODES`) is recorded with an empty ACL and no owner: nobody may read it,
  whichever index version serves.

Doc ids are `<source>:<relative path>` and always valid UTF-8 text: the bytes of a file name that
are not UTF-8 are written as `\\xNN` escapes (deterministically), and the file is quarantined
`invalid_file_name`, since no sidecar entry can name it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar

import yaml

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig, check_source
from rag_pipeline.lib.connectors.access import (
    METADATA_KEYS,
    access_problem,
    resolve_metadata,
)
from rag_pipeline.lib.connectors.base import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    EPOCH,
    UNREAD_CONTENT_HASH,
    DiscoveredDocument,
    QuarantineReason,
    ScanState,
    content_hash,
)
from rag_pipeline.lib.connectors.formats import TEXT_MIME_TYPES, mime_type_for, supported_suffixes

SIDECAR_FILE = "_metadata.yaml"
_SIDECAR_KEYS = {"defaults", "documents"}
_EPOCH = EPOCH


def _hash_stream(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def load_sidecar(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `defaults` and the raw per-document entries of a source folder's `_metadata.yaml`.

    Raises `ConfigurationError` only when the file as a whole is unusable: not YAML, not a
    mapping, an unknown top-level key (a misspelt `documents:` would silently hand every file
    the defaults), or `defaults` not a mapping of known keys (they apply to every file). Each
    `documents` entry is validated when its file is scanned, so one bad entry quarantines one
    file.
    """
    path = folder / SIDECAR_FILE
    if not path.exists():
        return {}, {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path}: not valid YAML: {error}") from error
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot be read: {error}") from error
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{path}: expected a mapping with 'defaults' and 'documents'")
    unknown = sorted(str(key) for key in set(loaded) - _SIDECAR_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown top-level keys {unknown}; expected 'defaults' and 'documents'"
        )
    defaults = loaded.get("defaults") or {}
    documents = loaded.get("documents") or {}
    if not isinstance(defaults, dict) or not isinstance(documents, dict):
        raise ConfigurationError(f"{path}: 'defaults' and 'documents' must be mappings")
    unknown = sorted(str(key) for key in set(defaults) - set(METADATA_KEYS))
    if unknown:
        raise ConfigurationError(
            f"{path}: entry 'defaults' has unknown keys {unknown}; known: {list(METADATA_KEYS)}"
        )
    return defaults, {str(key): value for key, value in documents.items()}


@dataclass(frozen=True)
class _ListedFile:
    path: bytes  # absolute, as the file system spells it
    relative: str  # '/'-separated, valid UTF-8 text (undecodable bytes escaped)
    name_valid: bool
    problem: QuarantineReason | None = None


def _relative_text(parts: tuple[bytes, ...]) -> tuple[str, bool]:
    raw = b"/".join(parts)
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), False


def _is_private(parts: tuple[bytes, ...]) -> bool:
    return any(part.startswith((b".", b"_")) for part in parts)


def _list_files(root: Path) -> list[_ListedFile]:
    """Every candidate file under `root`, in a stable order; reads no contents.

    Names starting with `.` or `_` (the sidecar, drafts, VCS folders) are skipped. Symbolic links
    are followed only to files inside the source folder: a link could otherwise leak files
    nobody configured, and links to folders are not followed (their files are listed where they
    really are, and a link to an ancestor would loop). A subfolder that cannot be listed becomes
    one quarantine record; only the source folder itself failing to list raises.
    """
    real_root = os.path.realpath(os.fsencode(root))
    found: list[_ListedFile] = []

    def visit(folder: bytes, parts: tuple[bytes, ...]) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            if not parts:
                raise ConfigurationError(
                    f"{root}: cannot list the source folder: {error}"
                ) from error
            relative, valid = _relative_text(parts)
            found.append(
                _ListedFile(
                    folder,
                    relative,
                    valid,
                    QuarantineReason(
                        "unreadable_file", f"folder cannot be listed: {error.strerror}"
                    ),
                )
            )
            return
        for entry in entries:
            entry_parts = (*parts, entry.name)
            if _is_private((entry.name,)):
                continue
            relative, valid = _relative_text(entry_parts)
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    inside = os.path.relpath(target, real_root)
                    if inside in (b".", b"..") or inside.startswith(b"../"):
                        continue
                    if _is_private(tuple(inside.split(b"/"))):
                        continue
                    try:
                        if stat.S_ISDIR(os.stat(entry.path).st_mode):
                            continue
                    except OSError:
                        pass  # a loop or a dangling link: reading it will say which
                    found.append(_ListedFile(entry.path, relative, valid))
                elif entry.is_dir(follow_symlinks=False):
                    visit(entry.path, entry_parts)
                else:
                    found.append(_ListedFile(entry.path, relative, valid))
            except OSError as error:
                found.append(
                    _ListedFile(
                        entry.path,
                        relative,
                        valid,
                        QuarantineReason("unreadable_file", f"cannot inspect: {error.strerror}"),
                    )
                )

    visit(os.fsencode(root), ())
    return found


@dataclass(frozen=True)
class _ReadResult:
    content: bytes | None
    digest: str
    size: int
    mtime: datetime
    problem: QuarantineReason | None = None


def _read_file(path: bytes, max_document_bytes: int) -> _ReadResult:
    """The bytes (or only the hash, above the size limit) of one listed file; never raises."""
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        return _unread(path, _read_error(error))
    try:
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            mtime = datetime.fromtimestamp(info.st_mtime, tz=UTC)
            if not stat.S_ISREG(info.st_mode):
                return _ReadResult(
                    None,
                    UNREAD_CONTENT_HASH,
                    0,
                    mtime,
                    QuarantineReason("unreadable_file", "not a regular file"),
                )
            if info.st_size > max_document_bytes:
                return _ReadResult(None, _hash_stream(handle), info.st_size, mtime)
            data = handle.read()
            return _ReadResult(data, content_hash(data), len(data), mtime)
    except OSError as error:
        return _unread(path, _read_error(error))


def _read_error(error: OSError) -> QuarantineReason:
    if error.errno == errno.ELOOP:
        return QuarantineReason("symlink_loop", "symbolic link loop: the link never reaches a file")
    if error.errno == errno.ENOENT:
        return QuarantineReason(
            "unreadable_file", "file vanished while scanning, or a symbolic link to nothing"
        )
    return QuarantineReason("unreadable_file", f"cannot read: {error.strerror}")


def _unread(path: bytes, problem: QuarantineReason) -> _ReadResult:
    try:
        mtime = datetime.fromtimestamp(os.lstat(path).st_mtime, tz=UTC)
    except OSError:
        mtime = _EPOCH
    return _ReadResult(None, UNREAD_CONTENT_HASH, 0, mtime, problem)


def _fold(text: str) -> str:
    """A path as a person would read it: case, Unicode form and separator style ignored."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    folded = folded.replace("\\", "/")
    while folded.startswith("./"):
        folded = folded[2:]
    return folded


class _SidecarMatcher:
    """Finds the stale sidecar entry (one naming no file) that may have been meant for a file."""

    def __init__(self, stale_entries: set[str]) -> None:
        self._by_path: dict[str, str] = {}
        self._by_name: dict[str, list[str]] = {}
        for key in sorted(stale_entries):
            folded = _fold(key)
            self._by_path.setdefault(folded, key)
            self._by_name.setdefault(PurePosixPath(folded).name, []).append(key)

    def mismatch(self, relative: str) -> QuarantineReason | None:
        folded = _fold(relative)
        key = self._by_path.get(folded)
        if key is not None:
            return QuarantineReason(
                "sidecar_mismatch",
                f"{SIDECAR_FILE} has an entry {key!r} that differs from this file's path "
                f"{relative!r} only in letter case or Unicode form; make the entry's key match "
                "the file name exactly",
            )
        keys = self._by_name.get(PurePosixPath(folded).name)
        if keys:
            return QuarantineReason(
                "sidecar_mismatch",
                f"{SIDECAR_FILE} has entries {keys} for a file of this name elsewhere that does "
                f"not exist (moved?); give {relative!r} its own entry or remove the stale one",
            )
        return None


def classify_content(
    data: bytes, mime_type: str | None, encoding: str | None
) -> QuarantineReason | None:
    """Why these bytes cannot be ingested as the declared format, or None if they can."""
    if mime_type is None:
        return None
    if not data:
        return QuarantineReason("empty_file", "file is empty (0 bytes)")
    if mime_type in TEXT_MIME_TYPES:
        if b"\x00" in data[:65536]:
            return QuarantineReason(
                "binary_content",
                f"{mime_type} file contains NUL bytes: binary data under a text file name",
            )
        try:
            text = data.decode(encoding or "utf-8")
        except UnicodeDecodeError as error:
            return QuarantineReason(
                "undecodable_text",
                f"not valid {encoding or 'UTF-8'} at byte {error.start} "
                f"(byte 0x{data[error.start]:02x}); declare its 'encoding' in {SIDECAR_FILE}",
            )
        except (LookupError, TypeError):
            return QuarantineReason("unknown_encoding", f"unknown encoding {encoding!r}")
        if not text.strip():
            return QuarantineReason("empty_file", "file contains only whitespace")
    if mime_type == "application/pdf" and not data.startswith(b"%PDF-"):
        return QuarantineReason("corrupt_pdf", "file has a .pdf name but no %PDF- header")
    return None


def _discover(
    source: SourceConfig,
    listed: _ListedFile,
    defaults: Mapping[str, Any],
    entries: Mapping[str, Any],
    matcher: _SidecarMatcher,
    max_document_bytes: int,
) -> DiscoveredDocument:
    relative = listed.relative
    has_entry = listed.name_valid and relative in entries
    suffix = PurePosixPath(relative).suffix.lower()
    mime_type = mime_type_for(relative)
    read = (
        _ReadResult(None, UNREAD_CONTENT_HASH, 0, _EPOCH, listed.problem)
        if listed.problem
        else _read_file(listed.path, max_document_bytes)
    )
    meta, meta_problem = resolve_metadata(
        defaults, entries.get(relative) if has_entry else None, relative
    )
    document = DiscoveredDocument(
        doc_id=f"{source.name}:{relative}",
        source=source.name,
        uri=Path(os.fsdecode(listed.path)).as_uri(),
        relative_path=relative,
        content_hash=read.digest,
        byte_size=read.size,
        mime_type=mime_type,
        encoding=meta.encoding,
        owner=meta.owner,
        tenant=meta.tenant,
        acl_principals=meta.acl,
        title=meta.title,
        updated_at=meta.updated_at or read.mtime,
        content=read.content,
        has_sidecar_entry=has_entry,
    )
    # The first reason found wins: problems with the file itself, then doubts about who may
    # read it, then the bytes.
    reason = read.problem
    if reason is None and not listed.name_valid:
        reason = QuarantineReason(
            "invalid_file_name",
            "file name is not valid UTF-8, so no sidecar entry can name it; rename the file",
        )
    if reason is None and not has_entry:
        reason = matcher.mismatch(relative)
    reason = reason or meta_problem or access_problem(source, meta, SIDECAR_FILE)
    if reason is None and read.content is None:
        reason = QuarantineReason(
            "too_large",
            f"file is {read.size:,} bytes, above the limit of {max_document_bytes:,} "
            "(RAG_MAX_DOCUMENT_BYTES)",
        )
    if reason is None and mime_type is None:
        reason = QuarantineReason(
            "unsupported_format",
            f"unsupported file type {suffix or '(no extension)'!r}; "
            f"supported: {supported_suffixes()}",
        )
    if reason is None and read.content is not None:
        reason = classify_content(read.content, mime_type, meta.encoding)
    return document if reason is None else document.quarantined(reason)


def scan_filesystem_source(
    source: SourceConfig, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
) -> Iterator[DiscoveredDocument]:
    """Yield one record per file under the source folder, in a stable order.

    Raises `ConfigurationError` (when iterated) only for problems of the whole source; see the
    module docstring.
    """
    check_source(source)
    sidecar_defaults, entries = load_sidecar(source.path)
    defaults = {**source.defaults, **sidecar_defaults}
    listing = _list_files(source.path)
    present = {listed.relative for listed in listing if listed.name_valid}
    matcher = _SidecarMatcher(set(entries) - present)
    for listed in listing:
        yield _discover(source, listed, defaults, entries, matcher, max_document_bytes)


def stale_sidecar_entries(source: SourceConfig) -> list[str]:
    """Sidecar entries naming files that do not exist (usually: deleted, sidecar not yet updated).

    Not an error by itself: a deletion must propagate even while the sidecar lags behind. But a
    file that such an entry may have been meant for is quarantined (`sidecar_mismatch`).
    """
    check_source(source)
    _, entries = load_sidecar(source.path)
    present = {listed.relative for listed in _list_files(source.path) if listed.name_valid}
    return sorted(set(entries) - present)


def source_fingerprint(source: SourceConfig) -> str:
    """A cheap digest of a source folder's listing (paths, sizes, mtimes, modes, sidecar included).

    Used by the sensor to notice new content without reading any file. Never raises: entries
    are `lstat`ed (a symlink loop is just a link), names are hashed as bytes (not necessarily
    UTF-8), and a folder that is missing or cannot be listed is part of the digest, so that the
    sensor still asks for a run, which reports the problem.
    """
    digest = hashlib.sha256()

    def visit(folder: bytes, relative: bytes) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            digest.update(b"%s\x1funlistable\x1f%d\n" % (relative, error.errno or 0))
            return
        for entry in entries:
            name = relative + b"/" + entry.name if relative else entry.name
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as error:
                digest.update(b"%s\x1funreadable\x1f%d\n" % (name, error.errno or 0))
                continue
            if stat.S_ISDIR(info.st_mode):
                visit(entry.path, name)
                continue
            digest.update(
                b"%s\x1f%d\x1f%d\x1f%o\n" % (name, info.st_size, info.st_mtime_ns, info.st_mode)
            )

    visit(os.fsencode(source.path), b"")
    return digest.hexdigest()


class FilesystemConnector:
    """`connector: filesystem`: every file under `path`, access metadata from `_metadata.yaml`."""

    name: ClassVar[str] = "filesystem"
    option_keys: ClassVar[frozenset[str]] = frozenset({"path"})

    def validate(self, source: SourceConfig) -> None:
        if source.path is None:
            raise ConfigurationError(f"{source.where}: 'path' (the folder to index) is required")
        if not source.path.is_dir():
            raise ConfigurationError(f"{source.where}: folder {source.path} does not exist")

    def scan(self, source: SourceConfig, state: ScanState) -> Iterator[DiscoveredDocument]:
        stale = stale_sidecar_entries(source)
        state.stale_sidecar_entries.extend(stale)
        if stale:
            state.warnings.append(f"sidecar entries without a file in {source.name}: {stale}")
        yield from scan_filesystem_source(source, state.max_document_bytes)

    def fingerprint(self, source: SourceConfig) -> str:
        return source_fingerprint(source)
