"""The git connector alone: repositories built with dulwich in tmp_path, scanned directly."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from dulwich.client import LocalGitClient
from dulwich.index import commit_tree
from dulwich.object_store import DiskObjectStore
from dulwich.objects import S_IFGITLINK, Blob, Commit, Tag
from dulwich.repo import Repo

from rag_pipeline.lib.catalog import (
    SAMPLE_CORPUS_DIR,
    ConfigurationError,
    SourceConfig,
    load_sources,
)
from rag_pipeline.lib.connectors import (
    UNREAD_CONTENT_HASH,
    DiscoveredDocument,
    RemovedDocument,
    ScannedItem,
    ScanState,
    UnchangedDocument,
    scan_source,
)
from rag_pipeline.lib.connectors.base import KnownDocument, content_hash
from rag_pipeline.lib.connectors.git import GitConnector, _glob_regex, update_mirror
from rag_pipeline.lib.connectors.git import repository as git_repository

AUTHOR = b"Acme Docs Bot <docs-bot@acme.example>"
FIRST_COMMIT_TIME = 1_780_000_000  # 2026-05-28T20:26:40Z
SYMLINK_MODE = 0o120000
FileValue = bytes | tuple[int, bytes]

README = b"# Acme platform tools\n\nDeploy and on-call tooling of the Acme platform team.\n"
DEPLOY = b"# acme-deploy\n\nRun `acme-deploy rollout --canary 5%` before every full rollout.\n"
PAGER = b"# Pager rotation\n\nThe SRE pager rotates every Monday at 09:00 UTC.\n"
LOGO = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


def init_repository(path: Path, *, bare: bool = True) -> Path:
    """An empty repository whose HEAD is `main`."""
    repo = Repo.init_bare(str(path), mkdir=True) if bare else Repo.init(str(path), mkdir=True)
    with repo:
        repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")
    return path


def commit_snapshot(
    path: Path,
    files: Mapping[str, FileValue],
    message: str,
    when: int,
    branch: bytes = b"refs/heads/main",
) -> str:
    """Commit exactly `files` ({path: bytes, or (mode, bytes)}) on `branch`; the commit id.

    Fixed author, committer and times: the same snapshots give the same commit ids.
    """
    with Repo(str(path)) as repo:
        store = repo.object_store
        entries = []
        for name, value in sorted(files.items()):
            mode, data = value if isinstance(value, tuple) else (0o100644, value)
            if mode == S_IFGITLINK:
                sha = data  # a submodule entry holds a commit id of another repository
            else:
                blob = Blob.from_string(data)
                store.add_object(blob)
                sha = blob.id
            entries.append((name.encode(), sha, mode))
        commit = Commit()
        commit.tree = commit_tree(store, entries)
        commit.parents = [repo.refs[branch]] if branch in repo.refs else []
        commit.author = commit.committer = AUTHOR
        commit.author_time = commit.commit_time = when
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = message.encode()
        store.add_object(commit)
        repo.refs[branch] = commit.id
        return commit.id.decode()


def git_source(
    repo: Path | None, tmp_path: Path, *, name: str = "platform_tools", **options: Any
) -> SourceConfig:
    return SourceConfig(
        name=name,
        connector="git",
        path=repo,
        tenants=("acme",),
        defaults={"tenant": "acme", "acl": ["group:acme-engineering"]},
        options=options,
        base_dir=tmp_path,
    )


def scan(source: SourceConfig, state: ScanState | None = None) -> list[ScannedItem]:
    return list(GitConnector().scan(source, state or ScanState()))


def next_state(previous: ScanState, items: list[ScannedItem]) -> ScanState:
    """What `sync_source` would hand the next scan after recording `items`."""
    known = {doc_id: row for doc_id, row in previous.known.items() if not row.deleted}
    for item in items:
        if isinstance(item, DiscoveredDocument):
            known[item.doc_id] = KnownDocument(item.change_token, item.metadata_hash, False)
    listed = {item.doc_id for item in items if not isinstance(item, RemovedDocument)}
    known = {
        doc_id: KnownDocument(row.change_token, row.metadata_hash, doc_id not in listed)
        for doc_id, row in known.items()
    }
    return ScanState(known=known, cursor=previous.next_cursor)


def documents(items: list[ScannedItem]) -> dict[str, DiscoveredDocument]:
    return {item.doc_id: item for item in items if isinstance(item, DiscoveredDocument)}


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    path = init_repository(tmp_path / "tools.git")
    commit_snapshot(
        path,
        {
            "README.md": README,
            "docs/deploy/acme-deploy.md": DEPLOY,
            "docs/oncall/pager.md": PAGER,
            "assets/logo.png": LOGO,
        },
        "Initial docs",
        FIRST_COMMIT_TIME,
    )
    return path


class BlobReads:
    """Records every blob the object store hands out (trees and commits are not counted)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.blobs: list[str] = []
        original = DiskObjectStore.get_raw

        def get_raw(store: DiskObjectStore, name: bytes) -> tuple[int, bytes]:
            type_num, raw = original(store, name)
            if type_num == Blob.type_num:
                self.blobs.append(name.decode() if len(name) == 40 else name.hex())
            return type_num, raw

        monkeypatch.setattr(DiskObjectStore, "get_raw", get_raw)


def test_first_scan_lists_supported_files_with_their_commit(repo: Path, tmp_path: Path) -> None:
    state = ScanState()
    items = scan(git_source(repo, tmp_path), state)
    head = Repo(str(repo)).head().decode()

    docs = documents(items)
    assert list(docs) == [
        "platform_tools:README.md",
        "platform_tools:docs/deploy/acme-deploy.md",
        "platform_tools:docs/oncall/pager.md",
    ], "the PNG is not a supported format and was not asked for: skipped"
    deploy = docs["platform_tools:docs/deploy/acme-deploy.md"]
    assert deploy.quarantine is None
    assert deploy.content == DEPLOY
    assert deploy.content_hash == content_hash(DEPLOY)
    assert deploy.byte_size == len(DEPLOY)
    assert deploy.mime_type == "text/markdown"
    assert deploy.relative_path == "docs/deploy/acme-deploy.md"
    assert deploy.change_token == Blob.from_string(DEPLOY).id.decode()
    assert deploy.tenant == "acme"
    assert deploy.acl_principals == ("group:acme-engineering",)
    assert deploy.updated_at == datetime.fromtimestamp(FIRST_COMMIT_TIME, tz=UTC)
    assert deploy.uri == f"git+{repo.as_uri()}@{head}#docs/deploy/acme-deploy.md"
    assert dict(deploy.source_metadata) == {
        "repository": str(repo),
        "ref": "HEAD",
        "commit": head,
        "path": "docs/deploy/acme-deploy.md",
        "blob": deploy.change_token,
    }
    assert state.next_cursor == {"commit": head, "ref": "HEAD"}
    assert state.warnings == []


def test_unchanged_blobs_are_not_read(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = git_source(repo, tmp_path)
    first = ScanState()
    first_items = scan(source, first)
    edited = DEPLOY + b"\nRoll back with `acme-deploy rollback --to previous`.\n"
    second_commit = commit_snapshot(
        repo,
        {"README.md": README, "docs/deploy/acme-deploy.md": edited, "docs/oncall/pager.md": PAGER},
        "Document rollback",
        FIRST_COMMIT_TIME + 3600,
    )
    reads = BlobReads(monkeypatch)
    second = next_state(first, first_items)
    items = scan(source, second)

    assert reads.blobs == [Blob.from_string(edited).id.decode()], "only the edited blob is read"
    assert [type(item).__name__ for item in items] == [
        "UnchangedDocument",
        "DiscoveredDocument",
        "UnchangedDocument",
    ]
    changed = documents(items)["platform_tools:docs/deploy/acme-deploy.md"]
    assert changed.content == edited
    assert changed.source_metadata["commit"] == second_commit
    assert changed.updated_at == datetime.fromtimestamp(FIRST_COMMIT_TIME + 3600, tz=UTC)

    reads.blobs.clear()
    third = next_state(second, items)
    again = scan(source, third)
    assert reads.blobs == []
    assert all(isinstance(item, UnchangedDocument) for item in again)


def test_rename_and_deletion_are_reported_with_their_commit(repo: Path, tmp_path: Path) -> None:
    source = git_source(repo, tmp_path)
    first = ScanState()
    first_items = scan(source, first)
    commit = commit_snapshot(
        repo,
        {"README.md": README, "docs/deploy/rollouts.md": DEPLOY},
        "Rename the deploy page, drop the pager page",
        FIRST_COMMIT_TIME + 7200,
    )
    items = scan(source, next_state(first, first_items))

    removals = [item for item in items if isinstance(item, RemovedDocument)]
    assert removals == [
        RemovedDocument(
            "platform_tools:docs/deploy/acme-deploy.md",
            f"renamed to docs/deploy/rollouts.md in {commit}",
        ),
        RemovedDocument("platform_tools:docs/oncall/pager.md", f"deleted in commit {commit}"),
    ]
    renamed = documents(items)["platform_tools:docs/deploy/rollouts.md"]
    assert renamed.source_metadata["renamed_from"] == "docs/deploy/acme-deploy.md"
    assert renamed.content == DEPLOY, "a new document id: its bytes are read"
    assert UnchangedDocument("platform_tools:README.md") in items


def test_a_cursor_commit_missing_from_the_repository_only_warns(repo: Path, tmp_path: Path) -> None:
    state = ScanState(cursor={"commit": "0" * 40, "ref": "HEAD"})
    items = scan(git_source(repo, tmp_path), state)
    assert not any(isinstance(item, RemovedDocument) for item in items)
    assert len(documents(items)) == 3
    assert any("0000000000" in warning for warning in state.warnings)


@pytest.mark.parametrize(
    ("glob", "matching", "not_matching"),
    [
        ("docs/oncall/**", ["docs/oncall/pager.md", "docs/oncall/a/b.md"], ["docs/oncall.md"]),
        ("**/*.md", ["README.md", "docs/a/b.md"], ["README.txt", "docs/a.mdx"]),
        ("*.md", ["README.md"], ["docs/README.md"]),
        ("docs/**/index.md", ["docs/index.md", "docs/a/b/index.md"], ["docs/xindex.md"]),
        ("docs/?.md", ["docs/a.md"], ["docs/ab.md", "docs/a/b.md"]),
        ("docs/[ab]*.md", ["docs/api.md", "docs/b.md"], ["docs/c.md"]),
        ("/README.md", ["README.md"], ["x/README.md"]),
    ],
)
def test_globs(glob: str, matching: list[str], not_matching: list[str]) -> None:
    pattern = _glob_regex(glob)
    assert all(pattern.fullmatch(path) for path in matching)
    assert not any(pattern.fullmatch(path) for path in not_matching)


def test_include_and_exclude(repo: Path, tmp_path: Path) -> None:
    items = scan(git_source(repo, tmp_path, include=["docs/**"], exclude=["**/pager.md"]))
    assert list(documents(items)) == ["platform_tools:docs/deploy/acme-deploy.md"]

    explicit = documents(scan(git_source(repo, tmp_path, include=["**/*.md", "assets/*.png"])))
    logo = explicit["platform_tools:assets/logo.png"]
    assert logo.quarantine is not None and logo.quarantine.code == "unsupported_format"
    assert "'.png'" in logo.quarantine.message
    assert logo.content_hash == UNREAD_CONTENT_HASH and logo.change_token is None
    assert logo.acl_principals == ("group:acme-engineering",)
    assert len(explicit) == 4


def test_acl_rules_last_matching_rule_wins(repo: Path, tmp_path: Path) -> None:
    rules = [
        {"paths": ["docs/**"], "acl": ["group:acme-all"], "title": "Platform docs"},
        {"paths": ["docs/oncall/**"], "acl": ["group:acme-sre"], "owner": "user:alice"},
        {
            "paths": ["docs/oncall/pager.md"],
            "title": "Pager rotation",
            "updated_at": "2026-03-01T12:00:00Z",
        },
    ]
    docs = documents(scan(git_source(repo, tmp_path, acl_rules=rules)))
    readme = docs["platform_tools:README.md"]
    assert readme.acl_principals == ("group:acme-engineering",) and readme.title is None
    deploy = docs["platform_tools:docs/deploy/acme-deploy.md"]
    assert deploy.acl_principals == ("group:acme-all",) and deploy.title == "Platform docs"
    pager = docs["platform_tools:docs/oncall/pager.md"]
    # Only the last matching rule applies: its title, the defaults' ACL.
    assert pager.title == "Pager rotation"
    assert pager.updated_at == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert pager.acl_principals == ("group:acme-engineering",)

    narrowed = documents(scan(git_source(repo, tmp_path, acl_rules=rules[:2])))
    pager = narrowed["platform_tools:docs/oncall/pager.md"]
    assert pager.acl_principals == ("group:acme-sre", "user:alice")
    assert pager.owner == "user:alice" and pager.quarantine is None


def test_an_acl_rule_change_rereads_the_blob(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ScanState()
    first_items = scan(git_source(repo, tmp_path), first)
    reads = BlobReads(monkeypatch)
    restricted = git_source(
        repo, tmp_path, acl_rules=[{"paths": ["docs/oncall/**"], "acl": ["group:acme-sre"]}]
    )
    items = scan(restricted, next_state(first, first_items))
    assert reads.blobs == [Blob.from_string(PAGER).id.decode()]
    pager = documents(items)["platform_tools:docs/oncall/pager.md"]
    assert pager.acl_principals == ("group:acme-sre",)


def test_access_that_cannot_be_established_fails_closed(repo: Path, tmp_path: Path) -> None:
    source = git_source(
        repo, tmp_path, acl_rules=[{"paths": ["docs/oncall/**"], "tenant": "globex"}]
    )
    pager = documents(scan(source))["platform_tools:docs/oncall/pager.md"]
    assert pager.quarantine is not None and pager.quarantine.code == "tenant_not_allowed"
    assert pager.acl_principals == () and pager.content is None

    no_acl = SourceConfig(
        name="platform_tools",
        connector="git",
        path=repo,
        tenants=("acme",),
        defaults={"tenant": "acme"},
        base_dir=tmp_path,
    )
    readme = documents(scan(no_acl))["platform_tools:README.md"]
    assert readme.quarantine is not None and readme.quarantine.code == "no_access_control"


@pytest.mark.parametrize(
    ("rules", "named"),
    [
        ("docs/**", "'acl_rules' must be a list"),
        ([["docs/**"]], "acl_rules[0] must be a mapping"),
        ([{"acl": ["group:acme-sre"]}], "acl_rules[0].paths is required"),
        ([{"paths": "docs/**", "acl": ["group:acme-sre"]}], "acl_rules[0].paths must be"),
        ([{"paths": ["docs/**"]}], "acl_rules[0] sets nothing"),
        (
            [{"paths": ["a/**"], "acl": ["group:x"]}, {"paths": ["b/**"], "acl": ["sre"]}],
            "acl_rules[1].acl: malformed principals ['sre']",
        ),
        ([{"paths": ["a/**"], "owner": "alice"}], "acl_rules[0].owner"),
        ([{"paths": ["a/**"], "title": 3}], "acl_rules[0].title must be a string"),
        ([{"paths": ["a/**"], "updated_at": "soon"}], "acl_rules[0].updated_at"),
        ([{"paths": ["a/**"], "acls": ["group:x"]}], "acl_rules[0] has unknown keys ['acls']"),
    ],
)
def test_malformed_acl_rules_fail_the_source(
    repo: Path, tmp_path: Path, rules: Any, named: str
) -> None:
    source = git_source(repo, tmp_path, acl_rules=rules)
    with pytest.raises(ConfigurationError) as raised:
        GitConnector().validate(source)
    assert named in str(raised.value)
    with pytest.raises(ConfigurationError):
        scan(source)


def test_whole_source_errors(repo: Path, tmp_path: Path) -> None:
    connector = GitConnector()
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    empty = init_repository(tmp_path / "empty.git")
    cases: list[tuple[SourceConfig, str]] = [
        (git_source(not_a_repo, tmp_path), "is not a git repository"),
        (git_source(tmp_path / "missing", tmp_path), "is not a git repository"),
        (git_source(repo, tmp_path, ref="release-9"), "'ref' 'release-9' is neither"),
        (git_source(empty, tmp_path), "the repository is empty"),
        (git_source(repo, tmp_path, url=repo.as_uri()), "exactly one of 'path'"),
        (git_source(None, tmp_path), "exactly one of 'path'"),
        (git_source(None, tmp_path, url="ftp://example.com/r.git"), "'url' must be a file://"),
        (git_source(repo, tmp_path, include=[]), "'include' must be a non-empty list"),
        (git_source(repo, tmp_path, ref=""), "'ref' must be"),
        (git_source(repo, tmp_path, mirror_dir="m"), "'mirror_dir' applies to a remote"),
    ]
    for source, message in cases:
        with pytest.raises(ConfigurationError, match="platform_tools") as raised:
            connector.validate(source)
            scan(source)
        assert message in str(raised.value), (message, str(raised.value))


def test_refs_tags_commit_ids_and_working_repositories(repo: Path, tmp_path: Path) -> None:
    first = Repo(str(repo)).head()
    commit_snapshot(repo, {"README.md": README}, "Trim", FIRST_COMMIT_TIME + 60)
    with Repo(str(repo)) as opened:
        tag = Tag()
        tag.name, tag.object, tag.tag_time, tag.tag_timezone = b"v1", (Commit, first), 1, 0
        tag.tagger, tag.message = AUTHOR, b"First release"
        opened.object_store.add_object(tag)
        opened.refs[b"refs/tags/v1"] = tag.id
        opened.refs[b"refs/heads/release"] = first
    refs = ("v1", "release", "refs/heads/release", first.decode(), first.decode()[:10].upper())
    for ref in refs:
        state = ScanState()
        assert len(documents(scan(git_source(repo, tmp_path, ref=ref), state))) == 3, ref
        assert state.next_cursor == {"commit": first.decode(), "ref": ref}
    assert len(documents(scan(git_source(repo, tmp_path)))) == 1

    working = init_repository(tmp_path / "work", bare=False)
    commit_snapshot(working, {"notes/a.txt": b"Acme notes\n"}, "Notes", FIRST_COMMIT_TIME)
    assert list(documents(scan(git_source(working, tmp_path)))) == ["platform_tools:notes/a.txt"]
    by_url = documents(scan(git_source(None, tmp_path, url=working.as_uri())))
    assert list(by_url) == ["platform_tools:notes/a.txt"]


def test_symlinks_submodules_large_and_binary_blobs(tmp_path: Path) -> None:
    path = init_repository(tmp_path / "odd.git")
    commit_snapshot(
        path,
        {
            "docs/latest.md": (SYMLINK_MODE, b"deploy.md"),
            "docs/deploy.md": DEPLOY,
            "docs/big.md": b"# Big\n" + b"word " * 400,
            "docs/binary.txt": b"text\x00with NUL",
            "docs/empty.md": b"",
            "vendor/acme-sdk": (S_IFGITLINK, b"1" * 40),
        },
        "Odd files",
        FIRST_COMMIT_TIME,
    )
    state = ScanState(max_document_bytes=1000)
    docs = documents(scan(git_source(path, tmp_path), state))
    codes = {
        doc_id.split(":", 1)[1]: doc.quarantine and doc.quarantine.code
        for doc_id, doc in docs.items()
    }
    assert codes == {
        "docs/big.md": "too_large",
        "docs/binary.txt": "binary_content",
        "docs/deploy.md": None,
        "docs/empty.md": "empty_file",
        "docs/latest.md": "unsupported_format",
    }
    assert "symbolic link" in docs["platform_tools:docs/latest.md"].quarantine.message
    big = docs["platform_tools:docs/big.md"]
    assert big.byte_size == 2006 and big.content is None and big.change_token is None
    assert state.warnings == [
        f"platform_tools: submodule 'vendor/acme-sdk' at {Repo(str(path)).head().decode()}"
        " is skipped (submodules are not followed)"
    ]


def test_fingerprint_follows_the_ref_and_never_raises(repo: Path, tmp_path: Path) -> None:
    connector = GitConnector()
    source = git_source(repo, tmp_path)
    before = connector.fingerprint(source)
    assert before == connector.fingerprint(source)
    assert before.startswith(Repo(str(repo)).head().decode())
    commit_snapshot(repo, {"README.md": README}, "Trim", FIRST_COMMIT_TIME + 60)
    assert connector.fingerprint(source) != before
    assert connector.fingerprint(
        git_source(repo, tmp_path, exclude=["x"])
    ) != connector.fingerprint(source)
    assert connector.fingerprint(git_source(tmp_path / "missing", tmp_path)).startswith(
        "unavailable:"
    )
    # No network in the tests: the remote cannot be asked, and the secret is not echoed.
    remote = git_source(None, tmp_path, url="https://ci:s3cret@git.acme.example/tools.git")
    unreachable = connector.fingerprint(remote)
    assert unreachable.startswith("unavailable:") and "s3cret" not in unreachable


def test_a_file_url_mirror_is_fetched_offline(repo: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirrors" / "tools"
    update_mirror(repo.as_uri(), mirror, "test")
    with Repo(str(mirror)) as fetched, Repo(str(repo)) as original:
        assert fetched.refs[b"refs/heads/main"] == original.refs[b"refs/heads/main"]
        assert fetched.head() == original.head()
    commit_snapshot(repo, {"README.md": README}, "Trim", FIRST_COMMIT_TIME + 60)
    update_mirror(repo.as_uri(), mirror, "test")
    with Repo(str(mirror)) as fetched:
        assert fetched.refs[b"refs/heads/main"] == Repo(str(repo)).head()


def test_sources_file_entry(repo: Path, tmp_path: Path) -> None:
    sources_file = tmp_path / "sources.yaml"
    entry = {
        "name": "platform_tools",
        "connector": "git",
        "path": repo.name,
        "ref": "main",
        "tenant": "acme",
        "acl": ["group:acme-engineering"],
        "acl_rules": [{"paths": ["docs/oncall/**"], "acl": ["group:acme-sre"]}],
    }
    sources_file.write_text(yaml.safe_dump({"sources": [entry]}))
    (source,) = load_sources(sources_file)
    assert source.path == repo and source.problem is None
    items: Iterator[ScannedItem] = scan_source(source, ScanState())
    docs = documents(list(items))
    assert docs["platform_tools:docs/oncall/pager.md"].acl_principals == ("group:acme-sre",)

    sources_file.write_text(yaml.safe_dump({"sources": [{**entry, "branch": "main"}]}))
    (source,) = load_sources(sources_file)
    assert source.problem is not None and "unknown keys ['branch']" in source.problem


def test_a_remote_url_is_read_from_its_mirror(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "remote" is the local repository behind dulwich's local transport: no network.
    url = "https://ci:s3cret@git.acme.example/platform/tools.git"
    monkeypatch.setattr(
        git_repository, "get_transport_and_path", lambda location: (LocalGitClient(), str(repo))
    )
    source = git_source(None, tmp_path, url=url)
    GitConnector().validate(source)
    docs = documents(scan(source))
    head = Repo(str(repo)).head().decode()
    assert (tmp_path / ".git-mirrors" / "platform_tools" / "HEAD").is_file()
    readme = docs["platform_tools:README.md"]
    assert readme.content == README
    assert readme.source_metadata["repository"] == "https://git.acme.example/platform/tools.git"
    assert readme.uri == f"git+https://git.acme.example/platform/tools.git@{head}#README.md"
    assert "s3cret" not in repr(readme) + repr(readme.source_metadata)
    assert GitConnector().fingerprint(source).startswith(head)

    mirrored = git_source(None, tmp_path, url=url, mirror_dir="cache/tools")
    assert len(documents(scan(mirrored))) == 3
    assert (tmp_path / "cache" / "tools" / "HEAD").is_file()


def test_the_sample_repository_is_what_the_script_builds(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "build_sample_git_repo.py"
    spec = importlib.util.spec_from_file_location("build_sample_git_repo", script)
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    rebuilt = tmp_path / "rebuilt.git"
    builder.build(rebuilt)

    def files(root: Path) -> dict[str, bytes]:
        return {
            str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }

    checked_in = SAMPLE_CORPUS_DIR / "acme_platform_tools.git"
    assert files(rebuilt) == files(checked_in), "run scripts/build_sample_git_repo.py"
    assert not any(name.startswith("objects/") and "pack" not in name for name in files(rebuilt))

    source = SourceConfig(
        name="acme_platform_tools",
        connector="git",
        path=checked_in,
        tenants=("acme",),
        defaults={"tenant": "acme", "acl": ["group:acme-engineering"]},
        options={"acl_rules": [{"paths": ["docs/oncall/**"], "acl": ["group:acme-sre"]}]},
        base_dir=SAMPLE_CORPUS_DIR,
    )
    docs = documents(scan(source))
    assert len(docs) == 7 and all(doc.quarantine is None for doc in docs.values())
    assert {
        doc_id for doc_id, doc in docs.items() if doc.acl_principals == ("group:acme-sre",)
    } == {
        "acme_platform_tools:docs/oncall/escalation-policy.md",
        "acme_platform_tools:docs/oncall/handover-checklist.md",
        "acme_platform_tools:docs/oncall/paging-tool.md",
    }
    with Repo(str(checked_in)) as repo:
        head = repo.head().decode()
        first = repo[repo[repo.head()].parents[0]].parents[0]
    items = scan(
        source,
        ScanState(
            cursor={"commit": first.decode()},
            known={"acme_platform_tools:docs/deploy/rollback.md": KnownDocument("a", "b", False)},
        ),
    )
    assert [item for item in items if isinstance(item, RemovedDocument)] == [
        RemovedDocument(
            "acme_platform_tools:docs/deploy/rollback.md",
            f"renamed to docs/runbooks/rollback.md in {head}",
        )
    ]
