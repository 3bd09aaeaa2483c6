"""Relevance feedback (/refine) on constructed embeddings: the marks pull results their way.

Three "kinds" are tight groups around orthogonal directions of a 32-d space, each with
text and image items (an offset per modality mimics CLIP's modality gap). The query
sits between kinds A and B; marking A relevant (and B not) must bring A first, in both
modalities, whichever method.
"""
import numpy as np
import pytest

from crossmodal.api.params import parse_refine_params
from crossmodal.feedback.core import rocchio
from crossmodal.feedback.search import direction as search_direction
from crossmodal.feedback.search import refine
from crossmodal.index.content import ContentIndex, IndexConfig
from crossmodal.index.store import Item

D = 32
KINDS = {"A": 0, "B": 1, "C": 2}


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def index(tmp_path):
    rng = np.random.default_rng(0)
    gap = {"text": np.eye(D)[10] * 0.5, "image": np.eye(D)[11] * 0.5}
    items = []
    for kind, axis in KINDS.items():
        for modality in ("text", "image"):
            vectors = unit(np.eye(D)[axis] + gap[modality] + 0.15 * rng.standard_normal((20, D)))
            items += [Item(f"{kind}-{modality}-{i}", f"user{i % 4}", modality, v) for i, v in enumerate(vectors)]
    content = ContentIndex(IndexConfig(tmp_path, "test-model", D))
    content.upsert(items)
    yield content
    content.close()


QUERY = unit(np.eye(D)[0] + np.eye(D)[1] + np.eye(D)[10] * 0.5)  # a text query between A and B


def kinds(matches):
    return [m.row.id.split("-")[0] for m in matches]


@pytest.mark.parametrize("method", ["linear", "rocchio"])
def test_marking_images_refines_both_modalities(index, method):
    params = parse_refine_params({"k": 10, "method": method, "positive": [f"A-image-{i}" for i in range(3)],
                                  "negative": [f"B-image-{i}" for i in range(3)]})
    found, used = refine(index, QUERY, params)
    for modality in ("text", "image"):
        assert kinds(found[modality]) == ["A"] * 10, (modality, kinds(found[modality]))
        scores = [m.score for m in found[modality]]
        assert scores == sorted(scores, reverse=True)
    labelled = {*params.positive, *params.negative}
    assert not labelled & {m.row.id for ms in found.values() for m in ms}, "marked items came back"
    assert used == {"method": method, "positive": 3, "negative": 3, "weak_negatives": 0}


def test_the_unrefined_query_mixes_kinds(index):
    """The baseline the test above improves on: plain search returns A and B mixed."""
    [matches] = index.search(QUERY[None, :], "image", 20)
    assert set(kinds(matches)) == {"A", "B"}


def test_positives_alone_use_weak_negatives_from_the_collection(index):
    params = parse_refine_params({"k": 5, "method": "linear", "positive": ["B-text-0", "B-text-1"],
                                  "weak_negatives": 30})
    found, used = refine(index, QUERY, params)
    assert kinds(found["image"]) == ["B"] * 5 and kinds(found["text"]) == ["B"] * 5
    assert used["weak_negatives"] == 30 and used["negative"] == 0


def test_linear_score_is_the_classifier_decision_value(index):
    """Over embeddings centred on their modality's centre: ``w . x + offset[modality]``."""
    params = parse_refine_params({"k": 3, "method": "linear", "positive": ["A-image-0"],
                                  "negative": ["C-image-0"], "modalities": ["image"]})
    found, _ = refine(index, QUERY, params)
    direction, offsets, _, _ = search_direction(index, QUERY, "text", params)
    vectors = index.store.embeddings_by_id([m.row.id for m in found["image"]])
    for m in found["image"]:
        assert m.score == pytest.approx(float(vectors[m.row.id][2] @ direction.w + offsets["image"]), abs=1e-4)


def test_owner_exclusion_and_k_hold(index):
    params = parse_refine_params({"k": 7, "username": "user1", "positive": ["A-text-0"], "modalities": "text"})
    found, _ = refine(index, QUERY, params)
    assert len(found["text"]) == 7 and all(m.row.owner != "user1" for m in found["text"])
    assert "image" not in found


def test_rocchio_moves_the_query_towards_the_positives():
    moved = rocchio(QUERY, unit(np.eye(D)[[0]]), unit(np.eye(D)[[1]]), 1.0, 0.75, 0.15).w
    assert moved @ np.eye(D)[0] > QUERY @ np.eye(D)[0] and moved @ np.eye(D)[1] < QUERY @ np.eye(D)[1]
    assert np.linalg.norm(moved) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("parameters, message", [
    ({}, "'positive': no marks given"),
    ({"positive": ["A-text-0", "nope"]}, "'positive': unknown id(s) ['nope']"),
    ({"positive": ["A-text-0"], "negative": ["A-text-0"]}, "'negative': also in 'positive': ['A-text-0']"),
    ({"negative": ["ghost"]}, "'negative': unknown id(s) ['ghost']"),
])
def test_label_errors_name_the_parameter(index, parameters, message):
    with pytest.raises(ValueError) as failure:
        refine(index, QUERY, parse_refine_params(parameters))
    assert message in str(failure.value)


@pytest.mark.parametrize("parameters, name", [
    ({"method": "svm"}, "'method'"), ({"positive": "x" * 3 and [1]}, "'positive'"),
    ({"negative": [""]}, "'negative'"), ({"positive": ["a"] * 1001}, "'positive'"), ({"gamma": -1}, "'gamma'"),
])
def test_bad_parameters_name_the_parameter(parameters, name):
    with pytest.raises(ValueError, match=name):
        parse_refine_params(parameters)


class IndexClient:
    """Answers /search and /refine like the Flow's indexer would, for a text query of QUERY."""

    def __init__(self, index):
        self.index, self.calls = index, []

    def post(self, endpoint, docs, parameters, return_type):
        from docarray import DocList

        from crossmodal.api import convert
        from crossmodal.api.params import parse_search_params
        from crossmodal.api.schemas import ContentDoc

        self.calls.append((endpoint, dict(parameters)))
        [doc] = docs
        if endpoint == "/search":
            p = parse_search_params(parameters)
            [found] = self.index.search(QUERY[None, :], "image", p.k)
        else:
            found = refine(self.index, QUERY, parse_refine_params(parameters))[0]["image"]
        return DocList[ContentDoc]([ContentDoc(id=doc.id, status="ok", image_matches=convert.match_docs(found, {}))])


def test_simulated_feedback_marks_what_it_saw_and_improves(index):
    from crossmodal.train.feedback_eval import simulate

    client = IndexClient(index)
    relevant = {f"A-image-{i}" for i in range(20)}
    [p0, p1] = simulate(client, [("q", "between A and B", relevant)], rounds=1, method="linear", k=10)
    assert p0 < 1.0 and p1 == 1.0  # the first search mixes A and B; after one round only A is left
    endpoint, params = client.calls[-1]
    assert endpoint == "/refine" and len(params["positive"]) + len(params["negative"]) == 10
    assert set(params["positive"]) <= relevant and not set(params["negative"]) & relevant


def test_unknown_ids_are_named_but_never_echoed_whole(index):
    from crossmodal.api.validate import RequestError

    long_id = "x" * 100_000
    with pytest.raises(RequestError) as err:
        refine(index, QUERY, parse_refine_params({"positive": [long_id]}))
    assert "unknown id(s)" in str(err.value) and len(str(err.value)) < 300


def test_people_who_want_more_than_they_typed_want_exactly_one_attribute_more(tmp_path):
    """`-t eval --feedback`'s third kind of person: the query's attributes plus one."""
    from crossmodal.train.datagen import sample_specs
    from crossmodal.train.describe import ATTRIBUTES, parse_caption, short_queries
    from crossmodal.train.feedback_eval import narrowed_queries

    specs = sample_specs(400, seed=5, n_distinct=20)
    rows = [(tmp_path / f"img_{i}.png", s.caption()) for i, s in enumerate(specs)]
    scenes = {p.name: parse_caption(c) for p, c in rows}
    queries = narrowed_queries(rows, tmp_path, 60, 7, depth=15)
    assert queries and queries == narrowed_queries(rows, tmp_path, 60, 7, depth=15)  # reproducible
    described = {d.text: d for d in short_queries(sorted(set(specs), key=str), 60, 7)}
    for _, text, relevant in queries:
        named = described[text].attributes
        assert len(relevant) >= 15
        matching = {name for name, s in scenes.items() if described[text].matches(s)}
        assert relevant < matching  # strictly narrower than what was typed ...
        one_more = [{n for n in matching if getattr(scenes[n], a) == value}
                    for a in ATTRIBUTES if a not in named for value in {getattr(scenes[n], a) for n in relevant}]
        assert relevant in one_more, text  # ... by one value of one attribute the query did not name
