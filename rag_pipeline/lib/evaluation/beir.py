"""Read BEIR datasets and write them as an ordinary filesystem source plus a golden set.

A BEIR folder holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
`qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`, with a header line). `import_beir` writes:

    OUT/
      sources.yaml            one filesystem source, `tenants: [T]`
      directory.yaml          the evaluation user, in tenant T and group G
      golden_<split>.jsonl    the split's judged queries as a golden set
      beir_import.json        what was imported, from where, and whether it is a subset
      <source>/_metadata.yaml tenant T, ACL [group:G]
      <source>/<doc>.md       one Markdown file per document: `# title`, then the text

The pipeline's id of a document is `<source>:<file name>`, and the file name is the BEIR id made
safe for a file system (`beir_file_name`), so the BEIR id is recoverable from either
(`beir_id_from_doc_id`); the golden set also keeps the original ids under `beir`.

The corpus is streamed, one document at a time, in one pass (two with a subset): texts are never
held together. What is kept are ids: the qrels, the subset's selection, and the file names
written (to refuse duplicate ids and remove files of an earlier, different selection).
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote

from rag_pipeline.lib.catalog import ConfigurationError
from rag_pipeline.lib.evaluation.golden import GoldenQuestion, json_lines, write_golden_set

DOCUMENT_SUFFIX = ".md"
IMPORT_MANIFEST = "beir_import.json"
DEFAULT_TENANT = "beir"
DEFAULT_GROUP = "beir"
DEFAULT_USER = "evaluator"
DEFAULT_SPLIT = "test"
# Fixed, so that `--limit-docs N` picks the same documents on every machine and every run.
SAMPLE_SEED = "rag_pipeline-beir-subset-v1"
PROGRESS_EVERY = 1000
_SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Progress = Callable[[str], None]


class BeirFormatError(ConfigurationError):
    """A BEIR folder or one of its files is missing or malformed."""


@dataclass(frozen=True)
class BeirDocument:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class BeirQuery:
    query_id: str
    text: str


@dataclass
class ImportSummary:
    dataset: str
    split: str
    source: str
    out: Path
    corpus_documents: int = 0
    documents: int = 0
    relevant_documents: int = 0
    sampled_documents: int = 0
    subset: bool = False
    limit_docs: int | None = None
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    queries: int = 0
    queries_without_relevant_documents: int = 0
    qrels_missing_from_corpus: int = 0
    sources_file: Path = field(default_factory=Path)
    directory_file: Path = field(default_factory=Path)
    golden_file: Path = field(default_factory=Path)
    user: str = DEFAULT_USER

    def to_json(self) -> dict[str, object]:
        return {
            key: str(value) if isinstance(value, Path) else value
            for key, value in asdict(self).items()
        }


# --- reading -------------------------------------------------------------------------------


def corpus_path(folder: Path) -> Path:
    return _required(folder / "corpus.jsonl")


def queries_path(folder: Path) -> Path:
    return _required(folder / "queries.jsonl")


def qrels_path(folder: Path, split: str) -> Path:
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise BeirFormatError(f"{path} not found (splits available: {available or 'none'})")
    return path


def _required(path: Path) -> Path:
    if not path.is_file():
        raise BeirFormatError(f"{path} not found: not a BEIR dataset folder")
    return path


def _json_lines(path: Path) -> Iterator[tuple[str, dict[str, object]]]:
    for where, record in json_lines(path, BeirFormatError):
        if not isinstance(record, dict) or "_id" not in record:
            raise BeirFormatError(f"{where}: expected an object with '_id'")
        yield where, record


def iter_corpus(path: Path) -> Iterator[BeirDocument]:
    """The documents of a `corpus.jsonl`, one at a time, in file order."""
    for _, record in _json_lines(path):
        yield BeirDocument(
            doc_id=str(record["_id"]),
            title=str(record.get("title") or "").strip(),
            text=str(record.get("text") or "").strip(),
        )


def iter_queries(path: Path) -> Iterator[BeirQuery]:
    for where, record in _json_lines(path):
        text = str(record.get("text") or "").strip()
        if not text:
            raise BeirFormatError(f"{where}: query without text")
        yield BeirQuery(query_id=str(record["_id"]), text=text)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> {BEIR doc id: grade}, in file order. Grades of 0 (judged not relevant) are
    dropped: they add nothing to nDCG, recall or MRR, and a golden set lists relevant ones."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(rows, 1):
            if not row or not "".join(row).strip():
                continue
            if number == 1 and row[0].strip().lower() in {"query-id", "query_id", "qid"}:
                continue
            if len(row) < 3:
                raise BeirFormatError(f"{path}:{number}: expected query-id, corpus-id, score")
            try:
                grade = int(float(row[2]))
            except ValueError:
                raise BeirFormatError(
                    f"{path}:{number}: score {row[2]!r} is not a number"
                ) from None
            if grade > 0:
                qrels.setdefault(row[0].strip(), {})[row[1].strip()] = grade
    return qrels


# --- ids and files ---------------------------------------------------------------------------


def beir_file_name(beir_id: str) -> str:
    """A file name for a BEIR id that the connector lists and that maps back to the id.

    Ids that are already safe (SciFact's are numbers) are used as they are. Others are
    percent-encoded, and a leading `.` or `_` too: the connector skips such files as private.
    """
    if not beir_id:
        raise BeirFormatError("empty document id")
    if _NAME_PART.match(beir_id) and "%" not in beir_id:
        return beir_id + DOCUMENT_SUFFIX
    encoded = quote(beir_id, safe="")
    if encoded[0] in "._-":
        encoded = f"%{ord(encoded[0]):02X}{encoded[1:]}"
    return encoded + DOCUMENT_SUFFIX


def beir_id_from_file_name(name: str) -> str:
    if not name.endswith(DOCUMENT_SUFFIX):
        raise ValueError(f"{name!r} is not a BEIR document file")
    return unquote(name[: -len(DOCUMENT_SUFFIX)])


def pipeline_doc_id(source: str, beir_id: str) -> str:
    """The pipeline's stable document id (`<source>:<relative path>`) of a BEIR document."""
    return f"{source}:{beir_file_name(beir_id)}"


def beir_id_from_doc_id(doc_id: str, source: str | None = None) -> str:
    """The BEIR id back from a pipeline document id."""
    found_source, _, name = doc_id.partition(":")
    if not name or (source is not None and found_source != source):
        raise ValueError(f"{doc_id!r} is not a document of source {source!r}")
    return beir_id_from_file_name(name)


def default_source_name(folder: Path) -> str:
    """`scifact` for `.../beir/scifact`: the folder name as a valid source name."""
    name = re.sub(r"[^a-z0-9_]+", "_", folder.resolve().name.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = f"beir_{name}" if name else "beir"
    return name[:63]


# --- Markdown ---------------------------------------------------------------------------------

# Characters Python-Markdown (what unstructured renders Markdown with) would read as markup
# anywhere in a line; escaped so the parsed text is the BEIR text. `<` and `&` become entities:
# `p<0.05` is harmless but `<i>` or `&amp;` would be eaten as HTML.
_INLINE = re.compile(r"([\\`*_\[\]#])")
# Line starts that open a block: quote, list item, ordered list (`#` and `*` are escaped anyway).
_BLOCK_START = re.compile(r"^(\s*)([>+-]|\d+[.)](?=\s|$))")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def _escape_inline(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return _INLINE.sub(r"\\\1", text)


def _escape_paragraph(paragraph: str) -> str:
    line = _SPACES.sub(" ", " ".join(paragraph.split("\n"))).strip()
    line = _escape_inline(line)

    def block(match: re.Match[str]) -> str:
        indent, marker = match.group(1), match.group(2)
        # An ordered-list marker is neutralised by escaping its `.` or `)`.
        if marker[0].isdigit():
            return indent + marker[:-1] + "\\" + marker[-1]
        return indent + "\\" + marker

    return _BLOCK_START.sub(block, line, count=1)


def render_markdown(document: BeirDocument) -> str:
    """`# title`, a blank line, then the text's paragraphs, escaped so the parser reads them as
    plain text. A document without a title gets no heading (the parser falls back to the file
    name)."""
    paragraphs = [
        _escape_paragraph(part) for part in re.split(r"\n\s*\n", document.text) if part.strip()
    ]
    lines: list[str] = []
    if document.title:
        lines += ["# " + _escape_inline(" ".join(document.title.split())), ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- subset selection -------------------------------------------------------------------------


def _sample_key(beir_id: str) -> bytes:
    return hashlib.sha256(f"{SAMPLE_SEED}:{beir_id}".encode()).digest()


def select_subset(
    documents: Iterable[BeirDocument], required: set[str], limit: int
) -> tuple[set[str], int]:
    """The ids to keep: every `required` id found, plus a deterministic sample of the others up
    to `limit` in all. Returns (ids, documents seen).

    The sample is the documents with the smallest seeded hashes of their id: independent of the
    file order, stable across runs, and computed in one pass with a heap of at most `limit`
    entries. Judged documents missing from the corpus leave their room to the sample. If the
    required documents alone exceed `limit`, all of them are kept anyway.
    """
    if limit < 1:
        raise ValueError("the subset needs at least one document")
    # The `limit` smallest keys of the others, as a max-heap of inverted digests (heapq is a
    # min-heap); how many of them are used is known once the required ones have been counted.
    heap: list[tuple[bytes, str]] = []
    found_required: set[str] = set()
    seen = 0
    for document in documents:
        seen += 1
        if document.doc_id in required:
            found_required.add(document.doc_id)
            continue
        inverted = bytes(255 - b for b in _sample_key(document.doc_id))
        if len(heap) < limit:
            heapq.heappush(heap, (inverted, document.doc_id))
        elif inverted > heap[0][0]:
            heapq.heapreplace(heap, (inverted, document.doc_id))
    room = max(0, limit - len(found_required))
    sample = sorted(heap, reverse=True)[:room]  # largest inverted = smallest key first
    return found_required | {doc_id for _, doc_id in sample}, seen


# --- import -----------------------------------------------------------------------------------


def _prepare_out(out: Path, source_folder: Path) -> None:
    """Refuse to write into a folder that holds anything but a previous import."""
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out} exists and is not a folder: choose another --out")
    if out.exists() and any(out.iterdir()) and not (out / IMPORT_MANIFEST).is_file():
        raise ConfigurationError(
            f"{out} is not empty and holds no previous BEIR import ({IMPORT_MANIFEST}): "
            "choose another --out"
        )
    source_folder.mkdir(parents=True, exist_ok=True)


def _write_if_changed(path: Path, content: bytes) -> bool:
    """Write unless the file already holds these bytes: a re-import leaves unchanged files (and
    their mtimes) alone, so the pipeline's next scan has nothing to do."""
    try:
        if path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    path.write_bytes(content)
    return True


def _yaml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(value) for value in values) + "]"


def import_beir(
    folder: Path,
    out: Path,
    *,
    source: str | None = None,
    tenant: str = DEFAULT_TENANT,
    group: str = DEFAULT_GROUP,
    user: str = DEFAULT_USER,
    split: str = DEFAULT_SPLIT,
    limit_docs: int | None = None,
    progress: Progress | None = None,
) -> ImportSummary:
    """Write the BEIR dataset in `folder` to `out` as a filesystem source and a golden set.

    With `limit_docs`, the corpus is cut to every document relevant to the split's queries plus
    a deterministic sample of the rest (`select_subset`). Importing again into the same `out`
    rewrites only what changed and removes documents no longer selected.
    """
    say = progress or (lambda message: None)
    folder, out = Path(folder), Path(out)
    corpus = corpus_path(folder)
    queries_file = queries_path(folder)
    qrels = read_qrels(qrels_path(folder, split))
    source = source or default_source_name(folder)
    if not _SOURCE_NAME.match(source):
        raise ConfigurationError(
            f"source name {source!r} must be lowercase letters, digits and '_', starting with a "
            "letter"
        )
    for label, value in (("tenant", tenant), ("group", group), ("user", user)):
        if not re.match(r"^[A-Za-z0-9._@-]+$", value):
            raise ConfigurationError(f"{label} {value!r} may hold only letters, digits and ._@-")
    source_folder = out / source
    _prepare_out(out, source_folder)
    summary = ImportSummary(
        dataset=folder.resolve().name,
        split=split,
        source=source,
        out=out,
        user=user,
        limit_docs=limit_docs,
    )
    required = {doc_id for judged in qrels.values() for doc_id in judged}

    keep: set[str] | None = None
    if limit_docs is not None:
        say(f"selecting a subset of {limit_docs:,} documents from {corpus} ...")
        keep, total = select_subset(iter_corpus(corpus), required, limit_docs)
        summary.subset = True
        summary.corpus_documents = total

    say(f"writing documents to {source_folder}")
    written_names: set[str] = set()
    present: set[str] = set()
    seen = 0
    for document in iter_corpus(corpus):
        seen += 1
        if keep is not None and document.doc_id not in keep:
            continue
        name = beir_file_name(document.doc_id)
        if name in written_names:
            raise BeirFormatError(f"{corpus}: document id {document.doc_id!r} appears twice")
        written_names.add(name)
        if document.doc_id in required:
            present.add(document.doc_id)
        content = render_markdown(document).encode("utf-8")
        if _write_if_changed(source_folder / name, content):
            summary.written += 1
        else:
            summary.unchanged += 1
        if len(written_names) % PROGRESS_EVERY == 0:
            say(f"  {len(written_names):,} documents written ({seen:,} read)")
    summary.corpus_documents = seen
    summary.documents = len(written_names)
    summary.relevant_documents = len(present)
    summary.sampled_documents = summary.documents - summary.relevant_documents
    summary.qrels_missing_from_corpus = len(required - present)
    # Documents of an earlier, different selection leave the source folder, so the next run
    # tombstones them like any deleted file.
    for stale in sorted(source_folder.glob(f"*{DOCUMENT_SUFFIX}")):
        if stale.name not in written_names:
            stale.unlink()
            summary.removed += 1

    _write_if_changed(
        source_folder / "_metadata.yaml",
        (
            f"# Written by rag-pipeline import-beir from {folder.resolve()}.\n"
            f"defaults:\n  tenant: {tenant}\n  acl: {_yaml_list([f'group:{group}'])}\n"
        ).encode(),
    )
    described = (
        f"BEIR {summary.dataset}: {summary.documents:,} of {summary.corpus_documents:,} documents"
        if summary.subset
        else f"BEIR {summary.dataset}: {summary.documents:,} documents"
    )
    summary.sources_file = out / "sources.yaml"
    _write_if_changed(
        summary.sources_file,
        (
            "sources:\n"
            f"  - name: {source}\n"
            "    connector: filesystem\n"
            f"    path: {source}\n"
            f"    tenants: {_yaml_list([tenant])}\n"
            f"    description: {json.dumps(described)}\n"
        ).encode(),
    )
    summary.directory_file = out / "directory.yaml"
    _write_if_changed(
        summary.directory_file,
        (
            f"users:\n  {user}: {{tenant: {json.dumps(tenant)}, groups: {_yaml_list([group])}}}\n"
        ).encode(),
    )

    summary.golden_file = out / f"golden_{split}.jsonl"
    questions = list(_golden_questions(queries_file, qrels, present, summary))
    write_golden_set(summary.golden_file, questions)
    summary.queries = len(questions)
    (out / IMPORT_MANIFEST).write_text(
        json.dumps(
            {
                **summary.to_json(),
                "beir_folder": str(folder.resolve()),
                "sample_seed": SAMPLE_SEED if summary.subset else None,
                "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return summary


def _golden_questions(
    queries_file: Path,
    qrels: dict[str, dict[str, int]],
    present: set[str],
    summary: ImportSummary,
) -> Iterator[GoldenQuestion]:
    """The split's judged queries in queries.jsonl order, with pipeline document ids."""
    for query in iter_queries(queries_file):
        judged = qrels.get(query.query_id)
        if judged is None:
            continue  # a query of another split
        kept = {doc_id: grade for doc_id, grade in judged.items() if doc_id in present}
        if not kept:
            # Its relevant documents are not in the corpus file: nothing could ever be found.
            summary.queries_without_relevant_documents += 1
            continue
        relevance = {pipeline_doc_id(summary.source, d): grade for d, grade in kept.items()}
        yield GoldenQuestion(
            id=query.query_id,
            question=query.text,
            principal=f"user:{summary.user}",
            relevant_doc_ids=tuple(relevance),
            relevance=None if set(relevance.values()) == {1} else relevance,
            extra={
                "beir": {
                    "dataset": summary.dataset,
                    "split": summary.split,
                    "query_id": query.query_id,
                    "doc_ids": list(kept),
                }
            },
        )


def imported_beir_ids(source_folder: Path) -> set[str]:
    """The BEIR ids of the documents an import wrote to `source_folder` (for reference runs
    over exactly the same documents)."""
    return {
        beir_id_from_file_name(path.name)
        for path in source_folder.glob(f"*{DOCUMENT_SUFFIX}")
        if not path.name.startswith((".", "_"))
    }
