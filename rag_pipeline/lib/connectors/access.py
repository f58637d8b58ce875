"""Who may read a document: access metadata, validated field by field, failing closed.

Every connector resolves a document's title, owner, ACL, tenant, timestamp and encoding the same
way: source-level `defaults` (the `tenant`, `acl` and `owner` keys of its `sources.yaml` entry),
then what the connector knows of the item (a sidecar entry, a page's permissions, a ticket's
organisation), field by field. Owner rule: an item's own `acl` replaces both the defaults' `acl`
and owner; the effective owner is added to the ACL, nobody else is.

A malformed field refuses the item (`invalid_metadata`, `invalid_acl`, `unknown_encoding`) with a
message naming the field; a document without a tenant, with a tenant its source may not publish
into, or with nobody in its ACL is refused too (`access_problem`). Nothing defaults open.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from rag_pipeline.lib.catalog import ConfigurationError, validate_principals
from rag_pipeline.lib.connectors.base import QuarantineReason

if TYPE_CHECKING:
    from rag_pipeline.lib.catalog import SourceConfig

METADATA_KEYS = ("title", "owner", "acl", "tenant", "updated_at", "encoding")


@dataclass(frozen=True)
class DocumentMetadata:
    """The sidecar metadata of one file, validated, after the owner rule was applied."""

    title: str | None = None
    owner: str | None = None
    acl: tuple[str, ...] = ()
    tenant: str = ""
    updated_at: datetime | None = None
    encoding: str | None = None


class _InvalidFieldError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.reason = QuarantineReason(code, message)


def _type_name(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _title(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _InvalidFieldError(
        "invalid_metadata", f"{where}.title must be a string (got {_type_name(value)})"
    )


def _owner(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _InvalidFieldError(
            "invalid_acl",
            f"{where}.owner must be one 'user:<id>' or 'group:<id>' principal "
            f"(got {_type_name(value)})",
        )
    try:
        validate_principals([value], f"{where}.owner")
    except ConfigurationError as error:
        raise _InvalidFieldError("invalid_acl", str(error)) from error
    return value


def _acl(value: Any, where: str) -> tuple[str, ...]:
    # A present but empty `acl:` (null) is refused rather than read as "no ACL": its intent is
    # unclear, and an entry's acl replaces the defaults.
    try:
        return validate_principals(value, f"{where}.acl")
    except ConfigurationError as error:
        raise _InvalidFieldError("invalid_acl", f"{error} (got {_type_name(value)})") from error


def _tenant(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str) and value.strip():
        return value
    raise _InvalidFieldError(
        "invalid_metadata",
        f"{where}.tenant must be a non-empty string (got {_type_name(value)})",
    )


def _updated_at(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):  # YAML reads an unquoted 2026-03-01 as a date
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise _InvalidFieldError(
        "invalid_metadata",
        f"{where}.updated_at must be an ISO 8601 timestamp such as '2026-03-01T12:00:00Z' "
        f"(got {_type_name(value)})",
    )


def _encoding(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _InvalidFieldError(
            "invalid_metadata",
            f"{where}.encoding must be the name of a text encoding such as 'cp1252' "
            f"(got {_type_name(value)})",
        )
    try:
        info = codecs.lookup(value)
    except LookupError:
        raise _InvalidFieldError("unknown_encoding", f"unknown encoding {value!r}") from None
    # Codecs such as base64 or rot13 exist but do not turn bytes into text.
    if not getattr(info, "_is_text_encoding", True):
        raise _InvalidFieldError("unknown_encoding", f"{value!r} is not a text encoding")
    return value


def resolve_metadata(
    defaults: Mapping[str, Any],
    entry: Any,
    relative_path: str,
    *,
    entry_where: str | None = None,
    defaults_where: str = "_metadata.yaml: defaults",
) -> tuple[DocumentMetadata, QuarantineReason | None]:
    """The validated metadata of one file (defaults, then its entry), or why it is refused.

    A refused file gets empty metadata: nothing of a malformed entry is trusted.
    """
    entry_where = entry_where or f"_metadata.yaml: documents[{relative_path!r}]"
    if entry is None:
        entry = {}
    elif not isinstance(entry, dict):
        return DocumentMetadata(), QuarantineReason(
            "invalid_metadata",
            f"{entry_where} must be a mapping of {list(METADATA_KEYS)} (got {_type_name(entry)})",
        )
    unknown = sorted(str(key) for key in set(entry) - set(METADATA_KEYS))
    if unknown:
        # A misspelt key (`acls:`) must not quietly leave the defaults in force.
        return DocumentMetadata(), QuarantineReason(
            "invalid_metadata",
            f"{entry_where} has unknown keys {unknown}; known: {list(METADATA_KEYS)}",
        )

    def effective(key: str) -> tuple[Any, str]:
        if key in entry:
            return entry[key], entry_where
        return defaults.get(key), defaults_where

    try:
        title = _title(*effective("title"))
        if "acl" in entry:
            # Owner rule: a document's own ACL replaces the defaults' ACL and owner alike.
            acl = _acl(entry["acl"], entry_where)
            owner = _owner(entry.get("owner"), entry_where)
        else:
            acl_value, acl_where = effective("acl")
            acl = () if acl_value is None and "acl" not in defaults else _acl(acl_value, acl_where)
            owner = _owner(*effective("owner"))
        tenant = _tenant(*effective("tenant"))
        updated_at = _updated_at(*effective("updated_at"))
        encoding = _encoding(*effective("encoding"))
    except _InvalidFieldError as invalid:
        return DocumentMetadata(), invalid.reason
    if owner is not None and owner not in acl:
        acl = (*acl, owner)
    return (
        DocumentMetadata(
            title=title,
            owner=owner,
            acl=tuple(sorted(set(acl))),
            tenant=tenant,
            updated_at=updated_at,
            encoding=encoding,
        ),
        None,
    )


def access_problem(
    source: SourceConfig, meta: DocumentMetadata, declared_in: str
) -> QuarantineReason | None:
    """Why a document with this (valid) metadata may not be served, or None.

    `declared_in` names where the access metadata should have been declared, for the message.
    """
    if not meta.tenant:
        return QuarantineReason("no_tenant", f"no tenant declared in {declared_in}")
    if meta.tenant not in (source.tenants or ()):
        return QuarantineReason(
            "tenant_not_allowed",
            f"tenant {meta.tenant!r} is not among the tenants source {source.name!r} may "
            f"publish into ({list(source.tenants or ())}, `tenants` in the sources file)",
        )
    if not meta.acl:
        # Permission safety: a document nobody is explicitly granted is never served.
        return QuarantineReason(
            "no_access_control", f"neither 'acl' nor 'owner' declared in {declared_in}"
        )
    return None


def item_metadata(
    source: SourceConfig, entry: Mapping[str, Any] | None, item: str, declared_in: str
) -> tuple[DocumentMetadata, QuarantineReason | None]:
    """The metadata of one item (source defaults, then `entry`) and why it is refused, if it is.

    For connectors whose items carry their own metadata (a page's permissions, a ticket's
    organisation mapped to principals): `entry` uses the sidecar's keys.
    """
    meta, problem = resolve_metadata(
        source.defaults,
        entry,
        item,
        entry_where=f"{declared_in}: {item}",
        defaults_where=f"{source.where}: defaults",
    )
    return meta, problem or access_problem(source, meta, declared_in)


def validate_defaults(value: Any, where: str) -> dict[str, Any]:
    """Source-level access defaults from `sources.yaml` (`tenant`, `acl`, `owner`), checked."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where}: expected a mapping")
    unknown = sorted(str(key) for key in set(value) - set(METADATA_KEYS))
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {unknown}; known: {list(METADATA_KEYS)}")
    _, problem = resolve_metadata(value, None, "defaults", defaults_where=where)
    if problem is not None:
        raise ConfigurationError(problem.message)
    return dict(value)
