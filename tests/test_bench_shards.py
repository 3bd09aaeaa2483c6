"""The shard benchmark's own logic: its recall and its sharded search must be right for its figures to mean anything."""
import numpy as np
import pytest

from bench.shards import DIM, ShardedSearch, owners, recall_at_k
from bench.vectors import clustered
from crossmodal.index.vectors import VectorIndex


def test_recall_at_k_counts_shared_ids_whatever_the_order():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k([[3, 2, 1], [4, 9, 8]], truth, k=3) == pytest.approx(4 / 6)
    assert recall_at_k([[1, 2, 3, 7], [6, 5, 4]], truth, k=3) == 1.0  # only the first k count


def test_recall_at_k_refuses_a_missing_answer():
    with pytest.raises(ValueError, match="1 answers for 2 queries"):
        recall_at_k([[1, 2, 3]], np.array([[1, 2, 3], [4, 5, 6]]), k=3)


@pytest.mark.parametrize("shards", [2, 4])
def test_exact_shards_merged_equal_one_exact_index(shards):
    """Split by id ownership, searched per shard and merged: the same top 10 as one index over all."""
    x = clustered(3000, seed=3, centres=50)
    queries = clustered(20, seed=4, centres=50)
    whole = VectorIndex(DIM, "Flat")
    whole.add(np.arange(len(x)), x)
    owner = owners(len(x), shards)
    assert len(set(owner.tolist())) == shards
    parts = []
    for shard in range(shards):
        rows = np.flatnonzero(owner == shard)
        part = VectorIndex(DIM, "Flat")
        part.add(rows, x[rows])
        parts.append(part)
    sharded = ShardedSearch(parts)
    try:
        for q in queries:
            scores, vids = whole.search(q[None, :], 10)
            merged = sharded(q[None, :], 10)
            assert [vid for _, vid in merged] == vids[0].tolist()
            np.testing.assert_allclose([s for s, _ in merged], scores[0], rtol=1e-5)
    finally:
        sharded.close()
