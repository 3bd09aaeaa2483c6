"""The text tower's tokenizer: open_clip's tokens, one copy of the BPE per process, a bounded cache."""
import itertools

import open_clip
import pytest

from crossmodal.model import tokens
from crossmodal.model.resolve import register_local_configs, resolve
from crossmodal.model.tokens import Tokenizer
from tests.harness import TINY_MODEL

TEXTS = ["a red circle", "Two small BLUE squares, on a white background!", "x", "the " * 90, "<end_of_text> tail"]


@pytest.mark.parametrize("model", ["ViT-B-32", "demo-clip", TINY_MODEL])
def test_tokens_are_open_clips_at_the_models_context_length(model):
    ours = Tokenizer(resolve(model, "none"))
    register_local_configs()  # open_clip learns the project's configs (demo-clip: 12 tokens)
    theirs = open_clip.get_tokenizer(model)
    assert ours.context_length == theirs.context_length
    assert ours(TEXTS).tolist() == theirs(TEXTS).tolist()
    assert ours.tokenizer is open_clip.tokenizer._tokenizer  # the copy open_clip.tokenize uses, not a new one


def test_the_word_cache_is_bounded_and_special_tokens_survive_a_reset(monkeypatch):
    monkeypatch.setattr(tokens, "MAX_CACHED_WORDS", 50)
    tokenizer = Tokenizer(resolve(TINY_MODEL, "none"))
    expected = open_clip.get_tokenizer(TINY_MODEL)(TEXTS).tolist()
    words = ["".join(letters) for letters in itertools.product("bcdfghjklm", repeat=4)]  # made up, all distinct
    for start in range(0, 200, 10):
        tokenizer([" ".join(words[start:start + 10])])
        assert len(tokenizer.tokenizer.cache) <= 50 + 10
    assert tokenizer(TEXTS).tolist() == expected  # "<end_of_text>" in a text still maps to its token
    assert {"<start_of_text>", "<end_of_text>"} <= set(tokenizer.tokenizer.cache)
