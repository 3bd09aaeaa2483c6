"""Which shard owns an id, where each shard keeps its files, and how shard answers merge.

The indexer runs as N Jina shards polled ALL: every shard sees every request and acts
only on the ids it owns (``shard_of``), so indexing an id again, deleting it or checking
its owner always reaches the one copy, whichever shard Jina asked first. Searches are
answered by every shard from its own part of the collection; ``merge_top_k`` keeps the
best k of the union, which is exactly the top k of the whole collection.

The layout is recorded in the workspace (``layout.json``): a workspace written with
one shard count is never opened with another (``app.py -t reshard`` converts it).
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from crossmodal.index.store import DB_NAME, WorkspaceError

LAYOUT_NAME = "layout.json"
SHARD_NAME = "shard.json"
T = TypeVar("T")


def shard_of(doc_id: str, shards: int) -> int:
    """A stable owner shard for ``doc_id``: the same on every machine and every Python run
    (the builtin ``hash`` is salted per process)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_dir(workspace: Path, shard: int, shards: int) -> Path:
    """A 1-shard service keeps its files in the workspace itself, as before shards existed."""
    return Path(workspace) if shards == 1 else Path(workspace) / f"shard-{shard}"


def written_shards(workspace: Path) -> int | None:
    """The shard count the workspace was written with, or None for a workspace holding no store."""
    workspace = Path(workspace)
    layout = workspace / LAYOUT_NAME
    if layout.is_file():
        return int(json.loads(layout.read_text())["shards"])
    if _holds_content(workspace / DB_NAME):
        return 1  # written before layouts were recorded
    found = sorted(workspace.glob(f"shard-*/{DB_NAME}"))
    return len(found) or None


def _holds_content(db: Path) -> bool:
    """Whether a store file has content bound to a model (the users table alone does not count)."""
    if not db.is_file():
        return False
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return "meta" in tables and conn.execute("SELECT 1 FROM meta WHERE key='model'").fetchone() is not None


def check_layout(workspace: Path, shards: int) -> None:
    """Refuse to open a workspace with another shard count; record the count on first use."""
    if shards < 1:
        raise WorkspaceError(f"--shards must be >= 1, got {shards}")
    written = written_shards(workspace)
    if written is not None and written != shards:
        raise WorkspaceError(
            f"workspace {workspace} was written by {written} shard(s), but the service starts {shards}; "
            f"serve it with --shards {written}, or redistribute it first: "
            f"python app.py -t reshard --workspace {workspace} --shards {shards}")
    write_layout(Path(workspace), shards)


def check_shard(directory: Path, shard: int, shards: int) -> None:
    """Each shard also records its place in its own folder, since on several machines it sees
    only its own volume: a volume written as another shard, or under another count, is refused."""
    directory.mkdir(parents=True, exist_ok=True)
    mark, place = directory / SHARD_NAME, {"shard": shard, "shards": shards}
    if mark.is_file():
        found = json.loads(mark.read_text())
        if found != place:
            raise WorkspaceError(
                f"{directory} holds shard {found['shard']} of {found['shards']}, but this process is shard "
                f"{shard} of {shards}; give each shard its own volume, or redistribute the workspace first: "
                f"python app.py -t reshard --workspace WORKSPACE --shards {shards}")
        return
    tmp = directory / f".{SHARD_NAME}.tmp"
    tmp.write_text(json.dumps(place))
    os.replace(tmp, mark)


def write_layout(workspace: Path, shards: int) -> None:
    """Record the shard count atomically: the file is the layout's commit point (see reshard)."""
    workspace.mkdir(parents=True, exist_ok=True)
    tmp = workspace / f".{LAYOUT_NAME}.tmp"
    tmp.write_text(json.dumps({"shards": shards}))
    os.replace(tmp, workspace / LAYOUT_NAME)


def merge_top_k(lists: Iterable[Sequence[T]], k: int, score: Callable[[T], float]) -> list[T]:
    """The k best of several shards' top-k lists, best first (stable: earlier shards win ties)."""
    merged = [item for found in lists for item in found]
    merged.sort(key=lambda item: -score(item))
    return merged[:k]
