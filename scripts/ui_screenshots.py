#!/usr/bin/env python3
"""Open the Dagster UI headless and save what an operator sees, failing on missing content.

Starts `dagster-webserver` on this project exactly as `rag-pipeline ui` configures it (the same
`DAGSTER_HOME` under the data directory, storage in the embedded server's `dagster` database),
waits for it, then for each page saves a screenshot and checks the rendered DOM for the text an
operator relies on: the asset lineage, the `active_index` and `source_documents` asset pages
and the latest run's page. Exits non-zero if the server does not come up, no run exists, or a
page lacks expected text.

Usage (after `rag-pipeline --data-dir DIR run` so that there is something to show):
    .venv/bin/python scripts/ui_screenshots.py --out reports/ui [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LOCATION = "rag_pipeline"
GROUP = "rag_pipeline"
LATEST_RUN_QUERY = "{ runsOrError(limit: 1) { ... on Runs { results { runId jobName } } } }"


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    # Text the rendered page must contain (checked on the DOM Chromium dumps).
    expected: tuple[str, ...]
    # Tall enough for what matters on the page (the asset page's metadata is below the fold).
    height: int = 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_server(base_url: str, server: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{base_url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    return False


def graphql(base_url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def chromium(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=15000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def capture(base_url: str, page: Page, out: Path) -> list[str]:
    """Screenshot and DOM of one page; returns the expected texts it lacks."""
    url = f"{base_url}{page.path}"
    shot = chromium(
        f"--window-size=1600,{page.height}", f"--screenshot={out / f'{page.name}.png'}", url
    )
    if shot.returncode != 0:
        return [f"chromium failed ({shot.returncode}): {shot.stderr.strip()[-300:]}"]
    dom = chromium("--window-size=1600,1000", "--dump-dom", url)
    (out / f"{page.name}.html").write_text(dom.stdout)
    return [text for text in page.expected if text not in dom.stdout]


def pages(run_id: str) -> list[Page]:
    return [
        Page(
            "lineage",
            f"/locations/{LOCATION}/asset-groups/{GROUP}/lineage",
            ("source_documents", "chunk_embeddings", "vector_index", "active_index"),
        ),
        Page(
            "active_index",
            "/assets/active_index",
            (
                "active_index",
                "rag-platform",
                "rag.active_index",
                "serving_version_id",
                "previous_version_id",
                "actor",
                "reason",
                "gates_passed",
            ),
            height=2600,
        ),
        Page(
            "source_documents",
            "/assets/source_documents",
            ("rag.documents", "quarantined_all_sources", "quarantine_all_sources"),
            height=2600,
        ),
        Page("latest_run", f"/runs/{run_id}", (run_id[:8],)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "ui")
    parser.add_argument("--data-dir", help="as `rag-pipeline --data-dir` (default RAG_DATA_DIR)")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    args = parser.parse_args(argv)

    # The same environment `rag-pipeline ui` builds: DAGSTER_HOME, Dagster storage URL.
    if args.data_dir:
        os.environ["RAG_DATA_DIR"] = str(Path(args.data_dir).resolve())
    sys.path.insert(0, str(REPO_ROOT))
    from rag_pipeline.runner import prepare_dagster_home

    home = prepare_dagster_home(args.data_dir)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # The same storage (RAG_DAGSTER_PG_URL) through a private DAGSTER_HOME whose only difference
    # is that Dagster's "join the community" dialog is off: it would cover every screenshot.
    screenshot_home = out / "dagster_home"
    screenshot_home.mkdir(exist_ok=True)
    (screenshot_home / "dagster.yaml").write_text(
        (home / "dagster.yaml").read_text() + "\nnux:\n  enabled: false\n"
    )
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    webserver = str(Path(sys.executable).with_name("dagster-webserver"))
    log = (out / "webserver.log").open("wb")
    server = subprocess.Popen(
        [webserver, "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(screenshot_home)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    print(f"dagster-webserver on {base_url} (DAGSTER_HOME={home}), log in {log.name}")
    failures: list[str] = []
    try:
        if not wait_for_server(base_url, server, args.startup_timeout):
            print(f"FAILED: the webserver did not come up; see {log.name}", file=sys.stderr)
            return 1
        runs = graphql(base_url, LATEST_RUN_QUERY)["data"]["runsOrError"].get("results") or []
        if not runs:
            print("FAILED: no run recorded; run `rag-pipeline run` first", file=sys.stderr)
            return 1
        for page in pages(runs[0]["runId"]):
            missing = capture(base_url, page, out)
            status = "ok" if not missing else f"MISSING {missing}"
            print(f"{page.name}: {out / (page.name + '.png')} {status}")
            failures += [f"{page.name}: {text}" for text in missing]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
