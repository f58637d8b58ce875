"""Configuration that says where documents come from and who may read them.

`sources.yaml` lists the sources (each becomes a Dagster partition); `directory.yaml` maps users to
their tenant and groups. Both are validated on load with errors that name the file and the field.

Each source must also list the `tenants` it may publish into. Problems that concern one source
only (its folder is missing, its `tenants` are missing or malformed) do not stop the file from
loading: they are raised by `check_source` when that source is scanned, so they fail that
source's partition and no other. So do a connector's own options (`path`, `url`, ...), checked by
the connector, and the source-level access `defaults` (`tenant`, `acl`, `owner`: the same meaning
as a sidecar's `defaults`). Problems that make the file itself unusable (bad YAML, a bad or
duplicate name, an unknown connector) still fail the whole file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from rag_pipeline.lib.freshness import parse_duration
from rag_pipeline.lib.redaction import (
    DEFAULT_REDACTION_POLICY,
    RedactionPolicy,
    RedactionPolicyError,
)

SAMPLE_CORPUS_DIR = Path(__file__).resolve().parents[1] / "sample_corpus"
DEFAULT_SOURCES_FILE = SAMPLE_CORPUS_DIR / "sources.yaml"
DEFAULT_DIRECTORY_FILE = SAMPLE_CORPUS_DIR / "directory.yaml"
# Keys every source accepts; each connector adds its own (`Connector.option_keys`).
COMMON_SOURCE_KEYS = frozenset(
    {"name", "connector", "description", "tenants", "freshness", "redaction"}
)
DEFAULT_KEYS = frozenset({"tenant", "acl", "owner"})
_SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PRINCIPAL = re.compile(r"^(user|group):[A-Za-z0-9._@-]+$")


class ConfigurationError(ValueError):
    """A configuration file is missing, malformed, or contradicts itself."""


@dataclass(frozen=True)
class SourceConfig:
    name: str
    connector: str
    # `path`, resolved against the sources file's folder; None when the connector needs none.
    path: Path | None
    description: str = ""
    # The tenants this source may publish into; None when not (validly) declared, which makes
    # the source unusable (`check_source`): a source is never trusted with every tenant.
    tenants: tuple[str, ...] | None = None
    # Where the source is declared ("<file>: sources[<i>]"), for error messages.
    origin: str = ""
    # Why the declaration cannot be used, if it cannot; raised when the source is scanned.
    problem: str | None = None
    # The freshness target (`freshness: 24h`): a change at the source should be searchable
    # within it (rag_pipeline.lib.freshness). None: no SLA declared for this source.
    freshness: timedelta | None = None
    # What redaction does with PII, secrets and prompt injections (`redaction:` mapping,
    # rag_pipeline.lib.redaction); the safe defaults when not declared.
    redaction: RedactionPolicy = DEFAULT_REDACTION_POLICY
    # Access metadata every document of the source starts from (`tenant`, `acl`, `owner`).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # The connector's own options (every key but the common ones and `path`), as written.
    options: Mapping[str, Any] = field(default_factory=dict)
    # The folder of the sources file: relative paths in options are relative to it.
    base_dir: Path = Path(".")

    @property
    def where(self) -> str:
        return self.origin or f"source {self.name!r}"


@dataclass(frozen=True)
class UserAccess:
    """What one user may read: their tenant's documents whose ACL names one of these principals."""

    user: str
    tenant: str
    principals: tuple[str, ...]


def sources_file_from_env() -> Path:
    return Path(os.environ.get("RAG_SOURCES_FILE") or DEFAULT_SOURCES_FILE)


def directory_file_from_env() -> Path:
    return Path(os.environ.get("RAG_DIRECTORY_FILE") or DEFAULT_DIRECTORY_FILE)


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigurationError(f"{path}: file not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{path}: expected a mapping at the top level")
    return loaded


def load_sources(path: Path | str) -> list[SourceConfig]:
    """Read and validate a sources file; relative source paths are relative to the file."""
    # Imported here: the connectors themselves import this module's types.
    from rag_pipeline.lib.connectors.access import validate_defaults
    from rag_pipeline.lib.connectors.registry import connector_for, connector_names

    path = Path(path).resolve()
    entries = _read_yaml_mapping(path).get("sources")
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{path}: 'sources' must be a non-empty list")
    sources: list[SourceConfig] = []
    for position, entry in enumerate(entries):
        where = f"{path}: sources[{position}]"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where}: expected a mapping")
        name = entry.get("name")
        if not isinstance(name, str) or not _SOURCE_NAME.match(name):
            raise ConfigurationError(
                f"{where}: 'name' must match {_SOURCE_NAME.pattern} (got {name!r})"
            )
        connector = entry.get("connector", "filesystem")
        if connector not in connector_names():
            raise ConfigurationError(
                f"{where}: unknown connector {connector!r}; supported: {list(connector_names())}"
            )
        # Where the source is checked (`check_source`), not here: one missing folder or bad
        # option must fail its own partition, not every source of the file.
        raw_path = entry.get("path")
        folder = None
        if isinstance(raw_path, str) and raw_path:
            folder = (path.parent / raw_path).resolve()
        problem = None
        if raw_path is not None and folder is None:
            problem = f"{where} ({name}): 'path' must be a non-empty string (got {raw_path!r})"
        option_keys = connector_for(connector).option_keys
        unknown = sorted(
            str(key) for key in set(entry) - COMMON_SOURCE_KEYS - DEFAULT_KEYS - option_keys
        )
        if unknown and problem is None:
            problem = (
                f"{where} ({name}): unknown keys {unknown} for connector {connector!r}; "
                f"its options: {sorted(option_keys)}"
            )
        defaults: dict[str, Any] = {}
        try:
            defaults = validate_defaults(
                {key: entry[key] for key in DEFAULT_KEYS if key in entry}, f"{where} ({name})"
            )
        except ConfigurationError as error:
            problem = problem or str(error)
        declared_tenants = entry.get("tenants")
        if declared_tenants is None and isinstance(defaults.get("tenant"), str):
            # A source that names its one tenant needs no separate `tenants` list.
            declared_tenants = [defaults["tenant"]]
        tenants, tenants_problem = _parse_tenants(declared_tenants, f"{where} ({name})")
        problem = problem or tenants_problem
        # A bad target fails the whole file (like an unknown connector): an SLA that silently
        # does not apply is worse than a configuration error shown at once.
        freshness = None
        if entry.get("freshness") is not None:
            try:
                freshness = parse_duration(entry["freshness"], f"{where} ({name}): 'freshness'")
            except ValueError as error:
                raise ConfigurationError(str(error)) from error
        # A malformed policy fails the whole file: guessing a weaker policy would leak values.
        try:
            redaction = RedactionPolicy.from_config(entry.get("redaction"), f"{where} ({name})")
        except RedactionPolicyError as error:
            raise ConfigurationError(str(error)) from error
        sources.append(
            SourceConfig(
                name=name,
                connector=connector,
                path=folder,
                description=str(entry.get("description", "")),
                tenants=tenants,
                origin=f"{where} ({name})",
                problem=problem,
                freshness=freshness,
                redaction=redaction,
                defaults=defaults,
                options={
                    key: value
                    for key, value in entry.items()
                    if key in option_keys and key != "path"
                },
                base_dir=path.parent,
            )
        )
    names = [source.name for source in sources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigurationError(f"{path}: duplicate source names {duplicates}")
    return sources


def _parse_tenants(value: Any, where: str) -> tuple[tuple[str, ...] | None, str | None]:
    """The declared tenants, or None and the reason they cannot be used."""
    if value is None:
        return None, (
            f"{where}: 'tenants' is required: list the tenants this source may publish into, "
            "for example `tenants: [acme]`"
        )
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(tenant, str) and tenant.strip() for tenant in value)
    ):
        return None, f"{where}: 'tenants' must be a non-empty list of tenant names (got {value!r})"
    return tuple(sorted(set(value))), None


def check_source(source: SourceConfig) -> None:
    """Raise `ConfigurationError` if this one source cannot be scanned now.

    Checked at scan time so that the error fails only this source's partition.
    """
    if source.problem:
        raise ConfigurationError(source.problem)
    if source.tenants is None:
        raise ConfigurationError(
            f"{source.where}: 'tenants' is required: list the tenants this source may publish into"
        )
    from rag_pipeline.lib.connectors.registry import connector_for

    connector_for(source.connector).validate(source)


def find_source(sources: list[SourceConfig], name: str) -> SourceConfig:
    for source in sources:
        if source.name == name:
            return source
    raise ConfigurationError(
        f"source {name!r} is not configured; known sources: {[s.name for s in sources]}"
    )


def validate_principals(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise ConfigurationError(f"{where}: expected a list of 'user:<id>' or 'group:<id>'")
    bad = [value for value in values if not _PRINCIPAL.match(value)]
    if bad:
        raise ConfigurationError(f"{where}: malformed principals {bad}")
    return tuple(values)


def load_user_access(path: Path | str, user: str) -> UserAccess:
    """The tenant and principals of `user` according to a directory file."""
    path = Path(path)
    users = _read_yaml_mapping(path).get("users")
    if not isinstance(users, dict):
        raise ConfigurationError(f"{path}: 'users' must be a mapping")
    entry = users.get(user)
    if entry is None:
        raise ConfigurationError(f"unknown user {user!r}: not in {path}")
    if not isinstance(entry, dict) or not isinstance(entry.get("tenant"), str):
        raise ConfigurationError(f"{path}: users.{user} needs a 'tenant'")
    groups = entry.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
        raise ConfigurationError(f"{path}: users.{user}.groups must be a list of group names")
    principals = validate_principals(
        [f"user:{user}", *(f"group:{group}" for group in groups)], f"{path}: users.{user}"
    )
    return UserAccess(user=user, tenant=entry["tenant"], principals=principals)
