"""The serving transaction: read as the restricted role `rag_serving`, with the reader set.

Every read done on behalf of a reader (retrieval, answers, lineage, evaluation) runs inside
`serving_transaction`. The connecting user is typically a superuser (the embedded server) or
the tables' owner, and both bypass row-level security; so the transaction switches to
`rag_serving` (sql/015: no BYPASSRLS, SELECT on exactly what serving reads) and sets the
reader's tenant and principals as transaction-local settings that the policies read. A query
that forgets the tenant filter still sees only that tenant's rows; a transaction that never set
a tenant sees none. Both the role and the settings end with the transaction, so a pooled
connection never carries one reader's identity into the next request.

Inside a transaction already open (the canary gate probes a candidate inside a transaction it
rolls back), the serving block is a savepoint that is always rolled back: `SET LOCAL` inside a
released savepoint would outlive it and leave the caller's writes running as `rag_serving`.
Serving only reads, so rolling back loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.pq import TransactionStatus

from rag_pipeline.lib.catalog import UserAccess

SERVING_ROLE = "rag_serving"


class ServingAccessError(ValueError):
    """The reader cannot be set for a serving transaction (no tenant, malformed principals)."""


def check_access(access: UserAccess) -> None:
    """Refuse a reader that would make the policies ambiguous; fail closed, never open."""
    if not isinstance(access.tenant, str) or not access.tenant.strip():
        raise ServingAccessError(f"reader {access.user!r} has no tenant: refusing to serve")
    if isinstance(access.principals, str) or not all(
        isinstance(principal, str) and principal for principal in access.principals
    ):
        raise ServingAccessError(
            f"reader {access.user!r} has malformed principals {access.principals!r}: "
            "expected a sequence of non-empty strings"
        )


def set_reader(conn: psycopg.Connection, access: UserAccess) -> None:
    """Switch the open transaction to `rag_serving` and set the reader (transaction-local)."""
    check_access(access)
    # The role is a constant: SET ROLE takes no bound parameter, and none is needed.
    conn.execute("SET LOCAL ROLE rag_serving")
    conn.execute(
        "SELECT set_config('rag.tenant', %s, true),"
        " set_config('rag.principals', %s::text[]::text, true)",
        (access.tenant, list(access.principals)),
    )


@contextmanager
def serving_transaction(conn: psycopg.Connection, access: UserAccess) -> Iterator[None]:
    """A transaction that reads as `access` under row-level security.

    Outside any transaction: REPEATABLE READ READ ONLY, so every statement inside sees one
    snapshot (a query racing a promotion sees one complete version). Inside one: a savepoint,
    rolled back at the end (see the module docstring), reading the caller's snapshot.
    """
    check_access(access)
    nested = conn.info.transaction_status != TransactionStatus.IDLE
    with conn.transaction() as transaction:
        if not nested:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        set_reader(conn, access)
        yield
        if nested:
            raise psycopg.Rollback(transaction)
