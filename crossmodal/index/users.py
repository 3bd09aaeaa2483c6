"""Users and their API tokens, in the workspace's SQLite file (a table of their own).

A token is shown once, when the user is created; only a salted scrypt hash of it is
stored. Tokens look like ``cm_<id>.<secret>``: the public ``id`` finds the row, so a
check costs one hash whatever the number of users, and the secret is compared with
``hmac.compare_digest``. An unknown id is hashed against a dummy row all the same,
so a wrong token takes as long as a right one and says nothing about who exists.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from crossmodal.index.store import DB_NAME
from crossmodal.settings import AUTH, AuthSettings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    admin INTEGER NOT NULL,
    token_id TEXT NOT NULL UNIQUE,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_at REAL NOT NULL
);
"""
KEY_ENV = "CROSSMODAL_AUTH_KEY"  # drawn by crossmodal/serve/flow.py at every start
_TOKEN = re.compile(r"cm_([0-9a-f]{16})\.([A-Za-z0-9_-]{16,256})")
# ASCII only: names are shown as owners, and Unicode lookalikes ("аlice" with a Cyrillic a)
# would pass for someone else; names differing only in case are refused too (``add``)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]*")  # "-" or ".." is no one's name


class UserError(ValueError):
    """A user cannot be created as asked."""


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False


def check_name(name: str, settings: AuthSettings = AUTH) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > settings.max_name_chars:
        raise UserError(f"user name: ASCII letters, digits and . _ @ + -, starting with a letter or digit, "
                        f"1..{settings.max_name_chars} characters, got {name!r}")
    return name


def signing_key() -> bytes:
    """The key the gateway signs the acting user with, shared with the executors."""
    return os.environ.get(KEY_ENV, "").encode()


def signature(name: str, admin: bool, key: bytes) -> str:
    return hmac.new(key, f"{name}\0{int(admin)}".encode(), hashlib.sha256).hexdigest()


def _hash(secret: str, salt: bytes, settings: AuthSettings) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=settings.scrypt_n, r=settings.scrypt_r,
                          p=settings.scrypt_p, dklen=32)


class Users:
    """The users table. Read-only for the gateway, which only verifies tokens."""

    def __init__(self, workspace: Path, read_only: bool = False, settings: AuthSettings = AUTH):
        self.path = Path(workspace) / DB_NAME
        self.settings = settings
        self._lock = threading.Lock()
        self._dummy_salt = secrets.token_bytes(settings.salt_bytes)
        self._dummy_hash = _hash(secrets.token_urlsafe(settings.token_bytes), self._dummy_salt, settings)
        if read_only:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=10000")  # a serving indexer may be writing
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _new_token(self) -> tuple[str, tuple[str, bytes, bytes]]:
        """A token, and what the table keeps of it: its id, a salt and the secret's hash."""
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(self.settings.token_bytes)
        salt = secrets.token_bytes(self.settings.salt_bytes)
        return f"cm_{token_id}.{secret}", (token_id, salt, _hash(secret, salt, self.settings))

    def add(self, name: str, admin: bool = False) -> str:
        """Create a user; returns the token, which is not stored and cannot be shown again."""
        check_name(name, self.settings)
        token, (token_id, salt, hashed) = self._new_token()
        with self._lock:
            taken = self._stored_name(name)
            if taken:
                raise UserError(f"user {taken!r} already exists in {self.path}"
                                + (f" (names differ in case only: {name!r})" if taken != name else ""))
            self._db.execute("INSERT INTO users VALUES (?,?,?,?,?,?)",
                             (name, int(admin), token_id, salt, hashed, time.time()))
        return token

    def rotate(self, name: str) -> str:
        """A new token for ``name``; the old one stops working at once, even in a running gateway."""
        token, (token_id, salt, hashed) = self._new_token()
        with self._lock:
            changed = self._db.execute("UPDATE users SET token_id=?, salt=?, hash=? WHERE name=?",
                                       (token_id, salt, hashed, name)).rowcount
        if not changed:
            raise self._missing(name)
        return token

    def remove(self, name: str) -> None:
        """Delete ``name`` and so its token; what it posted stays, owned by that name."""
        with self._lock:
            removed = self._db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount
        if not removed:
            raise self._missing(name)

    def _stored_name(self, name: str) -> Optional[str]:
        """The stored name equal to ``name`` but for case, if any (the caller holds the lock)."""
        row = self._db.execute("SELECT name FROM users WHERE name = ? COLLATE NOCASE", (name,)).fetchone()
        return row[0] if row else None

    def _missing(self, name: str) -> UserError:
        with self._lock:
            other = self._stored_name(name)
        hint = f" (did you mean {other!r}?)" if other else ""
        return UserError(f"user {name!r} does not exist in {self.path}{hint}")

    def _row(self, token_id: str) -> Optional[tuple]:
        try:
            with self._lock:
                return self._db.execute("SELECT name, admin, salt, hash FROM users WHERE token_id=?",
                                        (token_id,)).fetchone()
        except sqlite3.OperationalError:  # no users table yet: nobody can sign in
            return None

    def holder(self, token: Optional[str]) -> Optional[User]:
        """Who holds the token's id now, without checking its secret: one indexed read, so a
        gateway can re-check a token it verified before at every request."""
        found = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        row = self._row(found.group(1)) if found else None
        return User(row[0], bool(row[1])) if row else None

    def verify(self, token: Optional[str]) -> Optional[User]:
        """The token's user, or None; the same work is done whether or not it matches anyone."""
        found = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        token_id, secret = found.groups() if found else ("", "")
        row = self._row(token_id) if token_id else None
        salt, expected = (row[2], row[3]) if row else (self._dummy_salt, self._dummy_hash)
        matches = hmac.compare_digest(_hash(secret, salt, self.settings), expected)
        return User(row[0], bool(row[1])) if row and matches else None

    def count(self) -> int:
        try:
            with self._lock:
                return self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
