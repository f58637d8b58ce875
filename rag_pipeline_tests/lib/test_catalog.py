"""Sources and directory configuration: validation errors name the file; user access."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_pipeline.lib.catalog import (
    DEFAULT_DIRECTORY_FILE,
    DEFAULT_SOURCES_FILE,
    ConfigurationError,
    check_source,
    find_source,
    load_sources,
    load_user_access,
    validate_principals,
)


def write_sources(tmp_path: Path, text: str, folders: tuple[str, ...] = ("docs",)) -> Path:
    for folder in folders:
        (tmp_path / folder).mkdir(exist_ok=True)
    path = tmp_path / "my-sources.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_sources_file_loads_with_absolute_folders() -> None:
    sources = load_sources(DEFAULT_SOURCES_FILE)
    names = [source.name for source in sources]
    assert "acme_policies" in names
    assert len(set(names)) == len(names)
    # One sample source per connector, so `make demo` shows each of them.
    connectors = {source.connector for source in sources}
    assert connectors == {"filesystem", "git", "confluence", "tickets"}
    for source in sources:
        assert source.path is not None and source.path.is_absolute()
        assert source.path.exists()
        check_source(source)
    tenants = {source.name: source.tenants for source in sources}
    assert tenants["acme_policies"] == ("acme",)
    assert tenants["globex_wiki"] == ("globex",)


def test_source_paths_are_relative_to_the_sources_file(tmp_path: Path) -> None:
    path = write_sources(
        tmp_path,
        "sources:\n"
        "  - {name: docs, path: docs, tenants: [acme, acme, beta], description: The docs}\n",
    )
    (source,) = load_sources(path)
    assert source.path == (tmp_path / "docs").resolve()
    assert source.connector == "filesystem"
    assert source.description == "The docs"
    assert source.tenants == ("acme", "beta")
    assert find_source([source], "docs") is source
    check_source(source)


@pytest.mark.parametrize(
    "text",
    [
        "sources: [docs\n",  # bad YAML
        "- just a list\n",  # not a mapping
        "sources: []\n",  # empty
        "sources:\n  - just-a-string\n",  # entry not a mapping
        "sources:\n  - {name: Docs, path: docs}\n",  # bad name: upper case
        "sources:\n  - {name: 1docs, path: docs}\n",  # bad name: leading digit
        "sources:\n  - {path: docs}\n",  # missing name
        "sources:\n  - {name: docs, connector: s3, path: docs}\n",  # unknown connector
        "sources:\n  - {name: docs, path: docs}\n  - {name: docs, path: docs}\n",  # duplicate
    ],
)
def test_invalid_sources_file_raises_configuration_error_naming_the_file(
    tmp_path: Path, text: str
) -> None:
    path = write_sources(tmp_path, text)
    with pytest.raises(ConfigurationError) as raised:
        load_sources(path)
    assert "my-sources.yaml" in str(raised.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: docs, path: docs}", "'tenants' is required"),
        ("{name: docs, path: docs, tenants: acme}", "'tenants' must be a non-empty list"),
        ("{name: docs, path: docs, tenants: []}", "'tenants' must be a non-empty list"),
        ("{name: docs, path: docs, tenants: [1]}", "'tenants' must be a non-empty list"),
        ("{name: docs, path: nowhere, tenants: [acme]}", "nowhere does not exist"),
    ],
)
def test_a_problem_of_one_source_fails_only_that_source_naming_file_and_field(
    tmp_path: Path, entry: str, message: str
) -> None:
    """Missing folder or tenants: the file still loads (other sources keep working), and the
    problem is raised when that source is checked, naming the file, the source and the field."""
    path = write_sources(
        tmp_path,
        f"sources:\n  - {{name: good, path: docs, tenants: [acme]}}\n  - {entry}\n",
    )
    good, bad = load_sources(path)
    check_source(good)
    with pytest.raises(ConfigurationError, match=message) as raised:
        check_source(bad)
    assert "my-sources.yaml" in str(raised.value)
    assert "sources[1] (docs)" in str(raised.value)


def test_a_missing_folder_is_checked_when_scanned_not_when_loaded(tmp_path: Path) -> None:
    path = write_sources(tmp_path, "sources:\n  - {name: late, path: late, tenants: [acme]}\n")
    (source,) = load_sources(path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        check_source(source)
    (tmp_path / "late").mkdir()
    check_source(source)


def test_missing_sources_file_raises_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"absent\.yaml: file not found"):
        load_sources(tmp_path / "absent.yaml")


def test_duplicate_source_names_are_listed(tmp_path: Path) -> None:
    path = write_sources(
        tmp_path,
        "sources:\n  - {name: docs, path: docs}\n  - {name: docs, path: other}\n",
        folders=("docs", "other"),
    )
    with pytest.raises(ConfigurationError, match=r"duplicate source names \['docs'\]"):
        load_sources(path)


def test_find_source_of_an_unknown_name_raises() -> None:
    with pytest.raises(ConfigurationError, match="nope"):
        find_source(load_sources(DEFAULT_SOURCES_FILE), "nope")


def test_known_user_gets_user_and_group_principals_and_tenant() -> None:
    access = load_user_access(DEFAULT_DIRECTORY_FILE, "alice")
    assert access.user == "alice"
    assert access.tenant == "acme"
    assert access.principals == (
        "user:alice",
        "group:acme-all",
        "group:acme-engineering",
        "group:acme-sre",
    )


def test_user_without_groups_gets_only_the_user_principal(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("users:\n  zoe: {tenant: initech}\n", encoding="utf-8")
    access = load_user_access(path, "zoe")
    assert (access.tenant, access.principals) == ("initech", ("user:zoe",))


def test_unknown_user_raises_naming_the_directory_file() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown user 'mallory'.*directory\.yaml"):
        load_user_access(DEFAULT_DIRECTORY_FILE, "mallory")


@pytest.mark.parametrize(
    "text",
    [
        "users: [alice]\n",
        "users:\n  zoe: {groups: [x]}\n",
        "users:\n  zoe: {tenant: t, groups: [bad group]}\n",
        "users: {zoe: {tenant: t}\n",
    ],
)
def test_invalid_directory_entry_raises_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "people.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"people\.yaml"):
        load_user_access(path, "zoe")


@pytest.mark.parametrize("groups", ["acme-all", "null"])
def test_groups_that_are_not_a_list_raise_configuration_error(tmp_path: Path, groups: str) -> None:
    path = tmp_path / "people.yaml"
    path.write_text(f"users:\n  zoe: {{tenant: acme, groups: {groups}}}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"people\.yaml"):
        load_user_access(path, "zoe")


def test_validate_principals_accepts_users_and_groups_only() -> None:
    assert validate_principals(["user:a.b@x", "group:g-1"], "here") == ("user:a.b@x", "group:g-1")
    for bad in (["role:admin"], ["user:"], ["group:a b"], "user:a", [1]):
        with pytest.raises(ConfigurationError, match="here"):
            validate_principals(bad, "here")


def test_connector_options_are_checked_per_source(tmp_path: Path) -> None:
    """A filesystem source without `path`, or with an option of another connector, fails only
    its own partition, with the field named; the other sources still load and scan."""
    (tmp_path / "docs").mkdir()
    path = write_sources(
        tmp_path,
        "sources:\n"
        "  - {name: docs, path: docs, tenants: [acme]}\n"
        "  - {name: nopath, tenants: [acme]}\n"
        "  - {name: typo, path: docs, tenants: [acme], brnach: main}\n",
    )
    docs, nopath, typo = load_sources(path)
    check_source(docs)
    with pytest.raises(ConfigurationError, match="'path'"):
        check_source(nopath)
    with pytest.raises(ConfigurationError, match="unknown keys \\['brnach'\\]"):
        check_source(typo)


def test_source_level_access_defaults(tmp_path: Path) -> None:
    """`tenant`/`acl`/`owner` on the source are its documents' defaults; `tenant` alone also
    declares the one tenant it may publish into; a malformed one fails that source only."""
    (tmp_path / "docs").mkdir()
    path = write_sources(
        tmp_path,
        "sources:\n"
        "  - {name: docs, path: docs, tenant: acme, acl: [group:eng]}\n"
        "  - {name: bad, path: docs, tenant: acme, acl: [everyone]}\n",
    )
    docs, bad = load_sources(path)
    assert docs.tenants == ("acme",)
    assert docs.defaults == {"tenant": "acme", "acl": ["group:eng"]}
    with pytest.raises(ConfigurationError, match="malformed principals"):
        check_source(bad)
