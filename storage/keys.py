"""API keys: who may use a server that listens beyond loopback.

Part of :class:`storage.store.Store` (split off by responsibility; still the only SQL).

Invariants:
- a key is ``ll-`` and 43 URL-safe characters from :mod:`secrets` (256 bits); only its
  sha256 is stored, so the database never holds a usable key;
- a name has at most one valid key; revoking sets ``revoked_at`` and keeps the row, and
  the name may then get a new key;
- a key's name is the user its requests count for (feedback's ``user_name``) and the
  owner of the threads its requests start;
- a key's role is one of :data:`ROLES`: a "user" key sees only its own threads, an
  "admin" key may do all the operator may (the server enforces it, agent/server/).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from learnloop.storage.connection import Connection
from learnloop.storage.errors import Conflict, NotFound, UsageError
from learnloop.storage.records import ApiKey

KEY_PREFIX = "ll-"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
ROLES = ("user", "admin")

_KEY_COLUMNS = "id, name, created_at, revoked_at, role"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key: its sha256 as hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_key_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"bad key name {name!r}: use 1 to 64 letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return name


class Keys(Connection):
    """Create, list, revoke and look up API keys."""

    def create_api_key(self, name: str, *, role: str = "user") -> tuple[ApiKey, str]:
        """A new key for ``name`` with ``role``: the stored record and the key, which is
        never retrievable again. Refused while ``name`` has a valid key."""
        check_key_name(name)
        if role not in ROLES:
            raise UsageError(f"a key's role is one of {', '.join(ROLES)}, not {role!r}")
        key = new_key()
        with self.transaction() as db:
            if db.execute(
                "SELECT count(*) FROM api_keys WHERE name = ? AND revoked_at IS NULL", [name]
            ).fetchone() != (0,):
                raise Conflict(f"{name!r} already has a key; `learnloop keys revoke {name}` first")
            row = db.execute(
                f"""INSERT INTO api_keys (name, key_hash, role) VALUES (?, ?, ?)
                    RETURNING {_KEY_COLUMNS}""",
                [name, hash_key(key), role],
            ).fetchone()
        assert row is not None
        return ApiKey(*row), key

    def api_keys(self, *, revoked: bool = True) -> list[ApiKey]:
        """Every key, oldest first; ``revoked=False``: only the valid ones."""
        where = "" if revoked else " WHERE revoked_at IS NULL"
        rows = self.db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys{where} ORDER BY id").fetchall()
        return [ApiKey(*r) for r in rows]

    def has_api_keys(self) -> bool:
        """Whether any key is valid (a server may then listen beyond loopback)."""
        return bool(self._one("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"))

    def revoke_api_key(self, name: str) -> ApiKey:
        """Make ``name``'s valid key unusable from now on; return its record."""
        row = self.db.execute(
            f"""UPDATE api_keys SET revoked_at = current_timestamp
                WHERE name = ? AND revoked_at IS NULL RETURNING {_KEY_COLUMNS}""",
            [name],
        ).fetchone()
        if row is None:
            raise NotFound(f"no valid key named {name!r}; `learnloop keys list` lists them")
        return ApiKey(*row)

    def user_of_key(self, key: str) -> str | None:
        """The name a valid key belongs to, or None for an unknown or revoked key."""
        record = self.api_key_of(key)
        return None if record is None else record.name

    def api_key_of(self, key: str) -> ApiKey | None:
        """The record of a valid key (its name and role), or None for an unknown or
        revoked key."""
        row = self.db.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
            [hash_key(key)],
        ).fetchone()
        return None if row is None else ApiKey(*row)
