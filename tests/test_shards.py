"""Shard ownership, layouts, resharding and merging shard answers, without a Flow."""
import json
import sqlite3

import numpy as np
import pytest
from docarray import DocList

from crossmodal.api import convert, merge
from crossmodal.api.params import parse_recommend_params
from crossmodal.api.schemas import ContentDoc, MatchDoc
from crossmodal.index.content import ContentIndex, IndexConfig
from crossmodal.index.reshard import reshard
from crossmodal.index.shards import check_layout, check_shard, merge_top_k, shard_dir, shard_of, written_shards
from crossmodal.index.store import Item, WorkspaceError
from crossmodal.index.users import Users
from crossmodal.recommend.pick import pick, shard_candidates
from crossmodal.recommend.plan import plan_user_seeds
from tests.harness import unit_rows

DIM = 16


def test_shard_of_is_stable_and_spreads_ids():
    # fixed values: the owner of an id must never change between runs, machines or versions
    assert [shard_of(f"id-{i}", 4) for i in range(8)] == [shard_of(f"id-{i}", 4) for i in range(8)]
    assert shard_of("x", 1) == 0
    counts = np.bincount([shard_of(f"doc-{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 850, counts  # about 1000 each
    assert shard_of("caf\udce9", 3) in range(3)  # lone surrogates are ids too (they are refused later)
    with pytest.raises(ValueError, match="shards"):
        shard_of("x", 0)


def _fill(index: ContentIndex, ids: list[str], owners: list[str], vectors: np.ndarray) -> None:
    """Every third item is an image: the modality follows the id, whichever shard stores it."""
    index.upsert([Item(i, o, "text" if int(i.split("-")[1]) % 3 else "image", v, f"text {i}", None, {"id": i}, None)
                  for i, o, v in zip(ids, owners, vectors)])


def _open(workspace, shard, shards) -> ContentIndex:
    return ContentIndex(IndexConfig(shard_dir(workspace, shard, shards), "m", DIM))


@pytest.fixture
def collection():
    ids = [f"item-{i}" for i in range(120)]
    owners = ["alice" if i % 4 == 0 else f"user{i % 7}" for i in range(120)]
    return ids, owners, unit_rows(120, DIM, seed=1)


def _split(tmp_path, collection, shards):
    ids, owners, vectors = collection
    check_layout(tmp_path, shards)
    indexes = [_open(tmp_path, s, shards) for s in range(shards)]
    for s, index in enumerate(indexes):
        mine = [n for n, i in enumerate(ids) if shard_of(i, shards) == s]
        _fill(index, [ids[n] for n in mine], [owners[n] for n in mine], vectors[mine])
        # the same posting times whatever the split (shards stamp their own clocks; reshard keeps them)
        index.store._db.execute("UPDATE items SET created_at = CAST(substr(id, 6) AS REAL)")
    return indexes


def test_layout_is_recorded_and_another_shard_count_refused(tmp_path, collection):
    for index in _split(tmp_path, collection, 2):
        index.close()
    assert written_shards(tmp_path) == 2
    with pytest.raises(WorkspaceError, match=r"written by 2 shard\(s\).*-t reshard --workspace .* --shards 3"):
        check_layout(tmp_path, 3)
    check_layout(tmp_path, 2)


def test_a_shard_refuses_a_volume_written_as_another(tmp_path):
    check_shard(tmp_path / "v", 1, 2)
    check_shard(tmp_path / "v", 1, 2)  # itself again
    with pytest.raises(WorkspaceError, match=r"holds shard 1 of 2, but this process is shard 1 of 3.*-t reshard"):
        check_shard(tmp_path / "v", 1, 3)
    with pytest.raises(WorkspaceError, match="holds shard 1 of 2, but this process is shard 0 of 2"):
        check_shard(tmp_path / "v", 0, 2)


def test_workspace_with_only_users_has_no_layout(tmp_path):
    Users(tmp_path).close()
    assert written_shards(tmp_path) is None
    check_layout(tmp_path, 4)  # a sharded service may start on it


def test_merged_search_equals_one_index(tmp_path, collection):
    one = _split(tmp_path / "one", collection, 1)[0]
    four = _split(tmp_path / "four", collection, 4)
    queries = unit_rows(5, DIM, seed=9)
    for modality in ("text", "image"):
        expected = one.search(list(queries), modality, 7, "alice")
        per_shard = [index.search(list(queries), modality, 7, "alice") for index in four]
        for q in range(len(queries)):
            merged = merge_top_k([found[q] for found in per_shard], 7, lambda m: m.score)
            assert [m.row.id for m in merged] == [m.row.id for m in expected[q]]
            assert np.allclose([m.score for m in merged], [m.score for m in expected[q]])
            assert all(m.row.owner != "alice" for m in merged)


def _history(index):
    """What /history answers: the user's posts of both modalities, ordered as one store would."""
    found = [(m, index.store.history("alice", m, 1000)) for m in ("text", "image")]
    posts = convert.post_docs([i for _, h in found for i in h.ids], [m for m, h in found for _ in h.ids],
                              [e for _, h in found for e in h.embeddings], [t for _, h in found for t in h.created_at])
    ids, modalities, emb, times = convert.posts(posts, DIM)
    order = sorted(range(len(ids)), key=lambda r: (times[r], ids[r]))
    return convert.post_docs([ids[r] for r in order], [modalities[r] for r in order], emb[order], times[order])


def test_merged_recommendations_equal_one_index(tmp_path, collection):
    one = _split(tmp_path / "one", collection, 1)[0]
    three = _split(tmp_path / "three", collection, 3)
    params = parse_recommend_params({"username": "alice", "k": 6, "novelty_threshold": 0.999})
    answers = [DocList[ContentDoc]([ContentDoc(id="history", shard=s, posts=_history(index))])
               for s, index in enumerate(three)]
    posts = merge.posts_answer(merge.check_shards(answers, 3), DIM)[0].posts
    assert posts.ids == _history(one).ids  # oldest first, as one store
    _, modalities, embeddings, created = convert.posts(posts, DIM)
    seeds = plan_user_seeds(modalities, embeddings, created, params)
    assert seeds
    expected = pick(seeds, shard_candidates(one, seeds, params, len(posts.ids)), embeddings, params)
    shard_docs = []
    for s, index in enumerate(three):
        doc = ContentDoc(id="r", seeds=convert.seed_docs(seeds), posts=posts, shard=s,
                         candidates=convert.candidate_docs(shard_candidates(index, seeds, params, len(posts.ids))))
        shard_docs.append(DocList[ContentDoc]([doc]))
    [answer] = merge.recommend_answer(merge.check_shards(shard_docs, 3), params, DIM)
    for group, query_modality in ((answer.from_text, "text"), (answer.from_image, "image")):
        for modality in ("text", "image"):
            got = [m.id for m in getattr(group, f"{modality}_matches")]
            assert got == [c.id for c, _ in expected[query_modality][modality]]
    assert answer.candidates is None and answer.posts is None


def test_missing_shard_is_named():
    docs = [DocList[ContentDoc]([ContentDoc(id="q", shard=s)]) for s in (0, 2)]
    with pytest.raises(merge.ShardUnavailable, match=r"shard\(s\) \[1\] of 3"):
        merge.check_shards(docs, 3)
    assert merge.check_shards([DocList[ContentDoc]()] * 2, 3)  # an empty request misses nothing
    # every shard answered, with an error (unmarked): not "unavailable", Jina reports their error
    unmarked = [DocList[ContentDoc]([ContentDoc(id="q")]) for _ in range(3)]
    assert merge.check_shards(unmarked, 3) == unmarked


def test_owned_answers_take_the_owners_copy():
    ids = [f"d{i}" for i in range(10)]
    shards = [DocList[ContentDoc]([ContentDoc(id=i, status="indexed" if shard_of(i, 2) == s else None)
                                   for i in ids]) for s in range(2)]
    assert [d.status for d in merge.owned_answers(shards)] == ["indexed"] * 10


def test_search_answers_cut_to_k_and_cap_thumbnails():
    shards = [DocList[ContentDoc]([ContentDoc(id="q", image_matches=DocList[MatchDoc](
        [MatchDoc(id=f"s{s}-{j}", score=1 - 0.1 * j - 0.01 * s, thumbnail="data:x") for j in range(4)]))])
        for s in range(3)]
    [doc] = merge.search_answers(shards, k=5, thumbnail_cap=3)
    assert [m.id for m in doc.image_matches] == ["s0-0", "s1-0", "s2-0", "s0-1", "s1-1"]
    assert [m.thumbnail is not None for m in doc.image_matches] == [True] * 3 + [False] * 2
    assert doc.text_matches is None


def test_stats_sum_shards_and_count_owners_once():
    tags = [{"count": {"text": 2, "image": 1}, "total": 3, "owners": 2, "owners_listed": True,
             "owner_names": ["a", "b"], "model": "m"},
            {"count": {"text": 1, "image": 0}, "total": 1, "owners": 1, "owners_listed": True,
             "owner_names": ["b"], "model": "m"}]
    [doc] = merge.stats_answer([DocList[ContentDoc]([ContentDoc(id="stats", tags=t)]) for t in tags])
    assert doc.tags["total"] == 4 and doc.tags["count"] == {"text": 3, "image": 1}
    assert doc.tags["owners"] == 2 and "owner_names" not in doc.tags
    assert [s["total"] for s in doc.tags["shards"]] == [3, 1]


def _all_rows(workspace, shards):
    rows = {}
    for s in range(shards):
        with sqlite3.connect(shard_dir(workspace, s, shards) / "store.sqlite") as conn:
            for id_, owner, created, emb, tags in conn.execute(
                    "SELECT id, owner, created_at, embedding, tags FROM items"):
                assert shard_of(id_, shards) == s, f"{id_} stored on shard {s}"
                assert id_ not in rows, f"{id_} stored twice"
                rows[id_] = (owner, created, emb, tags)
    return rows


@pytest.mark.parametrize("path", [(1, 3), (3, 2), (2, 1)])
def test_reshard_moves_every_row_once_and_keeps_users(tmp_path, collection, path):
    start, target = path
    for index in _split(tmp_path, collection, start):
        index.close()
    users = Users(tmp_path)
    token = users.add("alice")
    users.close()
    before = _all_rows(tmp_path, start)
    counts_before, counts_after = reshard(tmp_path, target)
    assert sum(counts_before) == sum(counts_after) == len(collection[0])
    assert len(counts_after) == target
    assert _all_rows(tmp_path, target) == before  # ids, owners, times, embeddings, tags
    assert json.loads((tmp_path / "layout.json").read_text()) == {"shards": target}
    assert not (tmp_path / ".reshard").exists()
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == (
        [f"shard-{i}" for i in range(target)] if target > 1 else [])
    users = Users(tmp_path, read_only=True)
    assert users.verify(token).name == "alice"
    users.close()
    index = _open(tmp_path, 0, target)  # FAISS is rebuilt from the moved rows
    assert index.vectors["text"].size + index.vectors["image"].size == counts_after[0]
    index.close()


def test_reshard_refuses_a_served_workspace(tmp_path, collection):
    indexes = _split(tmp_path, collection, 2)
    try:
        with pytest.raises(WorkspaceError, match="in use"):
            reshard(tmp_path, 3)
    finally:
        for index in indexes:
            index.close()
    assert written_shards(tmp_path) == 2


@pytest.mark.parametrize("body, status, field", [
    (b'{"data": [], "parameters": {"k": NaN}}', 422, "parameters.k"),
    (b'{"data": [], "parameters": {"k": Infinity}}', 422, "parameters.k"),
    (b'{"data": [], "parameters": {"positive": ["a", "\\ud800"]}}', 422, "parameters.positive[1]"),
    (b'{"data": [], "parameters": {"\\ud800": 1}}', 422, "parameters"),
    (('{"data": [{}], "parameters": {"x": ' + "[" * 5000 + "]" * 5000 + "}}").encode(), 400, "body"),
    (b'{"data": [], "parameters": {"x": [[[[[[[[[[1]]]]]]]]]]}}', 422, "parameters.x[0][0][0][0][0][0][0][0]"),
])
def test_gateway_refuses_parameters_no_executor_can_be_sent(body, status, field):
    from crossmodal.serve.gateway import refusal

    refused = refusal(body)
    assert refused is not None and refused.status == status and refused.body["field"] == field, refused.body


def test_gateway_lets_ordinary_parameters_through():
    from crossmodal.serve.gateway import refusal

    assert refusal(b'{"data": [{"id": "q"}], "parameters": {"k": 5, "positive": ["a"], "tags": {"a": {"b": 1}}}}') is None


def test_unreachable_executor_is_named_from_either_jina_error_text():
    from crossmodal.serve.gateway import _executor_name

    assert _executor_name("failed to connect to all addresses; deployment `clip` at 127.0.0.1") == "clip"
    assert _executor_name("Error while resetting connections [None] for recommender. Connections cannot be used.") \
        == "recommender"
    assert _executor_name("something else") == "unknown"
