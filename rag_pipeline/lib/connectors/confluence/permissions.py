"""Who may read each page of a Confluence HTML export: the permissions file and the
intersection of the restrictions above a page.

Access, failing closed. An HTML export carries no permissions, so they come from a permissions
file an administrator exports next to the space (option `permissions`, else `permissions.json`
or `permissions.yaml` at the export root): `space: {acl, tenant, owner, key}` overrides the
source's defaults field by field, and `pages: {<page id>: {acl: [...]}}` lists the pages that
carry view restrictions. Confluence restrictions are inherited down the page tree, so a page's
ACL is the intersection of the space ACL and the restrictions of every restricted ancestor (from
its breadcrumbs) and of its own. An empty intersection (`no_access_control`), a malformed
restriction, or an ancestor that cannot be identified while restrictions exist (`invalid_acl`)
quarantines the page with an empty ACL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig, validate_principals
from rag_pipeline.lib.connectors.access import (
    DocumentMetadata,
    access_problem,
    resolve_metadata,
    validate_defaults,
)
from rag_pipeline.lib.connectors.base import QuarantineReason
from rag_pipeline.lib.connectors.confluence.export import _PAGE_ID

PERMISSIONS_FILES = ("permissions.json", "permissions.yaml")
_SPACE_KEYS = frozenset({"key", "tenant", "acl", "owner"})
_PERMISSION_KEYS = frozenset({"space", "pages"})
_RESTRICTION_KEYS = frozenset({"acl"})


@dataclass(frozen=True)
class SpacePermissions:
    """What the administrator's permissions file says about the space and its restricted pages."""

    # Overrides of the source's `tenant` / `acl` / `owner` defaults for every page.
    space: Mapping[str, Any] = field(default_factory=dict)
    # The space key the file was exported for, if it says.
    key: str | None = None
    # Page id -> the principals its view restriction allows, or why that entry is unusable.
    restrictions: Mapping[str, tuple[str, ...] | QuarantineReason] = field(default_factory=dict)
    where: str = "a permissions file (none found)"


def permissions_path(source: SourceConfig) -> Path | None:
    """The permissions file of a source: the `permissions` option, else one at the export root.

    Raises `ConfigurationError` if the option names no file, or the export holds both files.
    """
    option = source.options.get("permissions")
    if option is not None:
        path = (source.base_dir / option).resolve()
        if not path.is_file():
            raise ConfigurationError(
                f"{source.where}: 'permissions' names {path}, which is not a file"
            )
        return path
    if source.path is None:
        return None
    present = [source.path / name for name in PERMISSIONS_FILES if (source.path / name).is_file()]
    if len(present) > 1:
        raise ConfigurationError(
            f"{source.where}: the export holds both {PERMISSIONS_FILES[0]} and "
            f"{PERMISSIONS_FILES[1]}; keep one, so that which permissions apply is not a guess"
        )
    return present[0] if present else None


def _read_permissions_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path}: cannot be read: {error}") from error
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigurationError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from error


def _restriction(entry: Any, where: str) -> tuple[str, ...] | QuarantineReason:
    if not isinstance(entry, dict) or set(entry) != set(_RESTRICTION_KEYS):
        return QuarantineReason(
            "invalid_acl",
            f"{where} must be a mapping with exactly the key 'acl' (got {entry!r})",
        )
    try:
        return tuple(sorted(set(validate_principals(entry["acl"], f"{where}.acl"))))
    except ConfigurationError as error:
        return QuarantineReason("invalid_acl", str(error))


def load_permissions(source: SourceConfig) -> SpacePermissions:
    """The source's space permissions and page restrictions; empty without a permissions file.

    The file as a whole, and its `space` section (it applies to every page), raise
    `ConfigurationError` when unusable, as does a `pages` key that is not a page id (the
    restriction it meant would silently apply to nothing). One malformed restriction only
    quarantines its page and the pages below it.
    """
    path = permissions_path(source)
    if path is None:
        return SpacePermissions()
    loaded = _read_permissions_file(path)
    if not isinstance(loaded, dict):
        raise ConfigurationError(
            f"{path}: expected a mapping with 'space' and 'pages' (write {{}} if the space has "
            "neither space permissions nor restricted pages)"
        )
    unknown = sorted(str(key) for key in set(loaded) - _PERMISSION_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown top-level keys {unknown}; expected {sorted(_PERMISSION_KEYS)}"
        )
    space = loaded.get("space") or {}
    pages = loaded.get("pages") or {}
    if not isinstance(space, dict) or not isinstance(pages, dict):
        raise ConfigurationError(f"{path}: 'space' and 'pages' must be mappings")
    unknown = sorted(str(key) for key in set(space) - _SPACE_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{path}: space has unknown keys {unknown}; known: {sorted(_SPACE_KEYS)}"
        )
    key = space.get("key")
    if key is not None and not (isinstance(key, str) and key.strip()):
        raise ConfigurationError(f"{path}: space.key must be the space key (got {key!r})")
    overrides = validate_defaults(
        {name: value for name, value in space.items() if name != "key"}, f"{path}: space"
    )
    restrictions: dict[str, tuple[str, ...] | QuarantineReason] = {}
    for page_id, entry in pages.items():
        text_id = str(page_id)
        if isinstance(page_id, bool) or not _PAGE_ID.match(text_id):
            raise ConfigurationError(
                f"{path}: pages key {page_id!r} is not a page id (the digits of "
                "'<Title>_<page id>.html')"
            )
        restrictions[text_id] = _restriction(entry, f"{path}: pages[{text_id}]")
    return SpacePermissions(overrides, key, restrictions, str(path))


@dataclass(frozen=True)
class PageAccess:
    """Who may read one page (and its attachments), or why that cannot be established."""

    metadata: DocumentMetadata
    restricted_by: tuple[str, ...] = ()
    problem: QuarantineReason | None = None


def page_access(
    source: SourceConfig,
    permissions: SpacePermissions,
    page_id: str,
    ancestor_ids: list[str | None] | None,
    entry: Mapping[str, Any],
) -> PageAccess:
    """The access metadata of a page from the space permissions and the restrictions above it.

    `ancestor_ids` are the page ids of its breadcrumbs, top first (None for a breadcrumb that
    names no page id; the whole list None when the page's breadcrumbs could not be read);
    `entry` holds what the page itself says (title, updated_at).
    """
    defaults = {**source.defaults, **permissions.space}
    declared_in = f"{source.where} or {permissions.where}"
    restrictions = permissions.restrictions
    chain = [*(ancestor_ids or []), page_id]
    problem: QuarantineReason | None = None
    if restrictions and (ancestor_ids is None or None in ancestor_ids):
        problem = QuarantineReason(
            "invalid_acl",
            "the page's ancestors cannot all be identified (breadcrumbs missing or naming no "
            "page id), so restrictions inherited from them cannot be ruled out",
        )
    restricted_by = tuple(pid for pid in chain if pid is not None and pid in restrictions)
    for pid in restricted_by:
        restriction = restrictions[pid]
        if isinstance(restriction, QuarantineReason):
            problem = problem or QuarantineReason(
                "invalid_acl",
                f"{restriction.message}"
                + ("" if pid == page_id else f" (a restriction of ancestor page {pid})"),
            )
    meta, meta_problem = resolve_metadata(
        defaults,
        dict(entry),
        f"pages/{page_id}",
        entry_where=f"page {page_id}",
        defaults_where=f"{source.where} and {permissions.where}: space",
    )
    problem = problem or meta_problem or access_problem(source, meta, declared_in)
    if problem is not None or not restricted_by:
        return PageAccess(meta, restricted_by, problem)
    # Intersection, not union: in Confluence a user sees a page only with space permission AND
    # a place in the restriction of the page and of every restricted ancestor. The pipeline's ACL
    # grants a user who holds ANY listed principal, so it can only list principals that satisfy
    # every level on their own: those common to all. A union would widen access (a space member
    # would read a page restricted to finance), and guessing group nesting (is every member of
    # globex-finance in globex-all?) would too; an intersection can only deny, never widen.
    allowed = set(meta.acl)
    for pid in restricted_by:
        restriction = restrictions[pid]
        assert isinstance(restriction, tuple)  # malformed ones returned above
        allowed &= set(restriction)
    if not allowed:
        meta = replace(meta, acl=(), owner=None)
        return PageAccess(
            meta,
            restricted_by,
            QuarantineReason(
                "no_access_control",
                f"no principal is both in the space ACL {list(defaults.get('acl') or [])} and "
                f"in the view restrictions of pages {list(restricted_by)} "
                f"({permissions.where}); principals are matched exactly, so name a restricted "
                "group in the space ACL too",
            ),
        )
    # The owner keeps the page only if a restriction names them too (they are in `allowed`).
    owner = meta.owner if meta.owner in allowed else None
    return PageAccess(replace(meta, acl=tuple(sorted(allowed)), owner=owner), restricted_by)
