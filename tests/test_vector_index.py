import numpy as np
import pytest

from crossmodal.index.vectors import IndexConfigError, VectorIndex
from tests.harness import unit_rows

DIM = 16


def _exact(x, q, k, hidden=()):
    scores = q @ x.T
    scores[:, list(hidden)] = -np.inf
    return np.argsort(-scores, axis=1)[:, :k]


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_search_matches_exact_and_excludes_ids(factory):
    x = unit_rows(500, DIM)
    index = VectorIndex.build(DIM, factory, [(np.arange(500), x)], ef_search=256)
    hidden = np.arange(0, 500, 3)
    scores, vids = index.search(x[:5], 10, exclude=hidden)
    assert not set(vids.ravel()) & set(hidden.tolist())
    assert (vids >= 0).all(), "exclusion must still return k results"
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores descending"
    expected = _exact(x, x[:5], 10, hidden)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(vids, expected)])
    assert recall >= 0.9


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_removed_vectors_never_come_back(factory):
    x = unit_rows(50, DIM)
    index = VectorIndex.build(DIM, factory, [(np.arange(50), x)])
    index.remove([7])
    _, vids = index.search(x[7:8], 5)
    assert 7 not in vids[0] and index.size == 49


def test_untrained_ivf_falls_back_to_flat_then_trains_when_large_enough():
    small = VectorIndex.build(DIM, "IVF64,Flat", [(np.arange(100), unit_rows(100, DIM))])
    assert small.effective_factory == "Flat"
    big = VectorIndex.build(DIM, "IVF8,Flat", [(np.arange(2000), unit_rows(2000, DIM))])
    assert big.effective_factory == "IVF8,Flat" and big.size == 2000


def test_bad_factory_is_a_clear_error():
    with pytest.raises(IndexConfigError, match="Bogus"):
        VectorIndex(DIM, "Bogus")


def test_save_load_only_when_generation_matches(tmp_path):
    x = unit_rows(40, DIM)
    index = VectorIndex.build(DIM, "HNSW32", [(np.arange(40), x)])
    index.remove([3])
    path = tmp_path / "faiss-text.index"
    index.save(path, generation=5)
    assert VectorIndex.load(path, 6, DIM, "HNSW32") is None, "stale copy must be rebuilt"
    assert VectorIndex.load(path, 5, DIM, "Flat") is None, "other factory must be rebuilt"
    loaded = VectorIndex.load(path, 5, DIM, "HNSW32")
    assert loaded.size == 39 and loaded.tombstones == {3}
    path.with_suffix(".json").unlink()  # as after a crash mid-save
    assert VectorIndex.load(path, 5, DIM, "HNSW32") is None


def test_one_query_is_scanned_by_one_thread_and_the_team_is_restored(monkeypatch):
    import faiss

    from crossmodal.index import vectors

    x = unit_rows(2000, 32, seed=3)
    index = VectorIndex.build(32, "Flat", [(np.arange(2000), x)])
    batch_scores, batch_vids = index.search(x[:8], 5, exclude=np.array([0]))
    calls = []
    monkeypatch.setattr(vectors, "OMP_THREADS", 2)
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: calls.append(n))
    for i in range(8):  # the same answers as in the batch, which keeps FAISS's team
        scores, vids = index.search(x[i:i + 1], 5, exclude=np.array([0]))
        assert vids.tolist() == batch_vids[i:i + 1].tolist()
        np.testing.assert_allclose(scores, batch_scores[i:i + 1], rtol=1e-5)
    assert calls == [1, 2] * 8
    calls.clear()
    index.search(x[:2], 5)
    assert calls == []
