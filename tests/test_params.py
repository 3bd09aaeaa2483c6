import re

import pytest

from crossmodal.api.params import parse_search_params
from crossmodal.api.schemas import ContentDoc
from crossmodal.api.validate import content_error, query_error
from crossmodal.settings import Limits


def test_defaults_and_float_integers():
    params = parse_search_params({"__results__": {}})
    assert (params.k, params.username, params.modalities) == (10, None, ("text", "image"))
    assert parse_search_params({"k": 5.0, "modalities": "image"}).k == 5
    assert parse_search_params({"modalities": ["image"]}).modalities == ("image",)


@pytest.mark.parametrize("params, name", [
    ({"k": 0}, "'k'"), ({"k": -1}, "'k'"), ({"k": "ten"}, "'k'"), ({"k": 2.5}, "'k'"),
    ({"k": 1001}, "'k'"), ({"k": True}, "'k'"), ({"modalities": ["audio"]}, "'modalities'"),
    ({"username": 3}, "'username'"), ({"with_thumbnails": "yes"}, "'with_thumbnails'"),
])
def test_bad_parameters_name_the_parameter(params, name):
    with pytest.raises(ValueError, match=name):
        parse_search_params(params)


@pytest.mark.parametrize("sent, shown", [(0.0, "got 0"), (1001.0, "got 1001"), (-3.0, "got -3"), (1e26, "got 1e+26")])
def test_a_refused_number_reads_as_sent(sent, shown):
    """Jina carries parameters as protobuf floats: k=0 read "got 0.0"."""
    with pytest.raises(ValueError, match=re.escape(f"parameter 'k' must be in 1..1000, {shown}") + "$"):
        parse_search_params({"k": sent})


@pytest.mark.parametrize("doc, field", [
    (ContentDoc(id="", owner="a", modality="text", text="x"), "id"),
    (ContentDoc(id="1", owner=None, modality="text", text="x"), "owner"),
    (ContentDoc(id="1", owner="a", modality="video", text="x"), "modality"),
    (ContentDoc(id="1", owner="a", modality="text", text="  "), "text"),
    (ContentDoc(id="1", owner="a", modality="text", text="x" * 20), "text"),
    (ContentDoc(id="1", owner="a", modality="image"), "blob/uri"),
])
def test_content_errors_name_the_field(doc, field):
    error = content_error(doc, Limits(max_text_chars=10))
    assert error and error.startswith(field + ":")


def test_valid_content_and_queries_pass():
    limits = Limits()
    assert content_error(ContentDoc(id="1", owner="a", modality="text", text="hi", tags={"a": 1}), limits) is None
    assert content_error(ContentDoc(id="1", owner="a", modality="image", blob=b"x"), limits) is None
    assert query_error(ContentDoc(text="red"), limits) is None
    assert query_error(ContentDoc(), limits).startswith("text/uri/blob")
