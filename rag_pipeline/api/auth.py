"""`Authorization: Bearer <key>` -> the principal a request reads as, rate-limited per key.

The key (sql/009, `rag_pipeline.lib.api_keys`) carries the user, tenant and principals the
directory gave that user when the key was created. Each request also re-reads the directory
(cached until the file changes), so that taking a user out of the directory, or out of a group,
takes effect at once rather than when someone remembers to revoke the key:
- the user is gone from the directory, or is now in another tenant: 403;
- otherwise the request reads with the principals that are both on the key and in the directory
  now (a key never gains a group added after it was created; a group removed is gone at once).
Missing, malformed, unknown and revoked keys all get the same 401, so the answer does not tell
which keys exist.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from rag_pipeline.api.errors import ApiError
from rag_pipeline.lib.api_keys import ApiKey
from rag_pipeline.lib.catalog import ConfigurationError, UserAccess, load_user_access

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    key_id: int
    access: UserAccess


def unauthorized(message: str = "a valid API key is required") -> ApiError:
    return ApiError(401, "unauthorized", message, UNAUTHORIZED_HEADERS)


class Directory:
    """The directory file's answer per user, re-read when the file's mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, UserAccess | None] = {}

    def lookup(self, user: str) -> UserAccess | None:
        """The user's access now, or None if they are not (validly) in the directory."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return None  # no directory file: fail closed
        with self._lock:
            if stamp != self._stamp:
                self._stamp, self._users = stamp, {}
            if user not in self._users:
                try:
                    self._users[user] = load_user_access(self.path, user)
                except ConfigurationError:
                    self._users[user] = None
            return self._users[user]


def current_access(key: ApiKey, directory: Directory) -> UserAccess:
    """What `key` may read now: see the module docstring. Raises a 403 ApiError."""
    now = directory.lookup(key.user)
    if now is None or now.tenant != key.tenant:
        raise ApiError(
            403,
            "principal_revoked",
            "this key's user is no longer in the directory (or moved tenant); ask for a new key",
        )
    principals = tuple(p for p in key.principals if p in now.principals)
    return UserAccess(user=key.user, tenant=key.tenant, principals=principals)


class RateLimiter:
    """A moving window per API key, in memory (one process; behind several workers, each
    process counts its own requests)."""

    def __init__(self, rate: str) -> None:
        self.item = limits.parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, key_id: int) -> None:
        identifier = str(key_id)
        if self.limiter.hit(self.item, "api-key", identifier):
            return
        stats = self.limiter.get_window_stats(self.item, "api-key", identifier)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {self.item} per API key exceeded; retry in {retry_after} s",
            {"Retry-After": str(retry_after)},
        )
