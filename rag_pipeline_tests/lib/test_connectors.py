"""The filesystem connector: one record per file, quarantine reasons, sidecar metadata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig
from rag_pipeline.lib.connectors import DiscoveredDocument, source_fingerprint
from rag_pipeline.lib.connectors.base import content_hash
from rag_pipeline.lib.connectors.filesystem import (
    classify_content,
    load_sidecar,
    scan_filesystem_source,
    stale_sidecar_entries,
)

GOOD_META = {"tenant": "acme", "acl": ["group:acme-all"]}


def make_source(
    root: Path,
    files: dict[str, bytes],
    defaults: dict[str, Any] | None = None,
    documents: dict[str, Any] | None = None,
    name: str = "docs",
    tenants: tuple[str, ...] | None = ("acme", "t"),
) -> SourceConfig:
    folder = (root / name).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    sidecar: dict[str, Any] = {"defaults": GOOD_META if defaults is None else defaults}
    if documents:
        sidecar["documents"] = documents
    (folder / "_metadata.yaml").write_text(yaml.safe_dump(sidecar), encoding="utf-8")
    return SourceConfig(name=name, connector="filesystem", path=folder, tenants=tenants)


def scan(source: SourceConfig, **kwargs: Any) -> dict[str, DiscoveredDocument]:
    return {doc.relative_path: doc for doc in scan_filesystem_source(source, **kwargs)}


def only(source: SourceConfig, **kwargs: Any) -> DiscoveredDocument:
    documents = list(scan_filesystem_source(source, **kwargs))
    assert len(documents) == 1
    return documents[0]


def quarantine_code(document: DiscoveredDocument) -> str | None:
    return document.quarantine.code if document.quarantine else None


def test_healthy_markdown_file_is_loaded_with_metadata(tmp_path: Path) -> None:
    data = b"# Title\n\nSome text."
    source = make_source(tmp_path, {"guide.md": data})
    document = only(source)
    assert document.quarantine is None
    assert document.content == data
    assert document.content_hash == content_hash(data)
    assert document.byte_size == len(data)
    assert document.mime_type == "text/markdown"
    assert document.tenant == "acme"
    assert document.acl_principals == ("group:acme-all",)
    assert document.uri == (source.path / "guide.md").as_uri()


def test_empty_file_is_quarantined_as_empty_file(tmp_path: Path) -> None:
    document = only(make_source(tmp_path, {"empty.md": b""}))
    assert quarantine_code(document) == "empty_file"
    assert document.content is None


def test_whitespace_only_text_file_is_quarantined_as_empty_file(tmp_path: Path) -> None:
    assert quarantine_code(only(make_source(tmp_path, {"blank.txt": b" \n\t\n"}))) == "empty_file"


def test_nul_bytes_in_markdown_are_quarantined_as_binary_content(tmp_path: Path) -> None:
    document = only(make_source(tmp_path, {"blob.md": b"# Title\x00\x01\x02 text"}))
    assert quarantine_code(document) == "binary_content"


def test_invalid_utf8_is_undecodable_text_naming_the_byte_offset(tmp_path: Path) -> None:
    document = only(make_source(tmp_path, {"legacy.txt": b"caf\xe9 au lait"}))
    assert document.quarantine is not None
    assert document.quarantine.code == "undecodable_text"
    assert "byte 3" in document.quarantine.message
    assert "0xe9" in document.quarantine.message
    assert document.content is None


def test_declared_cp1252_encoding_decodes(tmp_path: Path) -> None:
    data = "caf\u00e9 \u20ac5".encode("cp1252")
    source = make_source(
        tmp_path, {"legacy.txt": data}, documents={"legacy.txt": {"encoding": "cp1252"}}
    )
    document = only(source)
    assert document.quarantine is None
    assert document.encoding == "cp1252"
    assert document.content == data


def test_unknown_declared_encoding_is_quarantined(tmp_path: Path) -> None:
    source = make_source(
        tmp_path, {"legacy.txt": b"hello"}, documents={"legacy.txt": {"encoding": "klingon-8"}}
    )
    assert quarantine_code(only(source)) == "unknown_encoding"


def test_unknown_extension_is_unsupported_format(tmp_path: Path) -> None:
    document = only(make_source(tmp_path, {"diagram.vsdx": b"PK\x03\x04 zip"}))
    assert quarantine_code(document) == "unsupported_format"
    assert document.mime_type is None
    assert document.content is None


def test_file_above_max_document_bytes_is_too_large_and_not_loaded(tmp_path: Path) -> None:
    data = b"word " * 100
    document = only(make_source(tmp_path, {"big.txt": data}), max_document_bytes=100)
    assert quarantine_code(document) == "too_large"
    assert document.content is None
    assert document.byte_size == len(data)
    assert document.content_hash == content_hash(data)


def test_file_at_exactly_max_document_bytes_is_accepted(tmp_path: Path) -> None:
    document = only(make_source(tmp_path, {"ok.txt": b"x" * 100}), max_document_bytes=100)
    assert document.quarantine is None


def test_missing_tenant_is_quarantined_as_no_tenant(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"}, defaults={"acl": ["group:acme-all"]})
    document = only(source)
    assert quarantine_code(document) == "no_tenant"
    assert document.tenant == ""


def test_no_acl_and_no_owner_is_quarantined_as_no_access_control(tmp_path: Path) -> None:
    document = only(make_source(tmp_path, {"a.md": b"text"}, defaults={"tenant": "acme"}))
    assert quarantine_code(document) == "no_access_control"


def test_owner_alone_is_enough_access_control_and_joins_the_acl(tmp_path: Path) -> None:
    source = make_source(
        tmp_path, {"a.md": b"text"}, defaults={"tenant": "acme", "owner": "user:carol"}
    )
    document = only(source)
    assert document.quarantine is None
    assert document.acl_principals == ("user:carol",)
    assert document.owner == "user:carol"


def test_a_document_acl_replaces_the_defaults_acl_and_the_defaults_owner(tmp_path: Path) -> None:
    """The owner rule: a per-document acl narrows; the defaults' owner is not slipped back in."""
    source = make_source(
        tmp_path,
        {"plain.md": b"text", "narrow.md": b"text", "owned.md": b"text", "mine.md": b"text"},
        defaults={"tenant": "acme", "owner": "user:carol", "acl": ["group:acme-all"]},
        documents={
            "narrow.md": {"acl": ["group:acme-hr"]},
            "owned.md": {"acl": ["group:acme-hr"], "owner": "user:dana"},
            "mine.md": {"owner": "user:dana"},
        },
    )
    documents = scan(source)
    assert documents["plain.md"].acl_principals == ("group:acme-all", "user:carol")
    assert documents["plain.md"].owner == "user:carol"
    assert documents["narrow.md"].acl_principals == ("group:acme-hr",)
    assert documents["narrow.md"].owner is None
    assert documents["owned.md"].acl_principals == ("group:acme-hr", "user:dana")
    assert documents["owned.md"].owner == "user:dana"
    # Without its own acl, a document keeps the defaults' acl; its own owner replaces carol.
    assert documents["mine.md"].acl_principals == ("group:acme-all", "user:dana")
    assert all(document.quarantine is None for document in documents.values())


def test_an_empty_document_acl_without_owner_is_never_served(tmp_path: Path) -> None:
    source = make_source(
        tmp_path,
        {"a.md": b"text"},
        defaults={"tenant": "acme", "owner": "user:carol", "acl": ["group:acme-all"]},
        documents={"a.md": {"acl": []}},
    )
    document = only(source)
    assert quarantine_code(document) == "no_access_control"
    assert document.acl_principals == ()


@pytest.mark.parametrize(
    "meta",
    [
        {"tenant": "acme", "acl": ["acme-all"]},
        {"tenant": "acme", "acl": ["team:acme"]},
        {"tenant": "acme", "acl": "group:acme-all"},
        {"tenant": "acme", "owner": "carol"},
        {"tenant": "acme", "acl": ["group:acme-all"], "owner": "user:car ol"},
    ],
)
def test_malformed_principal_is_quarantined_as_invalid_acl(
    tmp_path: Path, meta: dict[str, Any]
) -> None:
    document = only(make_source(tmp_path, {"a.md": b"text"}, defaults=meta))
    assert quarantine_code(document) == "invalid_acl"
    assert document.content is None


def test_invalid_updated_at_is_quarantined_as_invalid_metadata(tmp_path: Path) -> None:
    source = make_source(
        tmp_path, {"a.md": b"text"}, documents={"a.md": {"updated_at": "last tuesday"}}
    )
    assert quarantine_code(only(source)) == "invalid_metadata"


def test_declared_updated_at_is_used_and_made_timezone_aware(tmp_path: Path) -> None:
    source = make_source(
        tmp_path, {"a.md": b"text"}, documents={"a.md": {"updated_at": "2026-03-01T12:00:00"}}
    )
    assert only(source).updated_at.isoformat() == "2026-03-01T12:00:00+00:00"


def test_pdf_without_pdf_header_is_corrupt_pdf(tmp_path: Path) -> None:
    document = only(make_source(tmp_path, {"scan.pdf": b"<html>not a pdf</html>"}))
    assert quarantine_code(document) == "corrupt_pdf"


def test_pdf_with_header_passes_classification() -> None:
    assert classify_content(b"%PDF-1.7\n...", "application/pdf", None) is None


def test_classify_content_ignores_unknown_mime_types() -> None:
    assert classify_content(b"", None, None) is None


def test_files_starting_with_underscore_or_dot_are_skipped(tmp_path: Path) -> None:
    source = make_source(
        tmp_path,
        {
            "kept.md": b"text",
            "_draft.md": b"text",
            ".hidden.md": b"text",
            "_private/inner.md": b"text",
            ".git/config.txt": b"text",
            "sub/kept.txt": b"text",
        },
    )
    assert sorted(scan(source)) == ["kept.md", "sub/kept.txt"]


def test_symlink_pointing_outside_the_source_folder_is_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "secret.md"
    outside.write_bytes(b"payroll")
    source = make_source(tmp_path, {"inside.md": b"text"})
    (source.path / "leak.md").symlink_to(outside)
    (source.path / "alias.md").symlink_to(source.path / "inside.md")
    (source.path / "leakdir").symlink_to(tmp_path, target_is_directory=True)
    assert sorted(scan(source)) == ["alias.md", "inside.md"]


def test_sidecar_entry_for_a_missing_file_is_reported_as_stale_not_fatal(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"}, documents={"gone.md": {"title": "Gone"}})
    assert sorted(scan(source)) == ["a.md"]
    assert stale_sidecar_entries(source) == ["gone.md"]


def test_sidecar_entries_for_present_files_are_not_stale(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"}, documents={"a.md": {"title": "A"}})
    assert stale_sidecar_entries(source) == []
    assert only(source).title == "A"


def test_unknown_key_in_a_document_entry_quarantines_only_that_file(tmp_path: Path) -> None:
    source = make_source(
        tmp_path,
        {"a.md": b"text", "b.md": b"text"},
        documents={"a.md": {"acls": ["group:acme-hr"]}},
    )
    documents = scan(source)
    assert quarantine_code(documents["a.md"]) == "invalid_metadata"
    assert "acls" in documents["a.md"].quarantine.message  # type: ignore[union-attr]
    # The misspelt key must not leave the wider defaults in force.
    assert documents["a.md"].acl_principals == ()
    assert documents["b.md"].quarantine is None


def test_unknown_sidecar_default_keys_raise(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"}, defaults={**GOOD_META, "acls": []})
    with pytest.raises(ConfigurationError, match="acls"):
        load_sidecar(source.path)


@pytest.mark.parametrize(
    "sidecar",
    [
        "defaults: [a, b\n",
        "- just\n- a list\n",
        "documents: [a.md]\n",
        "defaults: [a.md]\n",
        "default: {tenant: acme}\ndocument: {a.md: {acl: ['user:x']}}\n",  # misspelt sections
    ],
)
def test_malformed_sidecar_raises_naming_the_file(tmp_path: Path, sidecar: str) -> None:
    (tmp_path / "_metadata.yaml").write_text(sidecar, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"_metadata\.yaml"):
        load_sidecar(tmp_path)


def test_missing_sidecar_gives_empty_metadata(tmp_path: Path) -> None:
    assert load_sidecar(tmp_path) == ({}, {})


def test_doc_ids_are_source_and_posix_relative_path_and_stable(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"b.md": b"text", "sub/dir/a.txt": b"text"}, name="wiki")
    first = [(doc.doc_id, doc.content_hash) for doc in scan_filesystem_source(source)]
    second = [(doc.doc_id, doc.content_hash) for doc in scan_filesystem_source(source)]
    assert [doc_id for doc_id, _ in first] == ["wiki:b.md", "wiki:sub/dir/a.txt"]
    assert first == second


def test_doc_ids_keep_unicode_names_as_text(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"caf\u00e9/r\u00e9sum\u00e9.md": b"text"}, name="wiki")
    document = only(source)
    assert document.doc_id == "wiki:caf\u00e9/r\u00e9sum\u00e9.md"
    assert document.quarantine is None


def test_metadata_hash_changes_with_the_acl_but_not_with_the_bytes(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"version one"})
    original = only(source)
    (source.path / "a.md").write_bytes(b"version two, longer")
    edited = only(source)
    assert edited.content_hash != original.content_hash
    assert edited.metadata_hash == original.metadata_hash
    make_source(tmp_path, {}, defaults={"tenant": "acme", "acl": ["group:acme-hr"]})
    regranted = only(source)
    assert regranted.content_hash == edited.content_hash
    assert regranted.metadata_hash != edited.metadata_hash


def test_metadata_hash_ignores_acl_order(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"x"}, defaults={"tenant": "t", "acl": ["user:a"]})
    before = only(source).metadata_hash
    make_source(tmp_path, {}, defaults={"tenant": "t", "acl": ["user:a", "user:a"]})
    assert only(source).metadata_hash == before


def test_source_fingerprint_changes_when_a_file_is_touched_or_added(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"})
    first = source_fingerprint(source)
    assert source_fingerprint(source) == first
    path = source.path / "a.md"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = source_fingerprint(source)
    assert touched != first
    (source.path / "b.md").write_bytes(b"new")
    assert source_fingerprint(source) not in {first, touched}


def test_source_fingerprint_changes_when_the_sidecar_changes(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"})
    first = source_fingerprint(source)
    make_source(tmp_path, {}, defaults={"tenant": "acme", "acl": ["group:acme-hr", "user:x"]})
    assert source_fingerprint(source) != first


# --- Sidecar intent that is ambiguous fails closed (`sidecar_mismatch`) --------------------------


def assert_served_to_nobody(document: DiscoveredDocument, code: str) -> None:
    assert quarantine_code(document) == code, document.quarantine
    assert document.acl_principals == ()
    assert document.owner is None
    assert document.content is None


@pytest.mark.parametrize(
    ("file_name", "entry"),
    [
        ("report.md", "Report.md"),  # letter case
        ("REPORT.MD", "report.md"),
        ("cafe\u0301.md", "caf\u00e9.md"),  # NFD file name, NFC entry (macOS vs Linux)
        ("caf\u00e9.md", "cafe\u0301.md"),
        ("old/report.md", "./old/report.md"),
        ("new/report.md", "old/report.md"),  # same name, another folder: moved
    ],
)
def test_a_file_an_entry_names_only_approximately_is_quarantined_not_given_the_defaults(
    tmp_path: Path, file_name: str, entry: str
) -> None:
    source = make_source(
        tmp_path,
        {file_name: b"# Salaries\n\nconfidential", "other.md": b"public"},
        defaults={"tenant": "acme", "owner": "user:carol", "acl": ["group:acme-all"]},
        documents={entry: {"acl": ["group:acme-hr"]}},
    )
    documents = scan(source)
    assert_served_to_nobody(documents[file_name], "sidecar_mismatch")
    assert entry in documents[file_name].quarantine.message  # type: ignore[union-attr]
    assert documents["other.md"].quarantine is None
    assert documents["other.md"].acl_principals == ("group:acme-all", "user:carol")
    assert stale_sidecar_entries(source) == [entry]


def test_an_exact_entry_wins_over_a_stale_near_match(tmp_path: Path) -> None:
    source = make_source(
        tmp_path,
        {"a/readme.md": b"one", "b/readme.md": b"two"},
        documents={"a/readme.md": {"acl": ["group:acme-hr"]}, "A/README.md": {"title": "x"}},
    )
    documents = scan(source)
    assert documents["a/readme.md"].quarantine is None
    assert documents["a/readme.md"].acl_principals == ("group:acme-hr",)
    # b/readme.md has the name of a stale entry's file ("A/README.md"): ambiguous, refused.
    assert_served_to_nobody(documents["b/readme.md"], "sidecar_mismatch")


def test_files_unrelated_to_stale_entries_keep_the_defaults(tmp_path: Path) -> None:
    source = make_source(
        tmp_path, {"kept.md": b"text"}, documents={"deleted-long-ago.md": {"title": "x"}}
    )
    assert only(source).quarantine is None


# --- Sources are bound to their tenants --------------------------------------------------------


def test_a_document_of_a_tenant_its_source_may_not_publish_into_is_quarantined(
    tmp_path: Path,
) -> None:
    source = make_source(
        tmp_path,
        {"ours.md": b"text", "theirs.md": b"text"},
        documents={"theirs.md": {"tenant": "globex"}},
        tenants=("acme",),
    )
    documents = scan(source)
    assert documents["ours.md"].quarantine is None
    assert_served_to_nobody(documents["theirs.md"], "tenant_not_allowed")
    assert "globex" in documents["theirs.md"].quarantine.message  # type: ignore[union-attr]


def test_a_source_without_tenants_fails_when_scanned(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"}, tenants=None)
    with pytest.raises(ConfigurationError, match="'tenants' is required"):
        list(scan_filesystem_source(source))


def test_a_missing_source_folder_fails_only_when_that_source_is_scanned(tmp_path: Path) -> None:
    source = SourceConfig(
        name="gone", connector="filesystem", path=tmp_path / "gone", tenants=("acme",)
    )
    with pytest.raises(ConfigurationError, match="does not exist"):
        list(scan_filesystem_source(source))
    with pytest.raises(ConfigurationError, match="does not exist"):
        stale_sidecar_entries(source)
    assert source_fingerprint(source)  # the sensor keeps working


# --- One bad file never fails its source -------------------------------------------------------


def test_a_symlink_loop_is_quarantined_and_the_rest_of_the_source_is_scanned(
    tmp_path: Path,
) -> None:
    source = make_source(tmp_path, {"good.md": b"text"})
    (source.path / "a.md").symlink_to(source.path / "b.md")
    (source.path / "b.md").symlink_to(source.path / "a.md")
    (source.path / "self.md").symlink_to("self.md")
    (source.path / "parent").symlink_to(source.path, target_is_directory=True)
    (source.path / "sub").mkdir()
    (source.path / "sub" / "up").symlink_to("..", target_is_directory=True)
    documents = scan(source)
    assert sorted(documents) == ["a.md", "b.md", "good.md", "self.md"]
    for name in ("a.md", "b.md", "self.md"):
        assert quarantine_code(documents[name]) == "symlink_loop"
    assert documents["good.md"].quarantine is None
    assert source_fingerprint(source) == source_fingerprint(source)


def test_a_dangling_symlink_inside_the_source_is_quarantined(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"good.md": b"text"})
    (source.path / "dangling.md").symlink_to(source.path / "nothing.md")
    documents = scan(source)
    assert quarantine_code(documents["dangling.md"]) == "unreadable_file"
    assert documents["good.md"].quarantine is None


def test_a_file_name_that_is_not_utf8_gets_an_escaped_text_id_and_is_quarantined(
    tmp_path: Path,
) -> None:
    source = make_source(tmp_path, {"good.md": b"text"}, name="wiki")
    raw_name = os.path.join(os.fsencode(source.path), b"caf\xe9.md")
    with open(raw_name, "wb") as handle:
        handle.write(b"# Menu\n\ncoffee")
    first = scan(source)
    assert sorted(first) == ["caf\\xe9.md", "good.md"]
    bad = first["caf\\xe9.md"]
    assert bad.doc_id == "wiki:caf\\xe9.md"
    bad.doc_id.encode("utf-8")  # valid text: storable in Postgres, printable in logs
    assert_served_to_nobody(bad, "invalid_file_name")
    assert bad.content_hash == content_hash(b"# Menu\n\ncoffee")
    assert bad.uri.endswith("caf%E9.md")
    assert scan(source)["caf\\xe9.md"].doc_id == bad.doc_id  # deterministic
    assert first["good.md"].quarantine is None
    fingerprint = source_fingerprint(source)
    os.remove(raw_name)
    assert source_fingerprint(source) != fingerprint


@pytest.mark.parametrize(
    ("entry", "code", "words"),
    [
        ({"encoding": 123}, "invalid_metadata", ["encoding", "text encoding", "int 123"]),
        ({"encoding": "base64"}, "unknown_encoding", ["base64"]),
        ({"title": {"a": 1}}, "invalid_metadata", ["title", "string", "dict"]),
        ({"title": ["x"]}, "invalid_metadata", ["title", "string"]),
        ({"tenant": 5}, "invalid_metadata", ["tenant", "string"]),
        ({"tenant": ""}, "invalid_metadata", ["tenant", "non-empty string"]),
        ({"updated_at": [2026]}, "invalid_metadata", ["updated_at", "ISO 8601"]),
        ({"updated_at": "last tuesday"}, "invalid_metadata", ["updated_at", "ISO 8601"]),
        ({"owner": 5}, "invalid_acl", ["owner", "principal"]),
        ({"owner": ["user:a"]}, "invalid_acl", ["owner", "principal"]),
        ({"acl": None}, "invalid_acl", ["acl", "list"]),
        ({"acl": [{"user": "a"}]}, "invalid_acl", ["acl", "list"]),
        ({"acl": "group:acme-all"}, "invalid_acl", ["acl", "list"]),
        ("just a string", "invalid_metadata", ["mapping"]),
        (["user:a"], "invalid_metadata", ["mapping"]),
    ],
)
def test_a_malformed_sidecar_field_quarantines_only_its_file_naming_field_and_type(
    tmp_path: Path, entry: Any, code: str, words: list[str]
) -> None:
    source = make_source(
        tmp_path, {"bad.md": b"text", "good.md": b"text"}, documents={"bad.md": entry}
    )
    documents = scan(source)
    bad = documents["bad.md"]
    assert_served_to_nobody(bad, code)
    assert bad.quarantine is not None
    for word in words:
        assert word in bad.quarantine.message, (word, bad.quarantine.message)
    assert "bad.md" in bad.quarantine.message or code == "unknown_encoding"
    assert documents["good.md"].quarantine is None
    assert documents["good.md"].acl_principals == ("group:acme-all",)


def test_a_malformed_default_value_quarantines_the_files_that_use_it(tmp_path: Path) -> None:
    source = make_source(
        tmp_path,
        {"uses-default.md": b"text", "own-title.md": b"text"},
        defaults={**GOOD_META, "title": {"a": 1}},
        documents={"own-title.md": {"title": "Own"}},
    )
    documents = scan(source)
    assert quarantine_code(documents["uses-default.md"]) == "invalid_metadata"
    assert "defaults.title" in documents["uses-default.md"].quarantine.message  # type: ignore[union-attr]
    assert documents["own-title.md"].quarantine is None


def test_an_unquoted_yaml_date_is_a_valid_updated_at(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"})
    (source.path / "_metadata.yaml").write_text(
        "defaults: {tenant: acme, acl: ['group:g']}\ndocuments:\n  a.md: {updated_at: 2026-03-01}\n"
    )
    document = only(source)
    assert document.quarantine is None
    assert document.updated_at.isoformat() == "2026-03-01T00:00:00+00:00"


def test_a_fifo_is_quarantined_without_blocking_the_scan(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"good.md": b"text"})
    os.mkfifo(source.path / "pipe.txt")
    documents = scan(source)
    assert quarantine_code(documents["pipe.txt"]) == "unreadable_file"
    assert documents["good.md"].quarantine is None
    assert source_fingerprint(source)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_or_folder_is_quarantined(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"good.md": b"text", "secret.md": b"text", "locked/x.md": b"x"})
    (source.path / "secret.md").chmod(0)
    (source.path / "locked").chmod(0)
    try:
        documents = scan(source)
        assert quarantine_code(documents["secret.md"]) == "unreadable_file"
        assert quarantine_code(documents["locked"]) == "unreadable_file"
        assert documents["good.md"].quarantine is None
        before = source_fingerprint(source)
    finally:
        (source.path / "secret.md").chmod(0o644)
        (source.path / "locked").chmod(0o755)
    assert source_fingerprint(source) != before


def test_source_fingerprint_notices_a_mode_change(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"})
    first = source_fingerprint(source)
    (source.path / "a.md").chmod(0o600)
    assert source_fingerprint(source) != first
