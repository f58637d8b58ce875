"""The filesystem connector: one record per file, quarantine reasons, sidecar metadata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from rag_pipeline.lib.catalog import ConfigurationError, SourceConfig
from rag_pipeline.lib.connectors import (
    DiscoveredDocument,
    classify_content,
    content_hash,
    load_sidecar,
    scan_filesystem_source,
    source_fingerprint,
    stale_sidecar_entries,
)

GOOD_META = {"tenant": "acme", "acl": ["group:acme-all"]}


def make_source(
    root: Path,
    files: dict[str, bytes],
    defaults: dict[str, Any] | None = None,
    documents: dict[str, dict[str, Any]] | None = None,
    name: str = "docs",
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
    return SourceConfig(name=name, connector="filesystem", path=folder)


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
        tmp_path,
        {"a.md": b"text", "b.md": b"text"},
        defaults={"tenant": "acme", "owner": "user:carol"},
        documents={"b.md": {"acl": ["group:acme-hr"]}},
    )
    documents = scan(source)
    assert documents["a.md"].quarantine is None
    assert documents["a.md"].acl_principals == ("user:carol",)
    assert documents["b.md"].acl_principals == ("group:acme-hr", "user:carol")
    assert documents["b.md"].owner == "user:carol"


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


def test_unknown_sidecar_keys_raise(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"}, documents={"a.md": {"tenent": "acme"}})
    with pytest.raises(ConfigurationError, match="tenent"):
        load_sidecar(source.path)
    with pytest.raises(ConfigurationError, match="tenent"):
        list(scan_filesystem_source(source))


def test_unknown_sidecar_default_keys_raise(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"a.md": b"text"}, defaults={**GOOD_META, "acls": []})
    with pytest.raises(ConfigurationError, match="acls"):
        load_sidecar(source.path)


@pytest.mark.parametrize(
    "sidecar", ["defaults: [a, b\n", "- just\n- a list\n", "documents: [a.md]\n"]
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
