"""Redistribute a stopped workspace over another number of shards (``app.py -t reshard``).

Rows are copied store to store inside SQLite (``ATTACH``, one ``INSERT ... SELECT`` per
old shard, keeping ids, owners, embeddings, thumbnails and times); the FAISS indexes
are not copied: each new shard rebuilds its own from its store on first start. The new
layout is committed by rewriting ``layout.json`` once every row has been counted in
its new place; until then the old shards are untouched.
"""
from __future__ import annotations

import shutil
import sqlite3
from contextlib import ExitStack, closing
from pathlib import Path

from crossmodal.index.shards import shard_dir, shard_of, write_layout, written_shards
from crossmodal.index.store import DB_NAME, Store, WorkspaceError, WorkspaceLock

COLUMNS = "id, owner, modality, text, uri, tags, thumbnail, embedding, created_at, updated_at"
STAGING = ".reshard"


def _count(directory: Path) -> int:
    with closing(sqlite3.connect(directory / DB_NAME)) as conn:
        return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]


def _fill(target: Path, sources: list[Path], shard: int, shards: int) -> None:
    """Copy into ``target`` the rows of every source that ``shard`` owns, in one transaction."""
    with closing(sqlite3.connect(target / DB_NAME, isolation_level=None)) as conn:
        conn.create_function("owner_shard", 1, lambda doc_id: shard_of(doc_id, shards), deterministic=True)
        for i, source in enumerate(sources):
            conn.execute("ATTACH DATABASE ? AS src", (str(source / DB_NAME),))
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"INSERT INTO items ({COLUMNS}) SELECT {COLUMNS} FROM src.items"
                         " WHERE owner_shard(id) = ? ORDER BY vid", (shard,))
            if i == 0:
                conn.execute("INSERT OR REPLACE INTO meta SELECT key, value FROM src.meta WHERE key IN ('model', 'dim')")
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE src")


def _clear_content(directory: Path) -> None:
    """A 1-shard workspace root that became a sharded one keeps its users, not its content."""
    with closing(sqlite3.connect(directory / DB_NAME, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM items")
        conn.execute("DELETE FROM meta WHERE key IN ('model', 'dim', 'generation')")
        conn.execute("COMMIT")
    for index in directory.glob("faiss-*.index"):
        index.unlink()


def reshard(workspace: Path, shards: int) -> tuple[list[int], list[int]]:
    """(items per old shard, items per new shard). Refuses while a server holds the workspace."""
    workspace = Path(workspace)
    written = written_shards(workspace)
    if written is None:
        raise WorkspaceError(f"workspace {workspace} holds no indexed content: nothing to reshard")
    if not 1 <= shards <= 64:
        raise WorkspaceError(f"--shards must be in 1..64, got {shards}")
    old = [shard_dir(workspace, i, written) for i in range(written)]
    with ExitStack() as held:
        for directory in old:
            lock = WorkspaceLock(directory)
            lock.acquire()
            held.callback(lock.release)
        before = [_count(d) for d in old]
        if written == shards:
            return before, before
        staging = workspace / STAGING
        shutil.rmtree(staging, ignore_errors=True)
        new = [staging / f"shard-{i}" for i in range(shards)]
        for i, directory in enumerate(new):
            Store(directory).close()  # the schema
            _fill(directory, old, i, shards)
        after = [_count(d) for d in new]
        if sum(after) != sum(before):
            shutil.rmtree(staging)
            raise WorkspaceError(f"reshard copied {sum(after)} items of {sum(before)}; the workspace is unchanged")
        _swap(workspace, old, new, shards)
        shutil.rmtree(staging, ignore_errors=True)
    return before, after


def _swap(workspace: Path, old: list[Path], new: list[Path], shards: int) -> None:
    """Put the new stores in place; ``layout.json`` switches from the old layout to the new."""
    staging = workspace / STAGING
    if shards == 1:  # the content goes back into the workspace root, beside the users
        Store(workspace).close()
        _fill(workspace, new, 0, 1)
        write_layout(workspace, 1)
    else:
        for directory in old:
            if directory != workspace:
                directory.rename(staging / f"old-{directory.name}")
        for directory in new:
            directory.rename(workspace / directory.name)
        write_layout(workspace, shards)
        if workspace in old:
            _clear_content(workspace)
    for directory in old:
        if directory != workspace:
            shutil.rmtree(staging / f"old-{directory.name}" if shards > 1 else directory, ignore_errors=True)
