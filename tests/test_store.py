import numpy as np
import pytest

from crossmodal.index.store import Item, Store, WorkspaceError, WorkspaceLock
from tests.harness import unit_rows


def _item(i, owner="alice", modality="text", vec=None):
    return Item(f"id{i}", owner, modality, vec if vec is not None else unit_rows(1, 8, i)[0], text=f"t{i}")


def test_upsert_assigns_fresh_vids_and_keeps_created_at(tmp_path):
    store = Store(tmp_path)
    [(vid1, old1)] = store.upsert([_item(1)])
    created = store.rows([vid1])[vid1].created_at
    [(vid2, old2)] = store.upsert([_item(1, owner="bob")])
    assert old1 is None and old2.vid == vid1 and vid2 > vid1
    row = store.rows([vid2])[vid2]
    assert row.owner == "bob" and row.created_at == created
    assert store.rows([vid1]) == {} and store.count() == 1


def test_delete_and_generation(tmp_path):
    store = Store(tmp_path)
    g0 = store.generation
    store.upsert([_item(1), _item(2, modality="image")])
    assert store.generation == g0 + 1
    assert [r.id if r else None for r in store.delete(["id2", "missing"])] == ["id2", None]
    assert store.count("image") == 0 and store.count("text") == 1 and store.generation == g0 + 2


def test_owner_vids_history_and_embeddings_roundtrip(tmp_path):
    store = Store(tmp_path)
    vecs = unit_rows(3, 8)
    results = store.upsert([_item(i, owner="alice" if i < 2 else "bob", vec=vecs[i]) for i in range(3)])
    assert sorted(store.owner_vids("alice", "text").tolist()) == [results[0][0], results[1][0]]
    history = store.history("alice", "text")
    assert history.ids == ["id0", "id1"]
    np.testing.assert_array_equal(history.embeddings, vecs[:2])
    chunks = list(store.iter_embeddings("text", chunk=2))
    assert [len(v) for v, _ in chunks] == [2, 1]


def test_bind_model_refuses_another_model(tmp_path):
    Store(tmp_path).bind_model("ViT-B-32/openai", 512)
    Store(tmp_path).bind_model("ViT-B-32/openai", 512)  # same model: fine
    with pytest.raises(WorkspaceError, match="ViT-B-32/openai.*tiny"):
        Store(tmp_path).bind_model("tiny/random", 64)


def test_committed_writes_survive_reopen(tmp_path):
    store = Store(tmp_path)
    store.upsert([_item(i) for i in range(5)])
    del store  # no close: as after a crash
    assert Store(tmp_path).count() == 5


def test_workspace_lock_is_exclusive_and_released(tmp_path):
    first = WorkspaceLock(tmp_path)
    first.acquire()
    with pytest.raises(WorkspaceError, match="in use by another crossmodal server"):
        WorkspaceLock(tmp_path).acquire()
    first.release()
    again = WorkspaceLock(tmp_path)
    again.acquire()
    again.release()


def test_read_only_store_requires_existing_db(tmp_path):
    with pytest.raises(WorkspaceError, match="no store"):
        Store(tmp_path, read_only=True)
    Store(tmp_path).upsert([_item(1)])
    assert Store(tmp_path, read_only=True).count() == 1
