"""The filesystem connector: turn a folder and its sidecar metadata into document records.

Every file becomes exactly one `DiscoveredDocument`. Files the pipeline must not ingest (empty,
too large, binary junk under a text name, undecodable text, unknown formats, missing access
control) are returned with a `QuarantineReason` instead of being skipped silently, so that they
are visible and auditable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig, validate_principals

SIDECAR_FILE = "_metadata.yaml"
DEFAULT_MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MIME_TYPES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".pdf": "application/pdf",
}
TEXT_MIME_TYPES = {"text/markdown", "text/html", "text/plain"}
_METADATA_KEYS = {"title", "owner", "acl", "tenant", "updated_at", "encoding"}


@dataclass(frozen=True)
class QuarantineReason:
    code: str
    message: str


@dataclass
class DiscoveredDocument:
    doc_id: str
    source: str
    uri: str
    relative_path: str
    content_hash: str
    byte_size: int
    mime_type: str | None
    encoding: str | None
    owner: str | None
    tenant: str
    acl_principals: tuple[str, ...]
    title: str | None
    updated_at: datetime
    content: bytes | None = field(repr=False, default=None)
    quarantine: QuarantineReason | None = None

    @property
    def metadata_hash(self) -> str:
        """Hash of everything but the bytes, so ACL or title changes are detected on their own."""
        fields = [self.title, self.owner, self.tenant, sorted(self.acl_principals), self.encoding]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_sidecar(folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The `defaults` and per-document entries of a source folder's `_metadata.yaml`."""
    path = folder / SIDECAR_FILE
    if not path.exists():
        return {}, {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{path}: expected a mapping with 'defaults' and 'documents'")
    defaults = loaded.get("defaults") or {}
    documents = loaded.get("documents") or {}
    if not isinstance(defaults, dict) or not isinstance(documents, dict):
        raise ConfigurationError(f"{path}: 'defaults' and 'documents' must be mappings")
    for key, entry in [("defaults", defaults), *documents.items()]:
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{path}: entry {key!r} must be a mapping")
        unknown = set(entry) - _METADATA_KEYS
        if unknown:
            raise ConfigurationError(f"{path}: entry {key!r} has unknown keys {sorted(unknown)}")
    return defaults, {str(key): value for key, value in documents.items()}


def _parse_timestamp(value: Any, fallback: datetime) -> datetime:
    if value is None:
        return fallback
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iter_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith((".", "_")) for part in relative.parts):
            continue
        if path.is_symlink():
            # A link could point outside the source folder and leak files nobody configured.
            target = path.resolve()
            if root not in target.parents:
                continue
        if path.is_file():
            yield path


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
            data.decode(encoding or "utf-8")
        except UnicodeDecodeError as error:
            return QuarantineReason(
                "undecodable_text",
                f"not valid {encoding or 'UTF-8'} at byte {error.start} "
                f"(byte 0x{data[error.start]:02x}); declare its 'encoding' in {SIDECAR_FILE}",
            )
        except LookupError:
            return QuarantineReason("unknown_encoding", f"unknown encoding {encoding!r}")
        if not data.decode(encoding or "utf-8").strip():
            return QuarantineReason("empty_file", "file contains only whitespace")
    if mime_type == "application/pdf" and not data.startswith(b"%PDF-"):
        return QuarantineReason("corrupt_pdf", "file has a .pdf name but no %PDF- header")
    return None


def scan_filesystem_source(
    source: SourceConfig, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
) -> Iterator[DiscoveredDocument]:
    """Yield one record per file under the source folder, in a stable order."""
    defaults, overrides = load_sidecar(source.path)
    for path in _iter_files(source.path):
        relative = path.relative_to(source.path).as_posix()
        meta = {**defaults, **overrides.get(relative, {})}
        stat = path.stat()
        mime_type = MIME_TYPES.get(path.suffix.lower())
        quarantine: QuarantineReason | None = None
        content: bytes | None = None
        if stat.st_size > max_document_bytes:
            digest = _hash_file(path)
            quarantine = QuarantineReason(
                "too_large",
                f"file is {stat.st_size:,} bytes, above the limit of {max_document_bytes:,} "
                "(RAG_MAX_DOCUMENT_BYTES)",
            )
        else:
            content = path.read_bytes()
            digest = content_hash(content)
            if mime_type is None:
                quarantine = QuarantineReason(
                    "unsupported_format",
                    f"unsupported file type {path.suffix or '(no extension)'!r}; "
                    f"supported: {sorted(MIME_TYPES)}",
                )
            else:
                quarantine = classify_content(content, mime_type, meta.get("encoding"))
        acl: tuple[str, ...] = ()
        try:
            acl = validate_principals(meta.get("acl", []), f"{SIDECAR_FILE}: {relative}.acl")
        except ConfigurationError as error:
            quarantine = quarantine or QuarantineReason("invalid_acl", str(error))
        owner = meta.get("owner")
        if owner is not None:
            try:
                validate_principals([owner], f"{SIDECAR_FILE}: {relative}.owner")
            except ConfigurationError as error:
                quarantine = quarantine or QuarantineReason("invalid_acl", str(error))
                owner = None
        tenant = meta.get("tenant")
        if quarantine is None and not tenant:
            quarantine = QuarantineReason("no_tenant", f"no tenant declared in {SIDECAR_FILE}")
        if quarantine is None and not acl and not owner:
            # Permission safety: a document nobody is explicitly granted is never served.
            quarantine = QuarantineReason(
                "no_access_control", f"neither 'acl' nor 'owner' declared in {SIDECAR_FILE}"
            )
        if owner and owner not in acl:
            acl = (*acl, owner)
        mtime = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
        try:
            updated_at = _parse_timestamp(meta.get("updated_at"), mtime)
        except ValueError:
            updated_at = mtime
            quarantine = quarantine or QuarantineReason(
                "invalid_metadata", f"updated_at {meta.get('updated_at')!r} is not ISO 8601"
            )
        yield DiscoveredDocument(
            doc_id=f"{source.name}:{relative}",
            source=source.name,
            uri=path.resolve().as_uri(),
            relative_path=relative,
            content_hash=digest,
            byte_size=stat.st_size,
            mime_type=mime_type,
            encoding=meta.get("encoding"),
            owner=owner,
            tenant=str(tenant or ""),
            acl_principals=tuple(sorted(set(acl))),
            title=meta.get("title"),
            updated_at=updated_at,
            content=None if quarantine else content,
            quarantine=quarantine,
        )


def stale_sidecar_entries(source: SourceConfig) -> list[str]:
    """Sidecar entries naming files that do not exist (usually: deleted, sidecar not yet updated).

    Not an error: a deletion must propagate even while the sidecar lags behind.
    """
    _, overrides = load_sidecar(source.path)
    present = {path.relative_to(source.path).as_posix() for path in _iter_files(source.path)}
    return sorted(set(overrides) - present)


def source_fingerprint(source: SourceConfig) -> str:
    """A cheap digest of a source folder's listing (paths, sizes, mtimes, sidecar included).

    Used by the sensor to notice new content without reading any file.
    """
    digest = hashlib.sha256()
    for path in sorted(source.path.rglob("*")):
        if path.is_file():
            stat = path.stat()
            relative = path.relative_to(source.path).as_posix()
            digest.update(f"{relative}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
