"""The HTTP API through a real uvicorn server on 127.0.0.1, on the real embedded PostgreSQL.

The corpus is written with the pipeline's library functions and the fake embedder (the same
helpers as `test_retrieval.py`), two tenants: `acme` (groups staff, hr) and `globex`. The app
gets the fake embedder injected, so no model is loaded; everything else is what `rag-pipeline
serve` runs: the lifespan (migrations, pool), the middleware, the auth, the routes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
import yaml

from rag_pipeline import cli
from rag_pipeline.api import create_app, routes
from rag_pipeline.lib import api_keys, database
from rag_pipeline.lib.catalog import load_user_access
from rag_pipeline.lib.embedding import Embedder
from rag_pipeline.settings import Settings
from rag_pipeline_tests.conftest import create_database
from rag_pipeline_tests.fakes import HashedBagOfWordsEmbedder
from rag_pipeline_tests.small_corpus import DOCS, build, ingest

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 2048
MAX_QUERY = 300
USERS = {
    "ann": {"tenant": "acme", "groups": ["staff"]},
    "bob": {"tenant": "acme", "groups": ["staff", "hr"]},
    "cyd": {"tenant": "globex", "groups": ["staff"]},
    "dave": {"tenant": "acme", "groups": ["staff"]},
}
ROUTES = {
    "/healthz",
    "/readyz",
    "/v1/search",
    "/v1/answer",
    "/v1/chunks/{chunk_id}/lineage",
    "/v1/index/versions",
}
QUERIES = [
    "VPN portal error ACN-204",
    "parental leave request",
    "restore the billing backup",
    "consumer lag of the billing topic",
    "globex token expired",
]

ANSWER_MODULE_EXISTS = importlib.util.find_spec("rag_pipeline.lib.retrieval.answer") is not None
QUERY_LOG_MODULE_EXISTS = (
    importlib.util.find_spec("rag_pipeline.lib.retrieval.query_log") is not None
)


class LiveServer:
    """`uvicorn.Server` in a thread on an ephemeral port, stopped on exit."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        app = create_app(settings, embedder=embedder or HashedBagOfWordsEmbedder())
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def client(self, secret: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.url, headers=headers, trust_env=False, timeout=30)


def write_directory(path: Path, users: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump({"users": users}))


def settings_for(url: str, directory: Path, **overrides: Any) -> Settings:
    base = Settings(
        database_url=url,
        directory_file=directory,
        api_max_body_bytes=MAX_BODY,
        api_rate_limit="1000/minute",
        max_query_chars=MAX_QUERY,
    )
    return replace(base, **overrides)


def new_key(url: str, directory: Path, user: str) -> tuple[int, str]:
    with database.connection(url) as conn:
        created = api_keys.create_key(conn, load_user_access(directory, user))
    return created.key.key_id, created.secret


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api") / "directory.yaml"
    write_directory(path, USERS)
    return path


@pytest.fixture(scope="module")
def served_url(pg_data_dir: Path) -> str:
    """A database with the two tenants' documents and a serving version."""
    url = create_database(pg_data_dir)
    with database.connection(url) as conn:
        ingest(conn, DOCS)
        build(conn)
    return url


@pytest.fixture(scope="module")
def api(served_url: str, directory: Path) -> Iterator[LiveServer]:
    with LiveServer(settings_for(served_url, directory)) as server:
        yield server


@pytest.fixture(scope="module")
def keys(served_url: str, directory: Path) -> dict[str, str]:
    return {user: new_key(served_url, directory, user)[1] for user in ("ann", "bob", "cyd")}


def search(client: httpx.Client, query: str, **body: Any) -> httpx.Response:
    return client.post("/v1/search", json={"query": query, **body})


def doc_ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {hit["doc_id"] for hit in response.json()["hits"]}


def chunk_ids_of(url: str, doc_id: str) -> list[str]:
    with database.connection(url) as conn:
        rows = conn.execute(
            "SELECT chunk_id FROM rag.chunks WHERE doc_id = %s ORDER BY chunk_id", (doc_id,)
        ).fetchall()
    assert rows
    return [chunk_id for (chunk_id,) in rows]


# -- authentication ---------------------------------------------------------------------------


def test_missing_wrong_and_revoked_keys_get_401(
    api: LiveServer, served_url: str, directory: Path
) -> None:
    with api.client() as anonymous:
        for response in (
            search(anonymous, "vpn"),
            anonymous.get("/v1/index/versions"),
            anonymous.get(f"/v1/chunks/{chunk_ids_of(served_url, 's:vpn.txt')[0]}/lineage"),
        ):
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        basic = anonymous.get("/v1/index/versions", headers={"Authorization": "Basic YTpi"})
        assert_error(basic, 401, "unauthorized")

    key_id, secret = new_key(served_url, directory, "ann")
    with api.client(secret[:-1] + ("A" if secret[-1] != "A" else "B")) as wrong:
        assert_error(search(wrong, "vpn"), 401, "unauthorized")
    with api.client(secret) as client:
        assert search(client, "vpn").status_code == 200
        with database.connection(served_url) as conn:
            api_keys.revoke_key(conn, key_id)
        # Revocation takes effect on the next request: keys are not cached.
        revoked = assert_error(search(client, "vpn"), 401, "unauthorized")
    with api.client("rag_" + "x" * 43) as unknown:
        # A revoked key and an unknown key are indistinguishable.
        assert assert_error(search(unknown, "vpn"), 401, "unauthorized") == revoked


def test_a_key_whose_user_left_the_directory_gets_403_and_groups_narrow_at_once(
    api: LiveServer, served_url: str, directory: Path
) -> None:
    _, dave = new_key(served_url, directory, "dave")
    _, bob = new_key(served_url, directory, "bob")
    with api.client(dave) as dave_client, api.client(bob) as bob_client:
        assert search(dave_client, "vpn portal").status_code == 200
        assert "s:leave.txt" in doc_ids(search(bob_client, "parental leave", limit=20))
        try:
            narrowed = {user: entry for user, entry in USERS.items() if user != "dave"}
            narrowed["bob"] = {"tenant": "acme", "groups": ["staff"]}
            write_directory(directory, narrowed)
            assert_error(search(dave_client, "vpn portal"), 403, "principal_revoked")
            # bob's key was made while he was in hr: out of hr, the key no longer reads it.
            assert "s:leave.txt" not in doc_ids(search(bob_client, "parental leave", limit=20))
        finally:
            write_directory(directory, USERS)
        assert search(dave_client, "vpn portal").status_code == 200


# -- limits -----------------------------------------------------------------------------------


def test_bodies_over_the_limit_get_413_before_authentication(
    api: LiveServer, keys: dict[str, str]
) -> None:
    oversized = {"query": "vpn " * (MAX_BODY // 4 + 10)}
    with api.client() as anonymous:
        # Declared Content-Length over the limit: refused from the headers, without a key.
        error = assert_error(anonymous.post("/v1/search", json=oversized), 413, "request_too_large")
        assert "RAG_API_MAX_BODY_BYTES" in error["message"]

        # No Content-Length (chunked): counted while it is read.
        def chunks() -> Iterator[bytes]:
            yield b'{"query": "'
            for _ in range(MAX_BODY // 64 + 2):
                yield b"vpn " * 16
            yield b'"}'

        response = anonymous.post(
            "/v1/search", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "request_too_large")
    with api.client(keys["ann"]) as client:
        # Just under the limit goes through to the usual checks (here: the query length cap).
        under = {"query": "vpn " * ((MAX_BODY - 40) // 4)}
        assert len(httpx.Request("POST", "/", json=under).content) <= MAX_BODY
        assert_error(client.post("/v1/search", json=under), 422, "query_too_long")


def test_each_key_is_rate_limited_on_its_own(
    served_url: str, directory: Path, keys: dict[str, str]
) -> None:
    settings = settings_for(served_url, directory, api_rate_limit="3/minute")
    _, first = new_key(served_url, directory, "ann")
    _, second = new_key(served_url, directory, "ann")
    with LiveServer(settings) as server:
        with server.client(first) as client:
            for _ in range(3):
                assert client.get("/v1/index/versions").status_code == 200
            limited = client.get("/v1/index/versions")
            assert_error(limited, 429, "rate_limited")
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            assert_error(search(client, "vpn"), 429, "rate_limited")
        with server.client(second) as other:
            assert other.get("/v1/index/versions").status_code == 200
        with server.client() as anonymous:
            # Health checks need no key and are not limited.
            assert all(anonymous.get("/healthz").status_code == 200 for _ in range(5))


def test_bad_bodies_get_422(api: LiveServer, keys: dict[str, str]) -> None:
    with api.client(keys["ann"]) as client:
        for body in (
            {},
            {"query": ""},
            {"query": "vpn", "limit": 0},
            {"query": "vpn", "limit": 10_000},
            {"query": "vpn", "mode": "fuzzy"},
            {"query": "vpn", "rerenk": False},
            {"query": 42},
            {"query": "vpn", "index_version": -1},
        ):
            error = assert_error(client.post("/v1/search", json=body), 422, "validation_error")
            assert isinstance(error["details"], list) and error["details"]
        not_json = client.post(
            "/v1/search", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert_error(not_json, 422, "validation_error")
        assert_error(search(client, "   "), 422, "validation_error")
        too_long = assert_error(search(client, "x" * (MAX_QUERY + 1)), 422, "query_too_long")
        assert "RAG_MAX_QUERY_CHARS" in too_long["message"]
        unknown_version = search(client, "vpn", index_version=9999)
        assert_error(unknown_version, 404, "unknown_index_version")


# -- permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "vector", "lexical"])
def test_a_tenants_key_never_sees_another_tenants_documents(
    api: LiveServer, keys: dict[str, str], mode: str
) -> None:
    acme_docs = {f"s:{name}" for name, (tenant, _, _) in DOCS.items() if tenant == "acme"}
    hr_docs = {"s:leave.txt"}
    seen: dict[str, set[str]] = {user: set() for user in keys}
    for user, secret in keys.items():
        with api.client(secret) as client:
            for query in QUERIES:
                seen[user] |= doc_ids(search(client, query, mode=mode, limit=50))
    assert seen["cyd"] == {"s:globex-vpn.txt"}
    assert seen["ann"] == acme_docs - hr_docs
    assert seen["bob"] == acme_docs


def test_lineage_only_for_chunks_the_key_may_read(
    api: LiveServer, served_url: str, keys: dict[str, str]
) -> None:
    globex_chunk = chunk_ids_of(served_url, "s:globex-vpn.txt")[0]
    hr_chunk = chunk_ids_of(served_url, "s:leave.txt")[0]
    with api.client(keys["cyd"]) as cyd:
        trace = cyd.get(f"/v1/chunks/{globex_chunk}/lineage")
        assert trace.status_code == 200, trace.text
        assert trace.json()["document"]["doc_id"] == "s:globex-vpn.txt"
        assert trace.json()["source_bytes"]["sha256_verified"] is True
        assert_error(cyd.get(f"/v1/chunks/{hr_chunk}/lineage"), 404, "chunk_not_found")
    with api.client(keys["ann"]) as ann:
        # Another tenant's chunk and a chunk that does not exist look the same.
        other_tenant = assert_error(
            ann.get(f"/v1/chunks/{globex_chunk}/lineage"), 404, "chunk_not_found"
        )
        missing = assert_error(ann.get("/v1/chunks/no-such-chunk/lineage"), 404, "chunk_not_found")
        assert other_tenant["message"].replace(globex_chunk, "ID") == missing["message"].replace(
            "no-such-chunk", "ID"
        )
        assert_error(ann.get(f"/v1/chunks/{hr_chunk}/lineage"), 404, "chunk_not_found")
    with api.client(keys["bob"]) as bob:
        assert bob.get(f"/v1/chunks/{hr_chunk}/lineage").status_code == 200


# -- responses --------------------------------------------------------------------------------


def test_search_returns_citations_and_retrieval_metadata(
    api: LiveServer, served_url: str, keys: dict[str, str]
) -> None:
    with database.connection(served_url) as conn:
        (serving,) = conn.execute("SELECT version_id FROM rag.active_index").fetchone()
    with api.client(keys["ann"]) as client:
        response = search(client, "VPN portal error ACN-204", limit=2, rerank=False)
        assert response.status_code == 200, response.text
        body = response.json()
        top = body["hits"][0]
        assert top["doc_id"] == "s:vpn.txt" and top["uri"] == "file:///s/vpn.txt"
        assert top["title"] == "vpn" and top["version_id"] == serving
        assert 0 <= top["char_start"] < top["char_end"] and isinstance(top["heading_path"], list)
        assert set(top["ranks"]) >= {"vector", "lexical", "fusion"}
        retrieval = body["retrieval"]
        assert retrieval["version_id"] == serving and len(body["hits"]) <= 2
        assert retrieval["mode_requested"] == retrieval["mode_used"] == "hybrid"
        assert retrieval["fallback_reason"] is None
        assert retrieval["timings_ms"]["total"] > 0
        # An explicit version reads that version.
        pinned = search(client, "vpn", index_version=serving).json()
        assert pinned["retrieval"]["version_id"] == serving

        if QUERY_LOG_MODULE_EXISTS:
            with database.connection(served_url) as conn:
                (logged,) = conn.execute(
                    "SELECT count(*) FROM rag.query_log"
                    " WHERE kind = 'search' AND channel = 'api' AND user_id = 'ann'"
                ).fetchone()
            assert logged >= 2

        versions = client.get("/v1/index/versions")
        assert versions.status_code == 200
        listed = versions.json()
        assert listed["serving_version_id"] == serving
        assert [v["version_id"] for v in listed["versions"] if v["serving"]] == [serving]
        assert "document_count" not in listed["versions"][0]


def test_openapi_lists_every_route_and_errors_are_json(api: LiveServer) -> None:
    with api.client() as client:
        schema = client.get("/openapi.json").json()
        assert set(schema["paths"]) == ROUTES
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        search_responses = schema["paths"]["/v1/search"]["post"]["responses"]
        assert {"200", "401", "413", "422", "429", "503"} <= set(search_responses)
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["status"] == "ready"
        assert_error(client.get("/v1/nothing-here"), 404, "not_found")
        assert_error(client.delete("/v1/search"), 405, "method_not_allowed")


def test_answer_is_501_without_the_answer_module(
    api: LiveServer, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server runs in this process: point the route at a module that does not exist.
    monkeypatch.setattr(routes, "ANSWER_MODULE", "rag_pipeline.lib.retrieval.no_such_module")
    with api.client(keys["ann"]) as client:
        assert_error(client.post("/v1/answer", json={"question": "vpn"}), 501, "not_implemented")


@pytest.mark.skipif(not ANSWER_MODULE_EXISTS, reason="rag_pipeline.lib.retrieval.answer missing")
def test_answers_cite_only_what_the_key_may_read(
    api: LiveServer, served_url: str, keys: dict[str, str]
) -> None:
    question = {
        "question": "Globex VPN portal: what does error ACN-204 mean, has the token expired?"
    }
    with api.client(keys["cyd"]) as client:
        response = client.post("/v1/answer", json=question)
    assert response.status_code == 200, response.text
    answered = response.json()
    assert not answered["refused"], answered
    cited = {citation["doc_id"] for citation in answered["citations"]}
    assert cited == {"s:globex-vpn.txt"}
    assert all(sentence["citations"] for sentence in answered["sentences"])
    with api.client(keys["ann"]) as client:
        other = client.post("/v1/answer", json=question).json()
    assert {citation["doc_id"] for citation in other["citations"]} <= {"s:vpn.txt"}
    assert "globex" not in json.dumps(other).lower()
    # Both answers were logged (by `answer`), as channel "api", with each asker's tenant.
    with database.connection(served_url) as conn:
        logged = conn.execute(
            "SELECT DISTINCT tenant FROM rag.query_log WHERE kind = 'answer' AND channel = 'api'"
        ).fetchall()
    assert {tenant for (tenant,) in logged} == {"acme", "globex"}


# -- readiness and the empty database --------------------------------------------------------


def test_not_ready_and_search_503_until_a_version_serves(
    pg_data_dir: Path, directory: Path
) -> None:
    url = create_database(pg_data_dir)
    _, secret = new_key(url, directory, "ann")
    with LiveServer(settings_for(url, directory)) as server, server.client(secret) as client:
        assert client.get("/healthz").status_code == 200
        assert_error(client.get("/readyz"), 503, "no_serving_version")
        assert_error(search(client, "vpn"), 503, "no_serving_version")
        assert client.get("/v1/index/versions").json()["serving_version_id"] is None

        with database.connection(url) as conn:
            ingest(conn, DOCS)
            version = build(conn).version_id
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["serving_version_id"] == version
        assert "s:vpn.txt" in doc_ids(search(client, "vpn portal"))


class OtherModelEmbedder(HashedBagOfWordsEmbedder):
    model_key = "fake-other-model@v1"


def test_not_ready_when_the_loaded_model_is_not_the_serving_versions(
    served_url: str, directory: Path, keys: dict[str, str]
) -> None:
    settings = settings_for(served_url, directory)
    with LiveServer(settings, OtherModelEmbedder()) as server, server.client(keys["ann"]) as client:
        error = assert_error(client.get("/readyz"), 503, "embedder_mismatch")
        assert "fake-other-model@v1" in error["message"]
        # Vector search is refused (its vectors are not comparable); lexical still answers.
        assert_error(search(client, "vpn", mode="vector"), 503, "no_serving_version")
        assert "s:vpn.txt" in doc_ids(search(client, "vpn portal", mode="lexical"))


# -- the CLI ----------------------------------------------------------------------------------


def test_api_key_commands(
    served_url: str,
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RAG_DATABASE_URL", served_url)
    monkeypatch.setenv("RAG_DIRECTORY_FILE", str(directory))
    assert cli.main(["api-key", "create", "--user", "cyd", "--label", "cli test"]) == 0
    captured = capsys.readouterr()
    secret = captured.out.strip()
    assert secret.startswith("rag_") and "tenant globex" in captured.err

    with psycopg.connect(served_url) as conn:
        key = api_keys.verify_key(conn, secret)
    assert key is not None and key.user == "cyd" and key.tenant == "globex"

    assert cli.main(["api-key", "list"]) == 0
    listing = capsys.readouterr().out
    assert secret not in listing and secret[:8] in listing and "cli test" in listing

    assert cli.main(["api-key", "revoke", str(key.key_id)]) == 0
    assert "revoked" in capsys.readouterr().out
    with psycopg.connect(served_url) as conn:
        assert api_keys.verify_key(conn, secret) is None
    assert cli.main(["api-key", "list"]) == 0
    assert "cli test" not in capsys.readouterr().out  # revoked keys only with --all
    assert cli.main(["api-key", "list", "--all"]) == 0
    assert any(
        "cli test" in line and "revoked" in line for line in capsys.readouterr().out.split("\n")
    )

    assert cli.main(["api-key", "create", "--user", "nobody"]) == 1
    assert "unknown user" in capsys.readouterr().err


SERVE = """
import sys
from rag_pipeline_tests.conftest import install_network_guard
install_network_guard()
from rag_pipeline.cli import main
sys.exit(main(["serve"]))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_rag_pipeline_serve_reads_its_settings_and_falls_back_without_a_model(
    served_url: str, directory: Path, tmp_path: Path
) -> None:
    """`rag-pipeline serve` as a process: RAG_API_* reach the server, and a model that cannot be
    loaded leaves search on the lexical leg instead of failing startup."""
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "RAG_DATABASE_URL": served_url,
        "RAG_DIRECTORY_FILE": str(directory),
        "RAG_EMBEDDING_MODEL": str(tmp_path / "no-such-model"),
        "RAG_API_PORT": str(port),
        "RAG_API_MAX_BODY_BYTES": "500",
        "RAG_API_RATE_LIMIT": "2/minute",
    }
    _, secret = new_key(served_url, directory, "cyd")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None, server.communicate()[1][-3000:]
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "rag-pipeline serve did not start"
                time.sleep(0.2)
            headers = {"Authorization": f"Bearer {secret}"}
            found = client.post("/v1/search", json={"query": "globex vpn"}, headers=headers)
            assert found.status_code == 200, found.text
            retrieval = found.json()["retrieval"]
            assert retrieval["mode_used"] == "lexical" and retrieval["fallback_reason"]
            assert {hit["doc_id"] for hit in found.json()["hits"]} == {"s:globex-vpn.txt"}
            too_big = client.post("/v1/search", json={"query": "x" * 600}, headers=headers)
            assert_error(too_big, 413, "request_too_large")
            assert client.get("/v1/index/versions", headers=headers).status_code == 200
            limited = client.get("/v1/index/versions", headers=headers)
            assert_error(limited, 429, "rate_limited")
    finally:
        server.terminate()
        server.wait(timeout=30)
