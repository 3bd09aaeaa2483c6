"""Query-less recommendations from a user's own history (issue 5), as plain functions.

The Flow splits the work in two: the recommender turns one modality of a user's
history into a few *seeds* (``plan_seeds``), the indexer searches around each seed
(``candidate_budget`` says how deep) and merges what it found (``select``). Nothing
here does I/O or imports Jina/DocArray/FAISS, so both executors and the tests call
it directly; ``plan.py`` and ``pick.py`` connect it to the store and the index.

Seeds follow the user's interests: HDBSCAN clusters the history, each large cluster
contributes its medoid (a real post, so a seed always sits where the user posted),
and a random outlier post adds a little serendipity. ``k`` is shared among the
seeds so that the result list mirrors how much the user posts about each interest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from crossmodal.api.params import RecommendParams
from crossmodal.settings import MODALITIES


@dataclass(eq=False)  # identity equality: a generated __eq__ cannot compare ndarray fields
class Seed:
    """A point of the user's history to search around, and how many of k it yields."""

    modality: str  # modality of the history posts it was built from
    kind: str  # medoid | serendipity | history
    cluster: int  # HDBSCAN label of its interest; -1 when not built from a cluster
    share: int
    embedding: np.ndarray  # unit-norm float32 [d]
    post: int = -1  # the history row the seed is (names the interest: its most typical post)
    members: tuple[int, ...] = ()  # the history rows that form the interest

    @property
    def key(self) -> str:
        """How results name the seed that found them (``MatchDoc.seed``)."""
        return f"{self.modality}:{self.kind}:{self.cluster}"


@dataclass(eq=False)
class Candidate:
    """One search result of one seed, as the indexer found it."""

    id: str
    modality: str
    score: float  # similarity to the seed, higher is better
    embedding: np.ndarray
    payload: Any = None  # row metadata the indexer carries through untouched


def _unit(x: np.ndarray) -> np.ndarray:
    """Float32 rows of norm 1, so that dot products are cosines (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def plan_seeds(
    embeddings: np.ndarray,
    created_at: np.ndarray,
    modality: str,
    params: RecommendParams,
    max_history: int = 1000,
) -> list[Seed]:
    """Seeds for one modality of a user's history; their shares sum to ``params.k``.

    Only the ``max_history`` most recent posts are clustered: HDBSCAN here builds an
    n x n distance matrix, and recent posts say more about current interests anyway.
    An empty history gives no seeds (the caller answers with a reason, not an error).
    """
    x = np.asarray(embeddings, dtype=np.float32)
    t = np.asarray(created_at, dtype=np.float64)
    if x.ndim != 2 or t.shape != (len(x),):
        raise ValueError(f"embeddings [n, d] and created_at [n] expected, got {x.shape} and {t.shape}")
    if len(x) == 0:
        return []
    rows = np.arange(len(x))
    if len(x) > max_history:
        rows = np.sort(np.argsort(t, kind="stable")[-max_history:])
        x, t = x[rows], t[rows]
    x = _unit(x)
    labels = _cluster(x, params)
    seeds = _history_seeds(x, t, modality, params) if labels.max() < 0 else _cluster_seeds(x, labels, modality, params)
    for seed in seeds:  # rows of the history as given, not of the recent part clustered
        seed.post, seed.members = int(rows[seed.post]), tuple(int(rows[m]) for m in seed.members)
    return seeds


def _cluster(x: np.ndarray, params: RecommendParams) -> np.ndarray:
    """HDBSCAN labels of unit vectors (-1 = noise); Euclidean on the sphere ranks like cosine.

    HDBSCAN never returns exactly one cluster unless told it may, and when told so it
    swallows distinct interests into that one (the root of a bounded space always looks
    stable). So: look for several interests first, and only if there are none ask
    whether the history has one dense core. The generic algorithm is the fastest for
    a few hundred high-dimensional points (tree indexes do not help in 512-d).
    """
    import hdbscan  # here, not at the top: the indexer imports this module and never clusters (saves ~60 MB)

    if len(x) < max(params.min_cluster_size, params.min_samples + 1):
        return np.full(len(x), -1)
    for single in (False, True):
        labels = hdbscan.HDBSCAN(
            min_cluster_size=params.min_cluster_size,
            min_samples=params.min_samples,
            algorithm="generic",
            allow_single_cluster=single,
        ).fit_predict(x.astype(np.float64))
        if labels.max() >= 0:
            break
    return labels


def _medoid(members: np.ndarray) -> int:
    """Row with the highest mean cosine to all rows: for unit vectors that mean is
    ``row . mean(rows)``, so no m x m matrix is needed."""
    return int(np.argmax(members @ members.mean(axis=0)))


def _apportion(weights: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` into integer shares proportional to ``weights`` (sorted descending).

    Every weight gets 1 first while ``total`` allows, so no interest vanishes from the
    list; the rest goes by largest remainder. When ``total`` is smaller than the number
    of weights the last (smallest) ones get 0.
    """
    shares = np.zeros(len(weights), dtype=int)
    n = min(len(weights), total)
    if n == 0:
        return shares
    quota = weights[:n] / weights[:n].sum() * (total - n)
    extra = np.floor(quota).astype(int)
    extra[np.argsort(extra - quota, kind="stable")[: total - n - extra.sum()]] += 1
    shares[:n] = 1 + extra
    return shares


def _history_seeds(x: np.ndarray, t: np.ndarray, modality: str, params: RecommendParams) -> list[Seed]:
    """No interest stands out: the most central post plus the most recent others, evenly."""
    centre = _medoid(x)
    recent = [int(i) for i in np.argsort(-t, kind="stable") if i != centre][: params.max_seeds - 1]
    rows = [centre, *recent]
    shares = _apportion(np.ones(len(rows)), params.k)
    return [Seed(modality, "history", -1, int(s), x[i].copy(), i, (i,)) for i, s in zip(rows, shares) if s > 0]


def _cluster_seeds(x: np.ndarray, labels: np.ndarray, modality: str, params: RecommendParams) -> list[Seed]:
    """Medoids of the largest clusters, sharing k by size, plus one serendipity seed."""
    sizes = np.bincount(labels[labels >= 0])
    clusters = np.argsort(-sizes, kind="stable")[: params.max_seeds]
    noise = np.flatnonzero(labels < 0)
    surprise = 0
    if len(noise) and params.outlier_share > 0 and params.k >= 2:
        surprise = min(params.k - 1, max(1, round(params.outlier_share * params.k)))
    shares = _apportion(sizes[clusters].astype(float), params.k - surprise)
    seeds = []
    for label, share in zip(clusters, shares):
        if share > 0:
            members = np.flatnonzero(labels == label)
            centre = int(members[_medoid(x[members])])
            seeds.append(Seed(modality, "medoid", int(label), int(share), x[centre].copy(), centre,
                              tuple(int(m) for m in members)))
    if surprise:
        pick = int(np.random.default_rng(params.seed).choice(noise))
        seeds.append(Seed(modality, "serendipity", -1, surprise, x[pick].copy(), pick, (pick,)))
    return seeds


def candidate_budget(
    seed: Seed, params: RecommendParams, n_history: int, pool_factor: int = 4, max_budget: int = 5000
) -> int:
    """How many results to fetch per searched modality for one seed.

    ``pool_factor`` x share leaves MMR something to choose from (and lets seeds make up
    for one another when one runs dry); ``n_history`` more absorb the near-duplicates of
    the user's own posts that ``select`` drops (own items themselves are excluded by the
    search). ``max_budget`` bounds the work of a single request.
    """
    return int(min(max_budget, pool_factor * max(seed.share, 1) + max(n_history, 0)))


# every embedding the user posted, or a function giving each row's best cosine to them
History = Union[np.ndarray, Callable[[np.ndarray], np.ndarray]]


def select(
    seeds: list[Seed],
    candidates: list[list[Candidate]],
    history: History,
    params: RecommendParams,
) -> dict[str, list[tuple[Candidate, Seed]]]:
    """Turn the seeds' search results into at most k picks per result modality.

    ``candidates[i]`` are seed i's results; ``history`` is every embedding the user
    posted (any modality: cross-modal cosines never reach the novelty threshold), or,
    for a long history, a function answering "closest cosine to any of them" through
    an index, so no candidates x history matrix is ever built.
    Near-copies of the history are dropped (the user has seen them), an item found by
    several seeds counts once, for the seed that scored it best. Picks are chosen by
    MMR over the whole list, so interests do not repeat one another, with seeds taking
    turns in proportion to their shares, so every interest shows up near the top.
    """
    if len(seeds) != len(candidates):
        raise ValueError(
            f"one candidate list per seed expected, got {len(candidates)} for {len(seeds)} seeds"
        )
    pool, owner, emb = _novel_unique(candidates, history, params.novelty_threshold)
    shares = np.array([s.share for s in seeds], dtype=float)
    picks: dict[str, list[tuple[Candidate, Seed]]] = {}
    for modality in MODALITIES:
        rows = np.flatnonzero([c.modality == modality for c in pool])
        rel = np.array([pool[i].score for i in rows], dtype=np.float32)
        order = _interleaved_mmr(emb[rows], rel, owner[rows], shares, params.k, params.diversity)
        picks[modality] = [(pool[rows[j]], seeds[owner[rows[j]]]) for j in order]
    return picks


def _closest(emb: np.ndarray, history: History) -> np.ndarray:
    """Each row's highest cosine to the user's posts (-1 with no posts)."""
    if callable(history):
        return np.asarray(history(emb), dtype=np.float32)
    history = np.asarray(history, dtype=np.float32)
    if not history.size:
        return np.full(len(emb), -1.0, np.float32)
    return (emb @ _unit(history.reshape(-1, emb.shape[1])).T).max(axis=1)


def _novel_unique(
    candidates: list[list[Candidate]], history: History, threshold: float
) -> tuple[list[Candidate], np.ndarray, np.ndarray]:
    """Candidates that are no near-copy of the history, each (modality, id) once.

    Returns the kept candidates, the index of the seed each is credited to (the best
    score wins, the earlier seed on ties) and their unit embeddings.
    """
    flat = [(c, i) for i, found in enumerate(candidates) for c in found]
    for c, _ in flat:
        if c.modality not in MODALITIES:
            raise ValueError(f"candidate {c.id!r} has modality {c.modality!r}, expected one of {MODALITIES}")
    emb = _unit(np.stack([c.embedding for c, _ in flat])) if flat else np.zeros((0, 0), np.float32)
    novel = _closest(emb, history) < threshold if len(flat) else np.ones(0, dtype=bool)
    best: dict[tuple[str, str], int] = {}
    for row in np.flatnonzero(novel):
        c = flat[row][0]
        key = (c.modality, c.id)
        if key not in best or c.score > flat[best[key]][0].score:
            best[key] = int(row)
    rows = sorted(best.values())
    return [flat[r][0] for r in rows], np.array([flat[r][1] for r in rows], dtype=int), emb[rows]


def _interleaved_mmr(
    emb: np.ndarray, rel: np.ndarray, owner: np.ndarray, shares: np.ndarray, k: int, diversity: float
) -> list[int]:
    """Greedy MMR in which seeds take turns (Sainte-Lague order on their shares).

    Whose turn it is comes first, then that seed's candidate with the best
    ``diversity * relevance - (1 - diversity) * max cosine to anything picked so far``.
    A seed that runs dry drops out of the rotation and the others fill its places.
    Each seed's picks are finally re-sorted by relevance within the places it won.
    """
    counts = np.zeros(len(shares))
    left = np.bincount(owner, minlength=len(shares))
    taken = np.zeros(len(rel), dtype=bool)
    redundancy = np.full(len(rel), -1.0, dtype=np.float32)  # -1: nothing picked, no penalty differences
    picked: list[int] = []
    while len(picked) < min(k, len(rel)):
        turn = int(np.argmax(np.where(left > 0, shares / (2 * counts + 1), -np.inf)))
        gain = diversity * rel - (1 - diversity) * redundancy
        j = int(np.argmax(np.where((owner == turn) & ~taken, gain, -np.inf)))
        picked.append(j)
        taken[j] = True
        counts[turn] += 1
        left[turn] -= 1
        redundancy = np.maximum(redundancy, emb @ emb[j])
    order = np.array(picked, dtype=int)
    for s in np.unique(owner[order]):
        places = np.flatnonzero(owner[order] == s)
        order[places] = order[places][np.argsort(-rel[order[places]], kind="stable")]
    return order.tolist()
