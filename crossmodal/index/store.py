"""SQLite store: the source of truth for content, owners and embeddings.

FAISS indexes are derived from this table and can always be rebuilt from it, so an
acknowledged write is durable as soon as its transaction commits (WAL,
``synchronous=FULL``). Every upsert gives the row a fresh, never reused ``vid``
(the FAISS id): index types that cannot remove vectors (HNSW) simply stop seeing
the old vid.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

DB_NAME = "store.sqlite"
LOCK_NAME = "store.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    vid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    modality TEXT NOT NULL,
    text TEXT,
    uri TEXT,
    tags TEXT,
    thumbnail BLOB,
    embedding BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_owner ON items(owner, modality);
CREATE INDEX IF NOT EXISTS items_modality ON items(modality, vid);
"""
_ROW_COLUMNS = "vid, id, owner, modality, text, uri, tags, created_at"


class WorkspaceError(RuntimeError):
    """The workspace cannot be used as asked (locked, other model, corrupt)."""


@dataclass
class Item:
    """One content item as stored."""

    id: str
    owner: str
    modality: str
    embedding: np.ndarray
    text: Optional[str] = None
    uri: Optional[str] = None
    tags: dict = field(default_factory=dict)
    thumbnail: Optional[str] = None  # a data:image/jpeg;base64 URI, stored and served as is


@dataclass
class Row:
    """Item metadata without the embedding: what search results carry."""

    vid: int
    id: str
    owner: str
    modality: str
    text: Optional[str]
    uri: Optional[str]
    tags: dict
    created_at: float


@dataclass
class History:
    """One owner's posts of one modality, oldest first."""

    ids: list[str]
    embeddings: np.ndarray
    created_at: np.ndarray


class WorkspaceLock:
    """An exclusive ``flock`` so two servers never write one workspace.

    The kernel drops the lock when the holder dies (even on ``kill -9``), so a
    crashed server never leaves a stale lock behind.
    """

    def __init__(self, workspace: Path):
        self.path = Path(workspace) / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkspaceError(
                f"workspace {self.path.parent} is in use by another crossmodal server "
                f"(pid {holder}); stop it or pass a different --workspace"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _data_uri(thumbnail) -> str:
    """Older workspaces hold the JPEG bytes themselves."""
    if isinstance(thumbnail, str):
        return thumbnail
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail).decode()


def _row(record: tuple) -> Row:
    vid, id_, owner, modality, text, uri, tags, created_at = record
    return Row(vid, id_, owner, modality, text, uri, json.loads(tags) if tags else {}, created_at)


class Store:
    """Content items with owners and embeddings in one SQLite file."""

    def __init__(self, workspace: Path, read_only: bool = False):
        self.path = Path(workspace) / DB_NAME
        self.read_only = read_only
        self._lock = threading.RLock()
        if read_only:
            if not self.path.exists():
                raise WorkspaceError(f"no store at {self.path}: index something first")
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- metadata ---------------------------------------------------------------
    def meta(self, key: str) -> Optional[str]:
        found = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return found[0] if found else None

    def bind_model(self, model: str, dim: int) -> None:
        """Record the model on first use; refuse to mix embeddings of another model later."""
        stored_model, stored_dim = self.meta("model"), self.meta("dim")
        if stored_model is None:
            with self._write():
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", [("model", model), ("dim", str(dim))]
                )
            return
        if stored_model != model or int(stored_dim) != dim:
            raise WorkspaceError(
                f"workspace {self.path.parent} holds embeddings of model {stored_model!r} "
                f"(dim {stored_dim}), but the server runs {model!r} (dim {dim}); use the same "
                "--model/--pretrained or another --workspace (the @digest names the checkpoint's bytes: "
                "weights retrained under the same file name are another model, so index again)"
            )

    @property
    def generation(self) -> int:
        """A counter bumped by every write: tells whether a saved FAISS index is stale."""
        return int(self.meta("generation") or 0)

    # -- writes -----------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[None]:
        """One immediate transaction that also bumps the generation counter."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute(
                    "INSERT INTO meta VALUES ('generation', '1') ON CONFLICT(key) "
                    "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def upsert(self, items: Sequence[Item], now: Optional[float] = None) -> list[tuple[int, Optional[Row]]]:
        """Insert or replace items in one transaction; returns (new vid, replaced row) each.
        ``now`` is the posting time (default: this machine's clock)."""
        now = time.time() if now is None else float(now)
        out = []
        with self._write():
            for item in items:
                old = self._db.execute(
                    f"SELECT {_ROW_COLUMNS} FROM items WHERE id=?", (item.id,)
                ).fetchone()
                old_row = _row(old) if old else None
                if old_row:
                    self._db.execute("DELETE FROM items WHERE vid=?", (old_row.vid,))
                cursor = self._db.execute(
                    "INSERT INTO items (id, owner, modality, text, uri, tags, thumbnail, embedding,"
                    " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        item.id, item.owner, item.modality, item.text, item.uri,
                        json.dumps(item.tags or {}), item.thumbnail, _blob(item.embedding),
                        old_row.created_at if old_row else now, now,
                    ),
                )
                out.append((cursor.lastrowid, old_row))
        return out

    def delete(self, ids: Sequence[str]) -> list[Optional[Row]]:
        """Delete items by caller id; returns the deleted row (None when unknown) each."""
        out = []
        with self._write():
            for id_ in ids:
                old = self._db.execute(f"SELECT {_ROW_COLUMNS} FROM items WHERE id=?", (id_,)).fetchone()
                if old:
                    self._db.execute("DELETE FROM items WHERE id=?", (id_,))
                out.append(_row(old) if old else None)
        return out

    # -- reads ------------------------------------------------------------------
    def _by_vids(self, columns: str, vids: Sequence[int], where: str = "") -> list[tuple]:
        if not len(vids):
            return []
        marks = ",".join("?" * len(vids))
        with self._lock:
            return self._db.execute(
                f"SELECT {columns} FROM items WHERE vid IN ({marks}){where}", [int(v) for v in vids]
            ).fetchall()

    def rows(self, vids: Sequence[int]) -> dict[int, Row]:
        """Metadata of the given vids (missing ones are absent from the result)."""
        return {record[0]: _row(record) for record in self._by_vids(_ROW_COLUMNS, vids)}

    def thumbnails(self, vids: Sequence[int]) -> dict[int, str]:
        """``data:`` URIs by vid."""
        return {vid: _data_uri(thumb) for vid, thumb in self._by_vids("vid, thumbnail", vids, " AND thumbnail IS NOT NULL")}

    def previews(self, ids: Sequence[str]) -> dict[str, tuple[str, Optional[str], Optional[str]]]:
        """(modality, text, thumbnail ``data:`` URI) by caller id, for the stored ones among the
        first 500 of ``ids``: what names a result or an interest on the page."""
        ids = list(dict.fromkeys(ids))[:500]
        if not ids:
            return {}
        with self._lock:
            found = self._db.execute(f"SELECT id, modality, text, thumbnail FROM items WHERE id IN "
                                     f"({','.join('?' * len(ids))})", ids).fetchall()
        return {id_: (modality, text, _data_uri(thumb) if thumb is not None else None)
                for id_, modality, text, thumb in found}

    def embeddings_of(self, vids: Sequence[int]) -> dict[int, np.ndarray]:
        return {vid: np.frombuffer(blob, dtype=np.float32) for vid, blob in self._by_vids("vid, embedding", vids)}

    def owner_vids(self, owner: str, modality: str) -> np.ndarray:
        with self._lock:
            records = self._db.execute(
                "SELECT vid FROM items WHERE owner=? AND modality=?", (owner, modality)
            ).fetchall()
        return np.fromiter((r[0] for r in records), dtype=np.int64, count=len(records))

    def vids(self, modality: str) -> np.ndarray:
        """Every stored vid of one modality, sorted: what its FAISS index must hold."""
        with self._lock:
            records = self._db.execute("SELECT vid FROM items WHERE modality=? ORDER BY vid", (modality,)).fetchall()
        return np.fromiter((r[0] for r in records), dtype=np.int64, count=len(records))

    def _iter_vectors(self, where: str, args: tuple, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = -1
        while True:
            with self._lock:
                records = self._db.execute(
                    f"SELECT vid, embedding FROM items WHERE {where} AND vid>? ORDER BY vid LIMIT ?",
                    (*args, last, chunk),
                ).fetchall()
            if not records:
                return
            vids = np.fromiter((r[0] for r in records), dtype=np.int64, count=len(records))
            yield vids, np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in records])
            last = int(vids[-1])

    def iter_embeddings(self, modality: str, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vids, embeddings) in chunks, so rebuilding a large index never holds two copies."""
        return self._iter_vectors("modality=?", (modality,), chunk)

    def iter_owner_embeddings(self, owner: str, modality: str, chunk: int = 10_000
                              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vids, embeddings) of one owner's posts in chunks: a long history is never one query result."""
        return self._iter_vectors("owner=? AND modality=?", (owner, modality), chunk)

    def history(self, owner: str, modality: str, limit: Optional[int] = None) -> History:
        """The owner's posts, oldest first; with ``limit``, only the most recent ones."""
        with self._lock:
            records = self._db.execute(
                "SELECT id, embedding, created_at FROM items WHERE owner=? AND modality=?"
                " ORDER BY created_at DESC, id DESC LIMIT ?",  # by id on ties: the same order on any shard
                (owner, modality, -1 if limit is None else int(limit)),
            ).fetchall()[::-1]
        if not records:
            return History([], np.zeros((0, 0), np.float32), np.zeros(0))
        return History(
            [r[0] for r in records],
            np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in records]),
            np.array([r[2] for r in records], dtype=np.float64),
        )

    def count(self, modality: Optional[str] = None) -> int:
        with self._lock:
            if modality is None:
                return self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM items WHERE modality=?", (modality,)).fetchone()[0]

    def owner_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(DISTINCT owner) FROM items").fetchone()[0]

    def owner_names(self) -> list[str]:
        with self._lock:
            return [name for (name,) in self._db.execute("SELECT DISTINCT owner FROM items")]

    def embeddings_by_id(self, ids: Sequence[str]) -> dict[str, tuple[int, str, np.ndarray]]:
        """(vid, modality, embedding) of the given caller ids; unknown ids are absent."""
        if not len(ids):
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            records = self._db.execute(
                f"SELECT id, vid, modality, embedding FROM items WHERE id IN ({marks})", list(ids)).fetchall()
        return {id_: (vid, modality, np.frombuffer(blob, dtype=np.float32)) for id_, vid, modality, blob in records}

    def sample_embeddings(self, n: int, seed: int) -> tuple[list[str], np.ndarray]:
        """About ``n`` (modality, embedding) pairs drawn at random from the whole collection, reproducibly.

        Draws vids uniformly below the largest one and keeps those that exist, so it costs
        a primary-key lookup per draw instead of a scan (vids are dense but for deletions).
        """
        with self._lock:
            top = self._db.execute("SELECT MAX(vid) FROM items").fetchone()[0]
        if not top or n < 1:
            return [], np.zeros((0, 0), np.float32)
        draws = np.random.default_rng(seed).choice(top, size=min(top, 4 * n), replace=False) + 1
        found = self._by_vids("modality, embedding", draws)[:n]
        if not found:
            return [], np.zeros((0, 0), np.float32)
        return [r[0] for r in found], np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in found])

    def owners(self, ids: Sequence[str]) -> dict[str, str]:
        """Owner by caller id, for the stored ones among ``ids``."""
        ids = list(dict.fromkeys(ids))
        out: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(ids), 500):  # stay under SQLite's bound-variable limit
                chunk = ids[start:start + 500]
                out.update(self._db.execute(
                    f"SELECT id, owner FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall())
        return out
