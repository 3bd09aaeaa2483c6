"""ContentIndex keeps SQLite and FAISS in step, across upserts, deletes and restarts."""
import json

import numpy as np
import pytest

from crossmodal.index.content import ContentIndex, IndexConfig
from crossmodal.index.store import Item, Store, WorkspaceError
from tests.harness import unit_rows

DIM = 16


def _config(tmp_path, factory="Flat"):
    return IndexConfig(tmp_path, "test-model", DIM, factory, ef_search=64)


def _items(n, owner_of=lambda i: "alice" if i % 2 else "bob", modality="image", seed=0):
    vectors = unit_rows(n, DIM, seed)
    return [Item(f"id{i}", owner_of(i), modality, vectors[i]) for i in range(n)], vectors


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_owner_exclusion_still_returns_k(tmp_path, factory):
    index = ContentIndex(_config(tmp_path, factory))
    items, vectors = _items(200)
    index.upsert(items)
    [matches] = index.search(vectors[:1], "image", 30, exclude_owner="alice")
    assert len(matches) == 30 and all(m.row.owner == "bob" for m in matches)
    assert matches[0].row.id == "id0" and matches[0].score == pytest.approx(1.0, abs=1e-5)
    index.close()


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_upsert_moves_vector_and_delete_hides_it(tmp_path, factory):
    index = ContentIndex(_config(tmp_path, factory))
    items, vectors = _items(20)
    assert index.upsert(items) == ["indexed"] * 20
    moved = Item("id3", "carol", "image", vectors[10])
    assert index.upsert([moved]) == ["updated"]
    [matches] = index.search(vectors[3:4], "image", 5)
    assert "id3" not in [m.row.id for m in matches[:1]], "the old vector of id3 must be gone"
    [matches] = index.search(vectors[10:11], "image", 2)
    assert {m.row.id for m in matches} == {"id3", "id10"}
    assert index.delete(["id10", "nope"]) == ["deleted", "not_found"]
    [matches] = index.search(vectors[10:11], "image", 20)
    assert "id10" not in {m.row.id for m in matches} and len(matches) == 19
    index.close()


def test_restart_without_save_rebuilds_from_store(tmp_path):
    index = ContentIndex(_config(tmp_path, "HNSW32"))
    items, vectors = _items(30)
    index.upsert(items)
    index.save()
    index.upsert([Item("late", "dave", "text", vectors[0])])  # after the save: FAISS copy is stale
    index._lock.release()  # simulate a crash: no close(), lock freed by process death
    reopened = ContentIndex(_config(tmp_path, "HNSW32"))
    assert reopened.vectors["text"].size == 1 and reopened.vectors["image"].size == 30
    [matches] = reopened.search(vectors[:1], "text", 1)
    assert matches[0].row.id == "late"
    reopened.close()
    manifest = json.loads((tmp_path / "faiss-text.json").read_text())
    assert manifest["generation"] == Store(tmp_path, read_only=True).generation, "close() saves a fresh copy"


def test_second_open_is_refused_and_dim_is_checked(tmp_path):
    index = ContentIndex(_config(tmp_path))
    with pytest.raises(WorkspaceError, match="in use"):
        ContentIndex(_config(tmp_path))
    with pytest.raises(ValueError, match="embedding"):
        index.upsert([Item("x", "a", "text", np.ones(DIM + 1, np.float32))])
    index.close()
    with pytest.raises(WorkspaceError, match="test-model"):
        ContentIndex(IndexConfig(tmp_path, "other-model", DIM))


def test_tombstones_trigger_compaction(tmp_path):
    index = ContentIndex(IndexConfig(tmp_path, "m", DIM, "HNSW32", rebuild_tombstone_ratio=0.25))
    items, _ = _items(20)
    index.upsert(items)
    index.delete([f"id{i}" for i in range(6)])  # 6/20 > 0.25: rebuilt without tombstones
    assert index.vectors["image"].tombstones == set() and index.vectors["image"].size == 14
    index.close()
