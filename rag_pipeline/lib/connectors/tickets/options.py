"""A tickets source's options (`sources.yaml`), validated, and the formats it may name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig, validate_principals

FORMATS = ("jira_json", "jira_csv", "zendesk_json", "zendesk_csv")
# Where each format finds the organisation/group of a ticket when `acl_field` is not given:
# JSON paths are relative to the issue's `fields` (Jira) or to the ticket (Zendesk); CSV
# values are column names.
DEFAULT_ACL_FIELDS = {
    "jira_json": "project",
    "jira_csv": "Project key",
    "zendesk_json": "organization_id",
    "zendesk_csv": "Organization",
}
# An explicit catch-all: the principals of every ticket whose value is missing or unmapped.
CATCH_ALL = "*"


@dataclass(frozen=True)
class TicketOptions:
    """A source's options, validated."""

    path: Path
    format: str | None
    acl_mapping: Mapping[str, tuple[str, ...]]
    acl_field: str | None
    private_comments: bool

    def acl_field_for(self, export_format: str) -> str:
        return self.acl_field or DEFAULT_ACL_FIELDS[export_format]


def parse_options(source: SourceConfig) -> TicketOptions:
    """The source's options, or `ConfigurationError` naming the source and the field."""
    where = source.where
    if source.path is None:
        raise ConfigurationError(
            f"{where}: 'path' (an export file or a folder of them) is required"
        )
    if not source.path.exists():
        raise ConfigurationError(f"{where}: 'path' {source.path} does not exist")
    options = source.options
    export_format = options.get("format")
    if export_format is not None and export_format not in FORMATS:
        raise ConfigurationError(
            f"{where}: 'format' must be one of {list(FORMATS)} (got {export_format!r})"
        )
    acl_field = options.get("acl_field")
    if acl_field is not None and (not isinstance(acl_field, str) or not acl_field.strip()):
        raise ConfigurationError(
            f"{where}: 'acl_field' must be a field or column name (got {acl_field!r})"
        )
    private_comments = options.get("private_comments", False)
    if not isinstance(private_comments, bool):
        raise ConfigurationError(
            f"{where}: 'private_comments' must be true or false (got {private_comments!r})"
        )
    raw_mapping = options.get("acl_mapping")
    if not isinstance(raw_mapping, Mapping) or not raw_mapping:
        raise ConfigurationError(
            f"{where}: 'acl_mapping' is required: a mapping from each organisation/group value "
            "to the principals who may read its tickets, e.g. {Initech: [group:acme-support]}"
        )
    mapping: dict[str, tuple[str, ...]] = {}
    for key, principals in raw_mapping.items():
        if key is None or isinstance(key, bool) or not str(key).strip():
            raise ConfigurationError(f"{where}: acl_mapping has an empty or invalid key {key!r}")
        label = f"{where}: acl_mapping[{str(key)!r}]"
        mapping[str(key)] = validate_principals(principals, label)
        if not mapping[str(key)]:
            raise ConfigurationError(f"{label}: grant at least one principal")
    if CATCH_ALL in mapping and "acl" in source.defaults:
        # Two answers to "who reads a ticket of an unmapped organisation": refuse to guess.
        raise ConfigurationError(
            f"{where}: both a source-level 'acl' and an acl_mapping '{CATCH_ALL}' entry say who "
            "reads tickets of unmapped organisations; keep one of them"
        )
    return TicketOptions(
        path=source.path,
        format=export_format,
        acl_mapping=mapping,
        acl_field=acl_field,
        private_comments=private_comments,
    )
