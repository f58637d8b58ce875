"""Randomized permission matrix: many principals, many queries, every retrieval path.

One database (seeded, reproducible) holds documents of 8 tenants whose ACLs name 12 groups
whose names repeat in every tenant (so only the tenant check keeps tenants apart), single users,
users of another tenant, or nobody at all. A version is built and promoted; then, without a
rebuild, some documents are narrowed, widened, moved to another tenant, deleted or refused by the
source stage, so the serving snapshot and the current state differ.

The oracle is an exact SQL query written here (not `rag.readable_chunks`): the chunks of the
serving version whose snapshot tenant and ACL admit the reader AND whose document, as it is now,
is present, of the reader's tenant, with an ACL naming one of the reader's principals, and not
refused by the source stage. It is checked against this test's own model of the documents too.

200 principals x 50 queries each, through the library paths: vector, lexical, hybrid, and `answer`
with a tiny random cross-encoder built here (its retrieved chunks are the reranked path, and every
citation is checked too); none may return a chunk outside the oracle. By default each (principal,
query) pair takes one of the four in turn (2,500 pairs per path, every principal on every path),
which keeps the module near 80 s on two busy cores; `RAG_MATRIX_FULL=1` sends all 240 principals'
pairs through every path (12,000 per path, about five minutes). Through a real uvicorn on
127.0.0.1, 20 keys x 10 queries go through `/v1/search` and `/v1/answer` the same way (random mode,
reranker on or off).

With a word every chunk holds, a limit k returns exactly the reader's readable set when it has
fewer than k chunks, and k readable chunks otherwise: every user, k = 10 (vector, lexical, hybrid,
reranked) and k = 1000 (vector, lexical, hybrid); over HTTP, the sampled keys with k = 100, the
API's largest limit. `RAG_MATRIX_SEED=<n>` replays another seed.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from rag_pipeline.lib import api_keys, database
from rag_pipeline.lib.catalog import UserAccess
from rag_pipeline.lib.retrieval import HYBRID, LEXICAL, VECTOR, RetrievalOptions, retrieve
from rag_pipeline.lib.retrieval.answer import EvidencePolicy, answer
from rag_pipeline.settings import Settings
from rag_pipeline_tests.conftest import create_database
from rag_pipeline_tests.small_corpus import EMBEDDER, build, ingest, save_tiny_cross_encoder

SEED = int(os.environ.get("RAG_MATRIX_SEED", "20261130"))
TENANTS = tuple(f"t{n}" for n in range(8))
# The same group names in every tenant.
GROUPS = tuple(f"group:g{n}" for n in range(12))
NOBODY = "group:nobody"  # no user is a member anywhere
SOURCES = ("s0", "s1", "s2")
USERS_COUNT = 240
DOCS_PER_TENANT = 40
QUERIES_PER_PRINCIPAL = 50
# RAG_MATRIX_FULL=1: every user, every (principal, query) pair through every library path
# (about five minutes). By default 200 of the 240 users, each pair taking one path in turn, so
# the module stays near 80 s on two busy cores (every user still goes through the k test).
FULL_MATRIX = os.environ.get("RAG_MATRIX_FULL", "") not in ("", "0")
PRINCIPALS = USERS_COUNT if FULL_MATRIX else 200
LIBRARY_PATHS = (VECTOR, LEXICAL, HYBRID, "answer")  # "answer" also runs the reranked path
K = 10
EVERYTHING = 1000
HTTP_MAX_LIMIT = 100  # the API's largest `limit`
HTTP_PRINCIPALS = 20
HTTP_QUERIES = 10
# A word in every paragraph of every document: a query for it matches every chunk.
EVERY_CHUNK = "memo"
# fmt: off
VOCABULARY = (
    "vpn", "failover", "invoice", "pallet", "freight", "backup", "restore", "kafka", "redis",
    "leave", "travel", "password", "outage", "ticket", "webhook", "quota", "billing", "ledger",
    "payroll", "audit", "laptop", "printer", "badge", "parking", "canteen", "roster", "shift",
    "rota", "budget", "forecast", "contract", "vendor",
)
# fmt: on
# Answers: a permissive evidence rule, so most answers cite something (the rule itself is
# tested elsewhere; here every citation is what matters).
ANSWER_POLICY = EvidencePolicy(min_similarity=0.0, min_coverage=0.0, similarity_floor=0.0)


@dataclass(frozen=True)
class Doc:
    tenant: str
    acl: frozenset[str]
    present: bool = True
    refused: bool = False

    def admits(self, access: UserAccess) -> bool:
        return self.tenant == access.tenant and bool(self.acl & set(access.principals))


@dataclass
class Matrix:
    url: str
    conn: psycopg.Connection
    version_id: int
    users: dict[str, UserAccess]
    # chunk ids each user may read (the SQL oracle)
    oracle: dict[str, frozenset[str]]
    texts: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def bump(self, key: str, by: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + by


def say(text: str) -> None:
    """Coverage figures, on stderr (shown with `pytest -s`, and with any failure)."""
    sys.stderr.write(text + "\n")


def fail(message: str) -> str:
    return f"seed {SEED} (replay: RAG_MATRIX_SEED={SEED}): {message}"


def make_users(rng: random.Random) -> dict[str, UserAccess]:
    users = {}
    for n in range(USERS_COUNT):
        name = f"u{n:03d}"
        groups = rng.sample(GROUPS, rng.choice((0, 1, 2, 2, 3, 4, 6)))
        users[name] = UserAccess(name, rng.choice(TENANTS), (f"user:{name}", *sorted(groups)))
    return users


def random_acl(rng: random.Random, tenant: str, users: dict[str, UserAccess]) -> frozenset[str]:
    same = [f"user:{u}" for u, a in users.items() if a.tenant == tenant]
    other = [f"user:{u}" for u, a in users.items() if a.tenant != tenant]
    roll = rng.random()
    if roll < 0.45:
        return frozenset(rng.sample(GROUPS, rng.randint(1, 3)))
    if roll < 0.6:
        return frozenset({rng.choice(same)})  # one reader only
    if roll < 0.7:
        return frozenset({rng.choice(other)})  # a user of another tenant: nobody here
    if roll < 0.8:
        return frozenset({NOBODY})
    return frozenset({*rng.sample(GROUPS, rng.randint(1, 2)), rng.choice(same + other)})


def text_of(rng: random.Random, name: str) -> str:
    paragraphs = rng.choice((1, 1, 1, 2, 3))
    return "\n\n".join(
        f"{EVERY_CHUNK} {name} part {p}: " + " ".join(rng.choices(VOCABULARY, k=rng.randint(8, 40)))
        for p in range(paragraphs)
    )


def oracle_chunks(conn: psycopg.Connection, version_id: int, access: UserAccess) -> frozenset[str]:
    """The serving rule, written out: snapshot AND current state (not rag.readable_chunks)."""
    rows = conn.execute(
        """
        SELECT m.chunk_id
        FROM rag.index_version_chunks m
        JOIN rag.documents d ON d.doc_id = m.doc_id
        WHERE m.version_id = %(version)s
          AND m.tenant = %(tenant)s AND m.acl_principals && %(principals)s::text[]
          AND d.deleted_at IS NULL
          AND d.tenant = %(tenant)s AND d.acl_principals && %(principals)s::text[]
          AND NOT EXISTS (SELECT 1 FROM rag.quarantine q
                          WHERE q.doc_id = d.doc_id AND q.content_hash = d.content_hash
                            AND q.stage = 'source')
        """,
        {"version": version_id, "tenant": access.tenant, "principals": list(access.principals)},
    ).fetchall()
    return frozenset(chunk_id for (chunk_id,) in rows)


@pytest.fixture(scope="module")
def matrix(pg_data_dir: Path) -> Iterator[Matrix]:
    rng = random.Random(SEED)
    users = make_users(rng)
    # doc id -> (source, name, text); the model: snapshot at build time and state now.
    files: dict[str, tuple[str, str, str]] = {}
    built: dict[str, Doc] = {}
    for tenant in TENANTS:
        for n in range(DOCS_PER_TENANT):
            source, name = rng.choice(SOURCES), f"{tenant}-d{n:02d}.txt"
            files[f"{source}:{name}"] = (source, name, text_of(rng, f"{tenant}d{n}"))
            built[f"{source}:{name}"] = Doc(tenant, random_acl(rng, tenant, users))
    url = create_database(pg_data_dir)
    with database.connection(url) as conn:

        def scan(state: dict[str, Doc]) -> None:
            for source in SOURCES:
                docs = {
                    name: (state[d].tenant, tuple(sorted(state[d].acl)), text)
                    for d, (s, name, text) in files.items()
                    if s == source and state[d].present
                }
                refused = frozenset(
                    files[d][1] for d, doc in state.items() if doc.refused and files[d][0] == source
                )
                ingest(conn, docs, source, refused=refused)

        scan(built)
        version_id = build(conn).version_id
        # After promotion, without rebuilding: the current state moves away from the snapshot.
        now = dict(built)
        changed: dict[str, int] = {}
        for doc_id in rng.sample(sorted(built), len(built) // 3):
            doc = built[doc_id]
            change = rng.choice(("narrow", "widen", "move", "delete", "refuse", "revoke"))
            changed[change] = changed.get(change, 0) + 1
            if change == "narrow" and len(doc.acl) > 1:
                now[doc_id] = Doc(doc.tenant, frozenset(rng.sample(sorted(doc.acl), 1)))
            elif change == "widen":
                # Takes effect only once a version built after it serves: not here.
                now[doc_id] = Doc(doc.tenant, doc.acl | set(rng.sample(GROUPS, 3)))
            elif change == "move":
                other = rng.choice([t for t in TENANTS if t != doc.tenant])
                now[doc_id] = Doc(other, doc.acl)
            elif change == "delete":
                now[doc_id] = Doc(doc.tenant, doc.acl, present=False)
            elif change == "refuse":
                now[doc_id] = Doc(doc.tenant, doc.acl, refused=True)
            else:
                now[doc_id] = Doc(doc.tenant, frozenset({NOBODY}))
        scan(now)
        chunk_doc = dict(
            conn.execute(
                "SELECT chunk_id, doc_id FROM rag.index_version_chunks WHERE version_id = %s",
                (version_id,),
            ).fetchall()
        )
        oracle = {}
        masked = 0
        for name, access in users.items():
            oracle[name] = oracle_chunks(conn, version_id, access)
            # The oracle agrees with this test's own model of the documents.
            in_snapshot = {d for d, doc in built.items() if doc.admits(access)}
            expected = {
                d
                for d in in_snapshot
                if now[d].present and not now[d].refused and now[d].admits(access)
            }
            assert {chunk_doc[c] for c in oracle[name]} == expected, fail(f"oracle for {name}")
            masked += len(in_snapshot - expected)
        sizes = sorted(len(chunks) for chunks in oracle.values())
        result = Matrix(url, conn, version_id, users, oracle)
        result.counts.update(
            documents=len(files),
            chunks=len(chunk_doc),
            changed_after_promotion=sum(changed.values()),
            snapshot_docs_masked_by_current_state=masked,
            readers_with_nothing=sum(1 for s in sizes if s == 0),
        )
        say(f"\nseed {SEED}: {result.counts}; changes {changed}; readable set sizes {sizes}")
        # The corpus is meant to reach these cases; a vacuous matrix proves nothing.
        assert masked >= 100 and sizes[-1] >= 20 and sum(1 for s in sizes if 0 < s < 10) >= 20
        yield result


def queries_for(rng: random.Random, count: int) -> list[str]:
    return [" ".join(rng.choices(VOCABULARY, k=rng.randint(1, 4))) for _ in range(count)]


def check(matrix: Matrix, user: str, path: str, query: str, chunk_ids: list[str]) -> None:
    leaked = set(chunk_ids) - matrix.oracle[user]
    assert not leaked, fail(
        f"{path}: {user} ({matrix.users[user]}) asking {query!r} was served {sorted(leaked)}"
    )
    matrix.bump(f"results[{path}]", len(chunk_ids))
    matrix.bump(f"requests[{path}]")


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A randomly initialised one-layer BERT cross-encoder, built and saved here (no download)."""
    path = save_tiny_cross_encoder(
        tmp_path_factory.mktemp("matrix-cross-encoder"),
        {*VOCABULARY, EVERY_CHUNK, "part", *(f"t{n}d" for n in range(8))},
    )
    import torch

    # One thread: a model this small spends more on thread hand-offs than on arithmetic (the
    # reranked path runs twice as fast on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield path
    torch.set_num_threads(threads)


def library_paths(
    matrix: Matrix, access: UserAccess, query: str, limit: int, path: str, reranker: str
) -> dict[str, list[str]]:
    """Chunk ids each path returns for one request; `answer` runs the reranked path too."""
    conn = matrix.conn
    if path in (VECTOR, LEXICAL, HYBRID):
        # Half the dense requests also run pseudo-relevance feedback (a second dense round).
        feedback = 3 if path != LEXICAL and limit in (3, 10) else 0
        options = RetrievalOptions(mode=path, limit=limit, feedback_chunks=feedback)
        result = retrieve(conn, access, query, options, EMBEDDER)
        assert result.mode_used == path, result  # no silent fallback to another leg
        return {path: [hit.chunk_id for hit in result.hits]}
    # The cross-encoder reranks exactly the `limit` best fused chunks (depth = limit), inside
    # `answer`, whose retrieval is `retrieve` with these options; every citation is checked too.
    options = RetrievalOptions(mode=HYBRID, limit=limit, reranker=reranker, rerank_depth=limit)
    built = answer(conn, access, query, options, EMBEDDER, policy=ANSWER_POLICY)
    assert built.retrieval.mode_used == HYBRID, built.retrieval
    if built.retrieval.hits:
        assert built.retrieval.reranker == f"cross-encoder:{reranker}", built.retrieval
    matrix.bump("answers_refused", int(built.refused))
    cited = [citation.chunk_id for citation in built.citations]
    cited += [chunk_id for sentence in built.sentences for chunk_id in sentence.citations]
    return {"reranked": [hit.chunk_id for hit in built.retrieval.hits], "answer": cited}


def test_every_library_path_serves_only_what_each_principal_may_read(
    matrix: Matrix, tiny_cross_encoder: Path
) -> None:
    """Principals x queries, each pair through the library paths (see FULL_MATRIX)."""
    rng = random.Random(SEED + 1)
    started = time.perf_counter()
    spent: dict[str, float] = {}
    users = sorted(matrix.users)[:PRINCIPALS]
    for index, user in enumerate(users):
        access = matrix.users[user]
        for number, query in enumerate(queries_for(rng, QUERIES_PER_PRINCIPAL)):
            limit = rng.choice((1, 3, 5, 10))
            # Full: every path for every pair. Default: the paths in turn, shifted per
            # principal, so each principal meets every path on 1/4 of its queries.
            paths = LIBRARY_PATHS if FULL_MATRIX else [LIBRARY_PATHS[(number + index) % 4]]
            for path in paths:
                began = time.perf_counter()
                found = library_paths(matrix, access, query, limit, path, str(tiny_cross_encoder))
                spent[path] = spent.get(path, 0.0) + time.perf_counter() - began
                for name, chunk_ids in found.items():
                    check(matrix, user, name, query, chunk_ids)
    elapsed = time.perf_counter() - started
    say(
        f"\nlibrary paths ({'full' if FULL_MATRIX else 'one path per pair'}): {len(users)} "
        f"principals x {QUERIES_PER_PRINCIPAL} queries in {elapsed:.1f} s "
        f"(per path, s: { {k: round(v, 1) for k, v in spent.items()} })\n{matrix.counts}"
    )
    pairs = len(users) * QUERIES_PER_PRINCIPAL
    assert len(users) >= 200 and QUERIES_PER_PRINCIPAL >= 50
    for path in (VECTOR, LEXICAL, HYBRID, "reranked", "answer"):
        requests = matrix.counts[f"requests[{path}]"]
        assert requests == (pairs if FULL_MATRIX else pytest.approx(pairs / 4, abs=len(users))), (
            path
        )
        assert matrix.counts[f"results[{path}]"] > requests, (path, matrix.counts)


def test_a_filter_matching_fewer_than_k_chunks_returns_exactly_all_of_them(
    matrix: Matrix, tiny_cross_encoder: Path
) -> None:
    """A word every chunk holds: limit k returns all readable chunks if fewer than k, else k."""
    checked = {"fewer_than_k": 0, "at_least_k": 0, "nothing_readable": 0}
    for user, access in sorted(matrix.users.items()):
        readable = matrix.oracle[user]
        for limit in (K, EVERYTHING):
            # The reranked path once (depth 50 > every readable set): its cost is the model's.
            for mode in (VECTOR, LEXICAL, HYBRID, *(["reranked"] if limit == K else [])):
                options = (
                    RetrievalOptions(mode=mode, limit=limit)
                    if mode != "reranked"
                    else RetrievalOptions(
                        mode=HYBRID, limit=limit, reranker=str(tiny_cross_encoder)
                    )
                )
                result = retrieve(matrix.conn, access, EVERY_CHUNK, options, EMBEDDER)
                assert result.mode_used == options.mode, result
                hits = result.hits
                returned = [hit.chunk_id for hit in hits]
                check(matrix, user, f"{mode}@k", EVERY_CHUNK, returned)
                assert len(returned) == len(set(returned)), fail(f"{mode}: duplicates {returned}")
                if len(readable) < limit:
                    assert set(returned) == readable, fail(
                        f"{mode}, limit {limit}: {user} may read {len(readable)} chunks "
                        f"{sorted(readable)}, got {len(returned)} {sorted(returned)}"
                    )
                else:
                    assert len(returned) == limit, fail(f"{mode}: {user} got {len(returned)}")
        # The vector leg again on the HNSW index (a table this small is otherwise scanned
        # exactly): the strict iterative scan keeps going until k readable rows or the end.
        returned = vector_through_hnsw(matrix.conn, access, K)
        check(matrix, user, "vector_hnsw@k", EVERY_CHUNK, returned)
        expected_count = min(K, len(readable))
        assert len(returned) == expected_count, fail(f"HNSW: {user} got {sorted(returned)}")
        if not readable:
            checked["nothing_readable"] += 1
        else:
            checked["fewer_than_k" if len(readable) < K else "at_least_k"] += 1
    say(f"\nexactness with limit {K} (4 paths) and {EVERYTHING} (3 paths): {checked}")
    assert checked["fewer_than_k"] >= 60 and checked["at_least_k"] >= 60, checked


def vector_through_hnsw(conn: psycopg.Connection, access: UserAccess, limit: int) -> list[str]:
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_sort = off")
    try:
        options = RetrievalOptions(mode=VECTOR, limit=limit)
        hits = retrieve(conn, access, EVERY_CHUNK, options, EMBEDDER).hits
    finally:
        conn.execute("RESET enable_seqscan")
        conn.execute("RESET enable_sort")
    return [hit.chunk_id for hit in hits]


# -- HTTP ---------------------------------------------------------------------------------------


def test_http_search_and_answer_serve_only_what_each_key_may_read(
    matrix: Matrix, tiny_cross_encoder: Path, tmp_path: Path
) -> None:
    from rag_pipeline.lib.catalog import load_user_access
    from rag_pipeline_tests.test_api import LiveServer

    rng = random.Random(SEED + 2)
    directory = tmp_path / "directory.yaml"
    directory.write_text(
        yaml.safe_dump(
            {
                "users": {
                    user: {
                        "tenant": access.tenant,
                        "groups": [p.removeprefix("group:") for p in access.principals[1:]],
                    }
                    for user, access in matrix.users.items()
                }
            }
        )
    )
    settings = Settings(
        database_url=matrix.url,
        directory_file=directory,
        api_rate_limit="100000/minute",
        reranker=str(tiny_cross_encoder),
        answer_min_similarity=0.0,
        answer_min_coverage=0.0,
        answer_similarity_floor=0.0,
    )
    sample = rng.sample(sorted(matrix.users), HTTP_PRINCIPALS)
    # Readers with something to read and with nothing, both in the sample.
    assert any(matrix.oracle[u] for u in sample) and any(not matrix.oracle[u] for u in sample)
    secrets = {}
    for user in sample:
        access = load_user_access(directory, user)
        assert set(access.principals) == set(matrix.users[user].principals), user
        assert access.tenant == matrix.users[user].tenant
        secrets[user] = api_keys.create_key(matrix.conn, access).secret
    started = time.perf_counter()
    with LiveServer(settings, EMBEDDER) as server:
        for user in sample:
            readable = matrix.oracle[user]
            with server.client(secrets[user]) as client:
                for query in queries_for(rng, HTTP_QUERIES):
                    body = {
                        "limit": rng.choice((1, 5, 10, 20)),
                        "mode": rng.choice(("vector", "lexical", "hybrid")),
                        "rerank": rng.random() < 0.5,
                    }
                    found = ok(client.post("/v1/search", json={"query": query, **body}))
                    assert found["retrieval"]["mode_used"] == body["mode"], found["retrieval"]
                    check(
                        matrix, user, "http_search", query, [h["chunk_id"] for h in found["hits"]]
                    )
                    given = ok(client.post("/v1/answer", json={"question": query, **body}))
                    retrieved = given["retrieval"]["chunk_ids"]
                    cited = [c["chunk_id"] for c in given["citations"]]
                    cited += [c for sentence in given["sentences"] for c in sentence["citations"]]
                    check(matrix, user, "http_answer_retrieved", query, retrieved)
                    check(matrix, user, "http_answer_cited", query, cited)
                # Fewer readable chunks than k: exactly all of them, on every mode.
                for mode in ("vector", "lexical", "hybrid"):
                    body = {"query": EVERY_CHUNK, "mode": mode, "limit": HTTP_MAX_LIMIT}
                    hits = ok(client.post("/v1/search", json=body))["hits"]
                    returned = {hit["chunk_id"] for hit in hits}
                    check(matrix, user, "http_search@k", EVERY_CHUNK, list(returned))
                    if len(readable) < HTTP_MAX_LIMIT:
                        assert returned == readable, fail(f"http {mode}: {user} got {returned}")
    elapsed = time.perf_counter() - started
    http = {k: v for k, v in matrix.counts.items() if "http" in k}
    say(f"\nHTTP: {len(sample)} keys x {HTTP_QUERIES} queries in {elapsed:.1f} s: {http}")
    assert matrix.counts["requests[http_search]"] == HTTP_PRINCIPALS * HTTP_QUERIES
    assert matrix.counts["results[http_answer_cited]"] > 0


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()
