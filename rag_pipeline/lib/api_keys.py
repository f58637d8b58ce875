"""API keys of the HTTP API: create, verify, list, revoke. Framework-free.

A key is `rag_` followed by 32 random bytes (urlsafe base64). It is returned once, by `create_key`,
and only its SHA-256 is stored (`rag.api_keys`, sql/009). A salted slow hash (bcrypt, argon2)
protects low-entropy passwords; 256 random bits need none, and a fast hash keeps verification to
one indexed lookup per request.

Each key maps to one principal: the user, tenant and principals the directory file gave that user
when the key was created. `verify_key` returns that principal for a live key and None for a
missing, wrong or revoked one, without saying which.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg

from rag_pipeline.lib.catalog import UserAccess

KEY_PREFIX = "rag_"
KEY_BYTES = 32
# Characters of the key kept in clear, to tell keys apart in `api-key list`: the prefix plus
# four random characters (24 bits of 256).
SHOWN_CHARACTERS = len(KEY_PREFIX) + 4


class UnknownApiKeyError(LookupError):
    """No API key with this id."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key: everything but the key itself."""

    key_id: int
    key_prefix: str
    user: str
    tenant: str
    principals: tuple[str, ...]
    label: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def access(self) -> UserAccess:
        return UserAccess(user=self.user, tenant=self.tenant, principals=self.principals)


@dataclass(frozen=True)
class CreatedKey:
    """A new key: `secret` is shown once and stored nowhere."""

    key: ApiKey
    secret: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


_COLUMNS = "key_id, key_prefix, user_id, tenant, principals, label, created_at, revoked_at"


def _row_to_key(row: tuple) -> ApiKey:
    key_id, prefix, user, tenant, principals, label, created_at, revoked_at = row
    return ApiKey(
        int(key_id), prefix, user, tenant, tuple(principals), label, created_at, revoked_at
    )


def create_key(
    conn: psycopg.Connection, access: UserAccess, label: str | None = None
) -> CreatedKey:
    """Store a new key for `access` (resolved from the directory by the caller)."""
    if not access.principals:
        raise ValueError(f"user {access.user!r} has no principals: a key for them reads nothing")
    secret = new_secret()
    row = conn.execute(
        "INSERT INTO rag.api_keys (key_hash, key_prefix, user_id, tenant, principals, label)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING " + _COLUMNS,
        (
            hash_key(secret),
            secret[:SHOWN_CHARACTERS],
            access.user,
            access.tenant,
            list(access.principals),
            label,
        ),
    ).fetchone()
    assert row is not None
    return CreatedKey(_row_to_key(row), secret)


def verify_key(conn: psycopg.Connection, secret: str) -> ApiKey | None:
    """The live key whose secret this is, else None (unknown, malformed or revoked alike)."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    row = conn.execute(
        "SELECT " + _COLUMNS + " FROM rag.api_keys WHERE key_hash = %s AND revoked_at IS NULL",
        (hash_key(secret),),
    ).fetchone()
    return _row_to_key(row) if row is not None else None


def list_keys(conn: psycopg.Connection, include_revoked: bool = True) -> list[ApiKey]:
    rows = conn.execute(
        "SELECT " + _COLUMNS + " FROM rag.api_keys WHERE %s OR revoked_at IS NULL ORDER BY key_id",
        (include_revoked,),
    ).fetchall()
    return [_row_to_key(row) for row in rows]


def revoke_key(conn: psycopg.Connection, key_id: int) -> bool:
    """Revoke a key at once; False if it was already revoked. Unknown ids raise."""
    row = conn.execute(
        "UPDATE rag.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s"
        " RETURNING revoked_at = now()",
        (key_id,),
    ).fetchone()
    if row is None:
        raise UnknownApiKeyError(f"no API key with id {key_id}")
    return bool(row[0])
