"""Seed planning and result selection of /recommend on constructed embeddings.

Interests are tight groups of posts around orthogonal directions of a 32-d space;
"the index" is a brute-force cosine search over constructed items of other users,
which is all the indexer does for these functions (FAISS is not needed to test them).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from crossmodal.api.params import RecommendParams, parse_recommend_params
from crossmodal.recommend.core import Candidate, Seed, candidate_budget, plan_seeds, select

D = 32


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def axis(i: int) -> np.ndarray:
    return np.eye(D, dtype=np.float32)[i]


def around(centre: np.ndarray, n: int, rng: np.random.Generator, spread: float = 0.1) -> np.ndarray:
    return unit(centre + spread * rng.standard_normal((n, D)))


def scattered(n: int, rng: np.random.Generator) -> np.ndarray:
    """Posts far from the interests on axes 0 and 1 (and from one another)."""
    x = rng.standard_normal((n, D))
    x[:, :2] = 0
    return unit(x)


def params(**overrides) -> RecommendParams:
    return RecommendParams(username="alice", **overrides)


def is_history_row(vector: np.ndarray, history: np.ndarray) -> bool:
    return bool(np.isclose(history @ vector, 1.0, atol=1e-5).any())


@pytest.fixture
def two_interests():
    """10 posts about axis 0, 6 about axis 1, 3 unrelated ones, in random time order."""
    rng = np.random.default_rng(7)
    history = np.vstack([around(axis(0), 10, rng), around(axis(1), 6, rng), scattered(3, rng)])
    created_at = rng.permutation(len(history)).astype(float)
    return history, created_at


def topic(vector: np.ndarray) -> int:
    """Which interest (axis 0 or 1) a vector is about, -1 for neither."""
    cos = vector[:2] / np.linalg.norm(vector)
    return int(np.argmax(cos)) if cos.max() > 0.5 else -1


# --- plan_seeds ---------------------------------------------------------------------


def test_two_interests_give_a_medoid_seed_each_with_proportional_shares(two_interests):
    history, created_at = two_interests
    seeds = plan_seeds(history, created_at, "text", params(k=20))
    medoids = [s for s in seeds if s.kind == "medoid"]
    assert sorted(topic(s.embedding) for s in medoids) == [0, 1]
    assert all(is_history_row(s.embedding, history) for s in seeds)
    assert all(s.modality == "text" and s.embedding.dtype == np.float32 for s in seeds)
    assert np.allclose([np.linalg.norm(s.embedding) for s in seeds], 1.0, atol=1e-5)
    assert sum(s.share for s in seeds) == 20
    big, small = sorted(medoids, key=lambda s: topic(s.embedding))
    assert big.share > small.share
    assert big.share / (big.share + small.share) == pytest.approx(10 / 16, abs=0.12)
    for s in seeds:
        if s.kind == "serendipity":
            assert s.share == round(0.2 * 20) and s.cluster == -1


@pytest.mark.parametrize("k", [1, 2, 3, 7, 10, 1000])
def test_shares_always_sum_to_k_and_are_positive(two_interests, k):
    history, created_at = two_interests
    seeds = plan_seeds(history, created_at, "image", params(k=k))
    assert sum(s.share for s in seeds) == k
    assert all(s.share >= 1 for s in seeds)
    assert len(seeds) <= k


def test_max_seeds_keeps_the_largest_interest(two_interests):
    history, created_at = two_interests
    seeds = plan_seeds(history, created_at, "text", params(max_seeds=1, outlier_share=0.0))
    assert [(s.kind, topic(s.embedding), s.share) for s in seeds] == [("medoid", 0, 10)]


def test_medoid_is_the_most_central_post():
    rng = np.random.default_rng(3)
    posts = around(axis(0), 9, rng, spread=0.3)
    seeds = plan_seeds(posts, np.arange(9.0), "text", params(min_cluster_size=10, max_seeds=1))
    assert len(seeds) == 1
    assert np.allclose(seeds[0].embedding, posts[np.argmax((posts @ posts.T).mean(axis=1))])


def test_empty_history_gives_no_seeds():
    assert plan_seeds(np.zeros((0, D), np.float32), np.zeros(0), "text", params()) == []


def test_single_post_is_the_only_seed():
    post = unit(np.arange(1.0, D + 1))[None]
    seeds = plan_seeds(post, np.array([5.0]), "image", params(k=7))
    assert len(seeds) == 1
    assert seeds[0].share == 7 and seeds[0].kind == "history"
    assert np.allclose(seeds[0].embedding, post[0])


def test_too_few_posts_to_cluster_seed_from_the_whole_history():
    rng = np.random.default_rng(0)
    history = scattered(3, rng)
    created_at = np.array([30.0, 10.0, 20.0])  # the newest post is row 0
    seeds = plan_seeds(history, created_at, "text", params(min_cluster_size=4))
    assert [s.kind for s in seeds] == ["history"] * 3
    assert sorted(s.share for s in seeds) == [3, 3, 4]
    used = {int(np.argmax(history @ s.embedding)) for s in seeds}
    assert used == {0, 1, 2}  # more than the last post

    two = plan_seeds(history, created_at, "text", params(min_cluster_size=4, max_seeds=2))
    centre = int(np.argmax(history @ history.mean(axis=0)))
    newest_other = next(i for i in np.argsort(-created_at) if i != centre)
    assert [int(np.argmax(history @ s.embedding)) for s in two] == [centre, newest_other]
    assert [s.share for s in two] == [5, 5]


def test_two_posts_are_below_the_default_cluster_size():
    rng = np.random.default_rng(1)
    history = scattered(2, rng)
    seeds = plan_seeds(history, np.array([1.0, 2.0]), "text", params(k=1))
    assert [(s.kind, s.share) for s in seeds] == [("history", 1)]


def test_one_interest_with_outliers_adds_a_serendipity_seed():
    rng = np.random.default_rng(4)
    history = np.vstack([around(axis(0), 10, rng), scattered(4, rng)])
    seeds = plan_seeds(history, np.arange(14.0), "text", params(k=10))
    assert [s.kind for s in seeds] == ["medoid", "serendipity"]
    medoid, surprise = seeds
    assert topic(medoid.embedding) == 0
    assert (medoid.share, surprise.share) == (8, 2)
    assert is_history_row(surprise.embedding, history)
    assert not np.allclose(surprise.embedding, medoid.embedding)


def test_a_small_k_still_leaves_one_place_for_serendipity():
    rng = np.random.default_rng(4)
    history = np.vstack([around(axis(0), 10, rng), scattered(4, rng)])
    seeds = plan_seeds(history, np.arange(14.0), "text", params(k=2))  # round(0.2 * 2) == 0
    assert [(s.kind, s.share) for s in seeds] == [("medoid", 1), ("serendipity", 1)]


def test_serendipity_is_reproducible_per_seed():
    rng = np.random.default_rng(4)
    history = np.vstack([around(axis(0), 10, rng), scattered(4, rng)])

    def pick(seed: int) -> np.ndarray:
        seeds = plan_seeds(history, np.arange(14.0), "text", params(seed=seed))
        return next(s.embedding for s in seeds if s.kind == "serendipity")

    assert np.array_equal(pick(0), pick(0))
    assert len({pick(s).tobytes() for s in range(20)}) > 1


def test_one_interest_without_outliers_gives_all_of_k_to_its_medoid():
    # The seed system crashed on a clustering without noise points.
    post = unit(np.arange(1.0, D + 1))
    history = np.repeat(post[None], 5, axis=0)  # the same post five times
    seeds = plan_seeds(history, np.arange(5.0), "text", params(k=10))
    assert [(s.kind, s.share) for s in seeds] == [("medoid", 10)]
    assert np.allclose(seeds[0].embedding, post)


def test_no_serendipity_when_outlier_share_is_zero_or_k_is_one():
    rng = np.random.default_rng(4)
    history = np.vstack([around(axis(0), 10, rng), scattered(4, rng)])
    for p in (params(outlier_share=0.0), params(k=1)):
        seeds = plan_seeds(history, np.arange(14.0), "text", p)
        assert [s.kind for s in seeds] == ["medoid"] and seeds[0].share == p.k


def test_only_the_most_recent_posts_are_clustered():
    rng = np.random.default_rng(5)
    old, new = around(axis(0), 10, rng), around(axis(1), 10, rng)
    history, created_at = np.vstack([new, old]), np.r_[np.arange(10.0, 20.0), np.arange(10.0)]
    seeds = plan_seeds(history, created_at, "text", params(), max_history=10)
    assert {topic(s.embedding) for s in seeds} == {1}


def test_plan_seeds_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="created_at"):
        plan_seeds(np.zeros((3, D), np.float32), np.zeros(2), "text", params())


# --- select -------------------------------------------------------------------------


class Index:
    """Other users' items: brute-force cosine search standing in for the indexer."""

    def __init__(self, rng: np.random.Generator, per_topic: int = 30):
        self.items = []
        for modality in ("text", "image"):
            for t in (0, 1):
                for i, e in enumerate(around(axis(t), per_topic, rng, spread=0.15)):
                    self.items.append((f"{modality}-{t}-{i}", modality, e))
            for i, e in enumerate(scattered(10, rng)):
                self.items.append((f"{modality}-x-{i}", modality, e))

    def search(self, seed: Seed, depth: int) -> list[Candidate]:
        found = []
        for modality in ("text", "image"):
            rows = [(float(e @ seed.embedding), id_, e) for id_, m, e in self.items if m == modality]
            rows.sort(key=lambda r: -r[0])
            found += [Candidate(id_, modality, score, e) for score, id_, e in rows[:depth]]
        return sorted(found, key=lambda c: -c.score)


def candidate(id_: str, score: float, embedding: np.ndarray, modality: str = "text") -> Candidate:
    return Candidate(id_, modality, score, unit(embedding))


def seed(share: int, embedding: np.ndarray | None = None) -> Seed:
    return Seed("text", "medoid", 0, share, unit(axis(0) if embedding is None else embedding))


def test_select_represents_every_interest_in_proportion(two_interests):
    history, created_at = two_interests
    p = params(k=10)
    seeds = plan_seeds(history, created_at, "text", p)
    index = Index(np.random.default_rng(11))
    found = [index.search(s, candidate_budget(s, p, len(history))) for s in seeds]
    picks = select(seeds, found, history, p)
    assert set(picks) == {"text", "image"}
    for modality, chosen in picks.items():
        assert len(chosen) == 10 and len({c.id for c, _ in chosen}) == 10
        assert all(c.modality == modality for c, _ in chosen)
        for s in seeds:
            mine = [c.score for c, by in chosen if by is s]
            assert len(mine) == s.share
            assert mine == sorted(mine, reverse=True)
        for c, by in chosen:
            if by.kind == "medoid":
                assert topic(c.embedding) == topic(by.embedding)
        medoid_topics = [topic(c.embedding) for c, by in chosen if by.kind == "medoid"]
        assert set(medoid_topics[:3]) == {0, 1}  # both interests near the top


def test_near_copies_of_the_history_are_dropped():
    rng = np.random.default_rng(2)
    history = around(axis(0), 4, rng)
    copy = unit(history[2] + 0.01 * rng.standard_normal(D))  # someone reposted it
    fresh = around(axis(0), 3, rng, spread=0.5)
    found = [[candidate("copy", 0.99, copy)]]
    found[0] += [candidate(f"f{i}", 0.5 - i / 10, e) for i, e in enumerate(fresh)]
    strict = select([seed(10)], found, history, params(novelty_threshold=0.95))
    assert [c.id for c, _ in strict["text"]] == ["f0", "f1", "f2"]
    lenient = select([seed(10)], found, history, params(novelty_threshold=1.0))
    assert "copy" in [c.id for c, _ in lenient["text"]]


def test_an_item_found_by_several_seeds_counts_once_for_its_best_seed():
    a, b = seed(5, axis(0)), seed(5, axis(1))
    both = axis(0) + axis(1)
    found = [
        [candidate("shared", 0.6, both), candidate("a1", 0.5, axis(2))],
        [candidate("shared", 0.7, both), candidate("b1", 0.4, axis(3))],
    ]
    chosen = select([a, b], found, np.zeros((0, D)), params(k=10))["text"]
    assert sorted(c.id for c, _ in chosen) == ["a1", "b1", "shared"]
    assert next(by for c, by in chosen if c.id == "shared") is b
    tie = [[candidate("shared", 0.6, both)], [candidate("shared", 0.6, both)]]
    chosen = select([a, b], tie, np.zeros((0, D)), params(k=10))["text"]
    assert [(c.id, by) for c, by in chosen] == [("shared", a)]


def test_fewer_candidates_than_k_and_none_at_all():
    found = [[candidate("only", 0.3, axis(4)), candidate("img", 0.2, axis(5), "image")]]
    picks = select([seed(10)], found, np.zeros((0, D)), params(k=10))
    assert [c.id for c, _ in picks["text"]] == ["only"]
    assert [c.id for c, _ in picks["image"]] == ["img"]
    assert select([seed(10)], [[]], np.zeros((0, D)), params()) == {"text": [], "image": []}
    assert select([], [], np.zeros((0, D)), params()) == {"text": [], "image": []}


def test_a_seed_that_runs_dry_leaves_its_places_to_the_others():
    rng = np.random.default_rng(6)
    a, b = seed(5, axis(0)), seed(5, axis(1))
    found = [
        [candidate("a0", 0.9, axis(0))],
        [candidate(f"b{i}", 0.8 - i / 100, e) for i, e in enumerate(around(axis(1), 12, rng, spread=0.5))],
    ]
    chosen = select([a, b], found, np.zeros((0, D)), params(k=10))["text"]
    assert len(chosen) == 10
    assert [by for _, by in chosen].count(a) == 1


def test_mmr_with_lambda_one_keeps_relevance_order():
    rng = np.random.default_rng(8)
    near = around(axis(0), 6, rng, spread=0.02)  # near-copies of one another
    found = [[candidate(f"c{i}", 0.9 - i / 10, e) for i, e in enumerate(near)]]
    chosen = select([seed(4)], found, np.zeros((0, D)), params(k=4, diversity=1.0))["text"]
    assert [c.id for c, _ in chosen] == ["c0", "c1", "c2", "c3"]


def test_mmr_with_low_lambda_prefers_a_diverse_item_over_a_near_copy():
    base = axis(0)
    found = [[
        candidate("first", 0.90, base),
        candidate("near-copy", 0.89, base + 0.01 * axis(1)),
        candidate("different", 0.70, base + axis(2)),
    ]]
    diverse = select([seed(2)], found, np.zeros((0, D)), params(k=2, diversity=0.3))["text"]
    assert [c.id for c, _ in diverse] == ["first", "different"]
    relevant = select([seed(2)], found, np.zeros((0, D)), params(k=2, diversity=1.0))["text"]
    assert [c.id for c, _ in relevant] == ["first", "near-copy"]


def test_mmr_diversifies_across_seeds_too():
    # Seed b's best result is a near-copy of what seed a already picked.
    a, b = seed(1, axis(0)), seed(1, axis(1))
    found = [
        [candidate("a", 0.9, axis(0))],
        [candidate("b-copy-of-a", 0.8, axis(0) + 0.01 * axis(1)), candidate("b", 0.75, axis(1))],
    ]
    chosen = select([a, b], found, np.zeros((0, D)), params(k=2, diversity=0.5))["text"]
    assert [c.id for c, _ in chosen] == ["a", "b"]


def test_select_rejects_malformed_input():
    with pytest.raises(ValueError, match="one candidate list per seed"):
        select([seed(1)], [], np.zeros((0, D)), params())
    with pytest.raises(ValueError, match="audio"):
        select([seed(1)], [[candidate("x", 0.5, axis(0), "audio")]], np.zeros((0, D)), params())


def test_candidate_budget_over_fetches_and_is_bounded():
    s = seed(5)
    assert candidate_budget(s, params(), 0) > s.share
    assert candidate_budget(s, params(), 50) > candidate_budget(s, params(), 0)
    assert candidate_budget(s, params(), 10**9) == 5000
    assert candidate_budget(s, params(), 10**9, max_budget=300) == 300


# --- parameters ---------------------------------------------------------------------


def test_defaults_and_unknown_keys():
    p = parse_recommend_params({"username": "alice", "__results__": {}, "top_k": 3, "k": None})
    assert p == RecommendParams(username="alice")
    assert (p.k, p.min_cluster_size, p.min_samples, p.max_seeds) == (10, 3, 2, 3)
    assert (p.outlier_share, p.novelty_threshold, p.diversity, p.seed) == (0.2, 0.95, 0.7, 0)


def test_json_floats_are_accepted_where_integral():
    p = parse_recommend_params({"username": "bob", "k": 5.0, "seed": 3.0, "max_seeds": 2, "diversity": 1})
    assert (p.k, p.seed, p.max_seeds, p.diversity) == (5, 3, 2, 1.0)
    assert type(p.k) is int and type(p.seed) is int and type(p.diversity) is float


@pytest.mark.parametrize(
    "name, value",
    [
        ("k", 0), ("k", -1), ("k", 1001), ("k", "ten"), ("k", 5.5), ("k", True), ("k", float("nan")),
        ("k", 10**400), ("seed", 2**32), ("novelty_threshold", float("inf")),
        ("min_cluster_size", 1), ("min_samples", 0), ("max_seeds", 0), ("seed", -1), ("seed", 0.5),
        ("outlier_share", 1.0), ("outlier_share", 1.5), ("outlier_share", -0.1),
        ("novelty_threshold", 0.0), ("novelty_threshold", 1.01), ("diversity", -0.1), ("diversity", 1.1),
        ("diversity", "high"), ("username", ""), ("username", "  "), ("username", 42),
    ],
)
def test_bad_values_name_the_parameter(name, value):
    with pytest.raises(ValueError, match=rf"{name}.*{re.escape(repr(value))}"):
        parse_recommend_params({"username": "alice", name: value})


def test_missing_username_is_rejected():
    with pytest.raises(ValueError, match="username"):
        parse_recommend_params({"k": 3})
