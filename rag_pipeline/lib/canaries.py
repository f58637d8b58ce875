"""Canary leak probes, the pure part: who the canaries are, who probes them, what is a leak.

Per tenant, one canary document holding a unique token, readable only by that tenant's canary
principal. The gate (`rag_pipeline.lib.canary_probes`) plants them into a candidate version,
probes, and rolls everything back. The probing readers, for each canary of tenant T:

- `owner`: T's canary principal. Entitled: the positive control. If the owner cannot find its
  own canary through a path, that path proves nothing about leaks, and the gate fails too.
- `same_tenant`: tenant T with every principal T's real documents name in the candidate (and
  an outsider principal), but not the canary principal: tests the ACL.
- `other_tenant`: each other tenant P, holding P's canary principal AND T's canary principal
  name: the ACL would admit it, so only the tenant condition stands between it and T's canary.

A canary returned to a reader who is not entitled (same tenant AND canary principal) is a leak.
On the `sql` paths (a deliberately unfiltered SELECT under row-level security), which enforce
tenant isolation only, a leak is a canary of another tenant.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rag_pipeline.lib.catalog import UserAccess

CHECK_NAME = "no_canary_leaks"
CANARY_SOURCE = "__canary__"
# A tenant that exists only in the probe, so that cross-tenant isolation is probed even in a
# corpus with a single tenant.
PROBE_TENANT = "__canary_probe__"
# Digits keep the token one lexeme, unstemmed (`numword` in Postgres' text search parser).
_TOKEN = re.compile(r"^canary[0-9]{18}$")

OWNER = "owner"
SAME_TENANT = "same_tenant"
OTHER_TENANT = "other_tenant"

LEXICAL_PATH = "retrieve:lexical"
VECTOR_PATH = "retrieve:vector"
LINEAGE_PATH = "lineage"
# Paths entitled by tenant alone (row-level security is tenant isolation).
SQL_PATH_PREFIX = "sql:"


@dataclass(frozen=True)
class Canary:
    tenant: str
    token: str
    principal: str
    doc_id: str
    chunk_id: str
    text: str
    text_hash: str


@dataclass(frozen=True)
class ProbeReader:
    kind: str
    access: UserAccess
    # The canary this reader probes for (its token and vector are the query).
    target: Canary


@dataclass(frozen=True)
class Observation:
    """What one reader got back through one path: the canary chunk ids in the result."""

    reader: ProbeReader
    path: str
    returned: frozenset[str]


def new_token() -> str:
    """A fresh token no real document contains (18 random digits after `canary`)."""
    return f"canary{secrets.randbelow(10**18):018d}"


def make_canaries(tenants: Iterable[str], token: str | None = None) -> list[Canary]:
    """One canary per tenant (sorted, without duplicates), all sharing one probe token stem."""
    stem = token or new_token()
    if not _TOKEN.match(stem):
        raise ValueError(f"canary token {stem!r} must look like canary<18 digits>")
    names = sorted(set(tenants))
    if any(not name or not isinstance(name, str) for name in names):
        raise ValueError(f"tenant names must be non-empty strings (got {names!r})")
    canaries = []
    for position, tenant in enumerate(names):
        # One token per tenant: the stem's digits plus the tenant's position keeps it a numword.
        tenant_token = f"{stem}{position:04d}"
        text = f"{tenant_token} canary leak probe"
        canaries.append(
            Canary(
                tenant=tenant,
                token=tenant_token,
                principal=f"canary:{tenant_token}",
                doc_id=f"{CANARY_SOURCE}:{tenant_token}",
                chunk_id=f"{CANARY_SOURCE}:{tenant_token}:0",
                text=text,
                text_hash=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    return canaries


def canary_vector(canary: Canary, dimension: int) -> np.ndarray:
    """A unit vector determined by the canary's token: its own nearest neighbour, no model."""
    seed = int.from_bytes(hashlib.sha256(canary.token.encode()).digest()[:8], "big")
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


def probe_readers(
    canaries: Sequence[Canary], tenant_principals: Mapping[str, Sequence[str]]
) -> list[ProbeReader]:
    """Every reader of the module docstring, for every canary."""
    by_tenant = {canary.tenant: canary for canary in canaries}
    readers = []
    for canary in canaries:
        readers.append(
            ProbeReader(
                OWNER,
                UserAccess(f"canary-owner:{canary.tenant}", canary.tenant, (canary.principal,)),
                canary,
            )
        )
        real = sorted(set(tenant_principals.get(canary.tenant, ())) - {canary.principal})
        readers.append(
            ProbeReader(
                SAME_TENANT,
                UserAccess(
                    f"canary-same-tenant:{canary.tenant}",
                    canary.tenant,
                    (*real, f"canary-outsider:{canary.token}"),
                ),
                canary,
            )
        )
        for other in sorted(by_tenant):
            if other == canary.tenant:
                continue
            readers.append(
                ProbeReader(
                    OTHER_TENANT,
                    UserAccess(
                        f"canary-other-tenant:{other}",
                        other,
                        (by_tenant[other].principal, canary.principal),
                    ),
                    canary,
                )
            )
    return readers


def entitled(reader: ProbeReader, canary: Canary, path: str) -> bool:
    """May `reader` see `canary` through `path`? (Tenant only on the `sql:` paths.)"""
    if reader.access.tenant != canary.tenant:
        return False
    return path.startswith(SQL_PATH_PREFIX) or canary.principal in reader.access.principals


@dataclass(frozen=True)
class ProbeVerdict:
    leaks: list[dict[str, str]]
    # Paths where the owner did not find its own canary: they prove nothing about leaks.
    ineffective: list[dict[str, str]]
    observations: int

    @property
    def passed(self) -> bool:
        return not self.leaks and not self.ineffective


def judge(canaries: Sequence[Canary], observations: Iterable[Observation]) -> ProbeVerdict:
    """Leaks (a canary seen by someone not entitled) and failed positive controls."""
    by_chunk = {canary.chunk_id: canary for canary in canaries}
    leaks: list[dict[str, str]] = []
    ineffective: list[dict[str, str]] = []
    count = 0
    for observation in observations:
        count += 1
        reader = observation.reader
        for chunk_id in sorted(observation.returned):
            canary = by_chunk.get(chunk_id)
            if canary is None:
                raise ValueError(f"observation names {chunk_id!r}, which is not a canary")
            if not entitled(reader, canary, observation.path):
                leaks.append(
                    {
                        "canary_tenant": canary.tenant,
                        "reader_tenant": reader.access.tenant,
                        "reader": reader.kind,
                        "path": observation.path,
                    }
                )
        if reader.kind == OWNER and reader.target.chunk_id not in observation.returned:
            ineffective.append({"tenant": reader.target.tenant, "path": observation.path})
    return ProbeVerdict(leaks, ineffective, count)


def summary(verdict: ProbeVerdict, tenants: int) -> str:
    if verdict.passed:
        return (
            f"no canary leaked: {verdict.observations} probes over {tenants} tenants "
            "(retrieval lexical and vector, lineage, unfiltered SQL under row-level security)"
        )
    parts = []
    if verdict.leaks:
        pairs = sorted(
            {
                f"{leak['canary_tenant']} -> {leak['reader_tenant']} via {leak['path']}"
                for leak in verdict.leaks
            }
        )
        parts.append(f"{len(verdict.leaks)} canary leaks ({'; '.join(pairs[:5])})")
    if verdict.ineffective:
        paths = sorted({f"{item['tenant']} via {item['path']}" for item in verdict.ineffective})
        parts.append(
            f"{len(verdict.ineffective)} probes could not find the owner's own canary "
            f"({'; '.join(paths[:5])}), so they prove nothing"
        )
    return ", ".join(parts)
