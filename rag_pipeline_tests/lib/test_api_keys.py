"""API keys on the real embedded PostgreSQL: stored hashed, verified, listed, revoked."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import psycopg
import pytest

from rag_pipeline.lib import api_keys, database
from rag_pipeline.lib.catalog import UserAccess

ANN = UserAccess("ann", "acme", ("user:ann", "group:staff"))
CYD = UserAccess("cyd", "globex", ("user:cyd",))


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with database.connection(database_url) as connection:
        yield connection


def test_a_key_verifies_to_its_principal_and_is_stored_only_hashed(
    conn: psycopg.Connection,
) -> None:
    created = api_keys.create_key(conn, ANN, label="ci")
    other = api_keys.create_key(conn, CYD)
    assert created.secret.startswith("rag_") and len(created.secret) > 40
    assert created.secret != other.secret

    found = api_keys.verify_key(conn, created.secret)
    assert found is not None and found.access == ANN and found.label == "ci"
    found_other = api_keys.verify_key(conn, other.secret)
    assert found_other is not None and found_other.access == CYD

    # Nothing stored can be used as the key: only its SHA-256 and a short prefix.
    rows = conn.execute("SELECT row_to_json(k)::text FROM rag.api_keys k").fetchall()
    assert not any(created.secret in text or other.secret in text for (text,) in rows)
    (stored,) = conn.execute(
        "SELECT key_hash FROM rag.api_keys WHERE key_id = %s", (created.key.key_id,)
    ).fetchone()
    assert stored == hashlib.sha256(created.secret.encode()).hexdigest()
    assert created.key.key_prefix == created.secret[: api_keys.SHOWN_CHARACTERS]


@pytest.mark.parametrize(
    "wrong", ["", "rag_", "rag_not-a-key", "Bearer rag_x", "x" * 5000, "rag_" + "A" * 43]
)
def test_wrong_keys_verify_to_nothing(conn: psycopg.Connection, wrong: str) -> None:
    created = api_keys.create_key(conn, ANN)
    assert api_keys.verify_key(conn, wrong) is None
    assert api_keys.verify_key(conn, created.secret[:-1]) is None
    assert api_keys.verify_key(conn, created.secret + "A") is None


def test_revoked_keys_stop_verifying_at_once(conn: psycopg.Connection) -> None:
    first = api_keys.create_key(conn, ANN)
    second = api_keys.create_key(conn, ANN)
    assert api_keys.revoke_key(conn, first.key.key_id) is True
    assert api_keys.verify_key(conn, first.secret) is None
    assert api_keys.verify_key(conn, second.secret) is not None
    # Revoking again keeps the first revocation time.
    (revoked_at,) = conn.execute(
        "SELECT revoked_at FROM rag.api_keys WHERE key_id = %s", (first.key.key_id,)
    ).fetchone()
    assert api_keys.revoke_key(conn, first.key.key_id) is False
    listed = {key.key_id: key for key in api_keys.list_keys(conn)}
    assert listed[first.key.key_id].revoked_at == revoked_at
    assert [key.key_id for key in api_keys.list_keys(conn, include_revoked=False)] == [
        second.key.key_id
    ]
    with pytest.raises(api_keys.UnknownApiKeyError):
        api_keys.revoke_key(conn, 999_999)


def test_a_user_without_principals_gets_no_key(conn: psycopg.Connection) -> None:
    with pytest.raises(ValueError, match="no principals"):
        api_keys.create_key(conn, UserAccess("nobody", "acme", ()))
