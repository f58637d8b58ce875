"""The options of a git source, validated: where the repository is, which ref, which paths.

`path` names a local working or bare repository; `url` a `file://` URL (read in place) or a
remote http(s)/ssh/git URL, fetched into a local bare mirror (`mirror_dir`, by default
`.git-mirrors/<source name>`) first. `ref` is a branch, tag or commit (default the repository's
HEAD). `include` / `exclude` are path globs matched against the whole path from the repository
root (`**` spans folders).

Access metadata: the source's `tenant` / `acl` / `owner` defaults, overridden field by field by
the LAST `acl_rules` entry whose `paths` match the file (the keys of a sidecar entry: `title`,
`owner`, `acl`, `tenant`, `updated_at`, `encoding`). A rule's `acl` replaces the defaults' ACL and
owner, as a sidecar entry's does; access that cannot be established fails closed. Each rule is
validated when the source is, so a malformed rule fails the source rather than a document.

A URL's user name and password are never recorded: `public_url` is what lineage and messages show.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig
from rag_pipeline.lib.connectors.access import METADATA_KEYS, resolve_metadata

REMOTE_SCHEMES = frozenset({"http", "https", "ssh", "git"})
# `user@host:path`, the scp-like form of an ssh URL.
_SCP_LIKE_URL = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^/:]+):(?P<path>[^/].*)$")
_RULE_KEYS = frozenset({"paths", *METADATA_KEYS})


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A repository-path glob as a regex: `*` and `?` stay in one folder, `**` spans folders.

    Matched against the whole path from the repository root, so `*.md` is a root file and
    `**/*.md` any Markdown file; `docs/**` is everything under `docs/`.
    """
    parts: list[str] = []
    segments = pattern.strip("/").split("/")
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts))


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "*":
            while index + 1 < len(segment) and segment[index + 1] == "*":
                index += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in segment[index + 2 :]:
            end = segment.index("]", index + 2)
            body = segment[index + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def _globs(value: Any, where: str) -> tuple[re.Pattern[str], ...]:
    if not isinstance(value, list) or not value:
        raise ConfigurationError(f"{where} must be a non-empty list of path globs (got {value!r})")
    if not all(isinstance(glob, str) and glob.strip("/ ") for glob in value):
        raise ConfigurationError(f"{where} must contain non-empty strings (got {value!r})")
    try:
        return tuple(_glob_regex(glob) for glob in value)
    except re.error as error:
        raise ConfigurationError(f"{where}: malformed glob ({error})") from error


def matches(patterns: Sequence[re.Pattern[str]], path: str) -> bool:
    return any(pattern.fullmatch(path) for pattern in patterns)


@dataclass(frozen=True)
class _AclRule:
    paths: tuple[re.Pattern[str], ...]
    entry: Mapping[str, Any]


def _acl_rules(value: Any, where: str) -> tuple[_AclRule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigurationError(f"{where}: 'acl_rules' must be a list (got {value!r})")
    rules: list[_AclRule] = []
    for position, raw in enumerate(value):
        rule_where = f"{where}: acl_rules[{position}]"
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{rule_where} must be a mapping (got {raw!r})")
        unknown = sorted(str(key) for key in set(raw) - _RULE_KEYS)
        if unknown:
            raise ConfigurationError(
                f"{rule_where} has unknown keys {unknown}; known: {sorted(_RULE_KEYS)}"
            )
        if "paths" not in raw:
            raise ConfigurationError(f"{rule_where}.paths is required (a list of path globs)")
        paths = _globs(raw["paths"], f"{rule_where}.paths")
        entry = {key: raw[key] for key in METADATA_KEYS if key in raw}
        if not entry:
            raise ConfigurationError(
                f"{rule_where} sets nothing; give one of {list(METADATA_KEYS)}"
            )
        # Validated alone, field by field: the messages name `acl_rules[i].<field>`.
        _, problem = resolve_metadata({}, entry, "", entry_where=rule_where)
        if problem is not None:
            raise ConfigurationError(problem.message)
        rules.append(_AclRule(paths, entry))
    return tuple(rules)


def public_url(url: str) -> str:
    """A repository URL without user name, password or query (where tokens hide), in
    `scheme://` form: what lineage and messages may show."""
    scp = None if "://" in url else _SCP_LIKE_URL.match(url)
    if scp:
        return f"ssh://{scp['host']}/{scp['path']}"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Settings:
    """The validated options of one git source."""

    local_path: Path | None  # a repository read in place (`path`, or a `file://` URL)
    remote_url: str | None  # fetched into `mirror_dir` first
    mirror_dir: Path | None
    ref: str | None
    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]
    rules: tuple[_AclRule, ...]

    @property
    def repository_path(self) -> Path:
        path = self.local_path or self.mirror_dir
        assert path is not None  # one of them is always set by `parse_settings`
        return path

    @property
    def repository(self) -> str:
        """The repository as lineage shows it: a local path, or the remote URL without secrets."""
        return str(self.local_path) if self.local_path else public_url(self.remote_url or "")

    @property
    def uri_base(self) -> str:
        if self.local_path:
            return "git+" + self.local_path.as_uri()
        return "git+" + public_url(self.remote_url or "")


def parse_settings(source: SourceConfig) -> Settings:
    where = source.where
    options = source.options
    url = options.get("url")
    if (source.path is None) == (url is None):
        raise ConfigurationError(
            f"{where}: give exactly one of 'path' (a local repository) or 'url' "
            f"(got {'both' if url is not None else 'neither'})"
        )
    local_path = source.path
    remote_url = None
    if url is not None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError(f"{where}: 'url' must be a non-empty string (got {url!r})")
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        if scheme == "file":
            local_path = (source.base_dir / unquote(urlsplit(url).path)).resolve()
        elif scheme in REMOTE_SCHEMES or (not scheme and _SCP_LIKE_URL.match(url)):
            remote_url = url
        else:
            raise ConfigurationError(
                f"{where}: 'url' must be a file://, http(s)://, ssh:// or git:// URL "
                f"(got {public_url(url)!r})"
            )
    mirror = options.get("mirror_dir")
    if mirror is not None:
        if remote_url is None:
            raise ConfigurationError(f"{where}: 'mirror_dir' applies to a remote 'url' only")
        if not isinstance(mirror, str) or not mirror.strip():
            raise ConfigurationError(
                f"{where}: 'mirror_dir' must be a non-empty string (got {mirror!r})"
            )
    mirror_dir = None
    if remote_url is not None:
        mirror_dir = (source.base_dir / (mirror or f".git-mirrors/{source.name}")).resolve()
    ref = options.get("ref")
    if ref is not None and (not isinstance(ref, str) or not ref.strip()):
        raise ConfigurationError(f"{where}: 'ref' must be a branch, tag or commit id (got {ref!r})")
    include = _globs(options["include"], f"{where}: 'include'") if "include" in options else ()
    exclude = _globs(options["exclude"], f"{where}: 'exclude'") if "exclude" in options else ()
    return Settings(
        local_path=local_path,
        remote_url=remote_url,
        mirror_dir=mirror_dir,
        ref=ref,
        include=include,
        exclude=exclude,
        rules=_acl_rules(options.get("acl_rules"), where),
    )
