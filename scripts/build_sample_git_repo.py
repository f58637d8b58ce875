"""Build the sample corpus's bare git repository `acme_platform_tools.git` with dulwich.

Deterministic: fixed author, committer and timestamps, so re-running the script gives the same
commit ids and byte-identical files. The objects go into one pack (no loose-object churn) and
empty folders are removed, so what is on disk is exactly what the project's own git checks in:

    .venv/bin/python scripts/build_sample_git_repo.py [target folder]

History (branch `main`): the handbook, then an edit of the deploy guide plus an on-call handover
checklist, then the rollback guide moved to `docs/runbooks/` (a rename the connector reports)
together with a new page on the `acme` CLI.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dulwich.index import commit_tree
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Blob, Commit, ShaFile
from dulwich.repo import Repo

DEFAULT_TARGET = (
    Path(__file__).resolve().parents[1] / "rag_pipeline/sample_corpus/acme_platform_tools.git"
)
AUTHOR = b"Acme Platform Team <platform-team@acme.example>"
BRANCH = b"refs/heads/main"

README = """# Acme platform tools

Handbook of the tools the Acme platform team runs for every engineering team: `acme-deploy`
(rollouts and rollbacks), the `acme` command-line client and the on-call tooling (paging,
escalation, handovers).

- Deploying: `docs/deploy/acme-deploy.md`
- Rolling back: `docs/runbooks/rollback.md`
- On call: `docs/oncall/` (SRE only)

Questions go to #platform-help; the platform team answers within one business day.
"""

ACME_DEPLOY = """# acme-deploy: rolling out a service

`acme-deploy` ships a container image to the Kubernetes clusters of a region. Every rollout
starts with a canary: 5% of the pods run the new image for 15 minutes before the rest follow.

## Starting a rollout
Run `acme-deploy rollout --service <name> --image <tag> --region eu-west-1`. The command refuses
an image that has not passed the CI security scan, and a rollout during a change freeze needs
an approval from the release manager (`--approved-by`).

## Watching it
`acme-deploy status --service <name>` shows the canary's error rate and p99 latency next to the
stable pods. The rollout pauses on its own when the canary's error rate exceeds 2%.
"""

ACME_DEPLOY_WITH_CANARY_ANALYSIS = (
    ACME_DEPLOY
    + """
## Canary analysis
Since version 3.4 the canary is judged automatically: after 15 minutes `acme-deploy` compares the
canary's HTTP 5xx rate, p99 latency and pod restarts with the stable pods. A score below 80
aborts the rollout and scales the canary back to zero; `--skip-analysis` needs a reason that is
recorded in the deploy log.
"""
)

ROLLBACK = """# Rolling back a deployment

A rollback redeploys the last image that was healthy for 24 hours; it skips the canary stage.

1. Run `acme-deploy rollback --service <name> --to previous` (or `--to <tag>`).
2. Check `acme-deploy status --service <name>`: every pod must report the old image within
   10 minutes.
3. Post the rollback in #deploys with the incident ticket, if there is one.

Database migrations are not rolled back by `acme-deploy`: a migration must stay compatible with
the previous release for one week (expand, then contract).
"""

PAGING_TOOL = """# Paging with acme-pager

`acme-pager` routes alerts from Prometheus Alertmanager to the engineer on call. Each service
declares its escalation policy in `oncall.yaml` next to its code.

- Acknowledge a page within 5 minutes with `acme-pager ack <incident>` or the mobile app;
  otherwise it escalates to the secondary.
- `acme-pager override --user <id> --until <time>` hands your shift to a colleague; overrides
  longer than 12 hours need the SRE lead's approval.
- Test your phone every Monday with `acme-pager test`.
"""

ESCALATION_POLICY = """# Escalation policy for SEV1 and SEV2 incidents

1. The primary on-call engineer acknowledges within 5 minutes and opens an incident channel
   named `#inc-<date>-<service>`.
2. After 15 minutes without mitigation, page the secondary and the SRE lead.
3. A SEV1 that lasts 30 minutes pages the head of engineering, who decides on customer
   communication with the support lead.

The incident commander writes the post-mortem within five business days.
"""

HANDOVER = """# On-call handover checklist

Every Monday at 10:00 UTC the outgoing on-call engineer hands over to the next one:

- open incidents and their current owner;
- silenced alerts and when the silences expire;
- risky rollouts planned this week (check the `acme-deploy` calendar);
- anything the secondary should know before the first page.

Record the handover in the #oncall channel thread of the week.
"""

ACME_CLI = """# The acme command-line client

`acme` is the single entry point to the platform's APIs. Install it with
`brew install acme/tap/acme` or download the binary from the internal artifact store.

- `acme login` opens the browser for single sign-on; tokens last 12 hours.
- `acme services list --team <team>` shows the services a team owns and their on-call rotation.
- `acme logs --service <name> --since 1h` streams logs from every region.

Run `acme doctor` when a command fails: it checks the client version, the VPN and the token.
"""

# Each commit is the whole tree at that point (path -> text), with its message and time.
HISTORY: list[tuple[dict[str, str], str, int]] = [
    (
        {
            "README.md": README,
            "docs/deploy/acme-deploy.md": ACME_DEPLOY,
            "docs/deploy/rollback.md": ROLLBACK,
            "docs/oncall/paging-tool.md": PAGING_TOOL,
            "docs/oncall/escalation-policy.md": ESCALATION_POLICY,
        },
        "Add the platform tools handbook",
        1_772_355_600,  # 2026-03-01T09:00:00Z
    ),
    (
        {
            "README.md": README,
            "docs/deploy/acme-deploy.md": ACME_DEPLOY_WITH_CANARY_ANALYSIS,
            "docs/deploy/rollback.md": ROLLBACK,
            "docs/oncall/paging-tool.md": PAGING_TOOL,
            "docs/oncall/escalation-policy.md": ESCALATION_POLICY,
            "docs/oncall/handover-checklist.md": HANDOVER,
        },
        "Document canary analysis; add the on-call handover checklist",
        1_773_741_600,  # 2026-03-17T10:00:00Z
    ),
    (
        {
            "README.md": README,
            "docs/deploy/acme-deploy.md": ACME_DEPLOY_WITH_CANARY_ANALYSIS,
            "docs/runbooks/rollback.md": ROLLBACK,
            "docs/oncall/paging-tool.md": PAGING_TOOL,
            "docs/oncall/escalation-policy.md": ESCALATION_POLICY,
            "docs/oncall/handover-checklist.md": HANDOVER,
            "docs/tools/acme-cli.md": ACME_CLI,
        },
        "Move the rollback guide to runbooks; document the acme CLI",
        1_775_037_600,  # 2026-04-01T10:00:00Z
    ),
]


def build_objects() -> tuple[list[ShaFile], bytes]:
    """Every object of the history, each once, in a fixed order; and the last commit's id."""
    store = MemoryObjectStore()
    objects: dict[bytes, ShaFile] = {}
    parent: bytes | None = None
    for files, message, when in HISTORY:
        entries = []
        for path, text in sorted(files.items()):
            blob = Blob.from_string(text.encode())
            store.add_object(blob)
            objects.setdefault(blob.id, blob)
            entries.append((path.encode(), blob.id, 0o100644))
        commit = Commit()
        commit.tree = commit_tree(store, entries)
        commit.parents = [parent] if parent else []
        commit.author = commit.committer = AUTHOR
        commit.author_time = commit.commit_time = when
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = message.encode() + b"\n"
        store.add_object(commit)
        # Trees as the store holds them (commit_tree wrote every subtree there).
        for tree_id in _tree_ids(store, commit.tree):
            objects.setdefault(tree_id, store[tree_id])
        objects[commit.id] = commit
        parent = commit.id
    assert parent is not None
    return [objects[sha] for sha in sorted(objects)], parent


def _tree_ids(store: MemoryObjectStore, tree_id: bytes) -> list[bytes]:
    found = [tree_id]
    for entry in store[tree_id].items():
        if entry.mode == 0o040000:
            found.extend(_tree_ids(store, entry.sha))
    return found


def build(target: Path) -> bytes:
    """(Re)create the bare repository at `target`; returns the commit `main` points to."""
    objects, head = build_objects()
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with Repo.init_bare(str(target)) as repo:
        repo.object_store.add_objects([(obj, None) for obj in objects])
        repo.refs[BRANCH] = head
        repo.refs.set_symbolic_ref(b"HEAD", BRANCH)
    # Git checks in files, not folders: drop the empty ones so the tree on disk is the tree
    # in the project's history.
    for folder, _, _ in sorted(os.walk(target), reverse=True):
        if not os.listdir(folder):
            os.rmdir(folder)
    return head


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TARGET
    head = build(target)
    print(f"{target}: main at {head.decode()}")


if __name__ == "__main__":
    main()
