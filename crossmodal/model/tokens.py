"""The text tower's tokenizer: open_clip's own, one copy per process, with a bounded word cache.

``open_clip.get_tokenizer`` builds a new ``SimpleTokenizer`` at every call, beside the one
open_clip's module already holds for ``open_clip.tokenize``: a second copy of CLIP's BPE
tables, ~24 MB of PSS in the encoder. For a model on CLIP's own BPE (no HF tokenizer, no
tokenizer options), the module's copy serves at the model's context length.

The BPE keeps every word it has seen in a dict that nothing empties: a client posting
10,000-character texts of made-up words grew it by ~0.2 MB a request, without bound.
"""
from __future__ import annotations

from typing import Iterable, Optional

import open_clip
import torch

from crossmodal.model.resolve import ModelSpec, model_config

MAX_CACHED_WORDS = 50_000  # ~10 MB; real vocabularies stay far below, so the cache rarely resets


def _plain_bpe_context(spec: ModelSpec) -> Optional[int]:
    """The context length, where ``get_tokenizer`` would build CLIP's plain SimpleTokenizer for
    ``spec`` (a known config without HF tokenizer or tokenizer options, not SigLIP); else None."""
    config = model_config(spec.name)
    text = (config or {}).get("text_cfg") or {}
    if config is None or text.get("hf_tokenizer_name") or text.get("tokenizer_kwargs") or "siglip" in spec.name.lower():
        return None
    return int(text.get("context_length", open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH))


class Tokenizer:
    """Texts to a (n, context_length) LongTensor, as open_clip's tokenizer for ``spec`` makes them."""

    def __init__(self, spec: ModelSpec):
        self.context_length = _plain_bpe_context(spec)
        if self.context_length is not None:
            self.tokenizer = open_clip.tokenizer._tokenizer  # the copy behind open_clip.tokenize
        else:
            self.tokenizer = open_clip.get_tokenizer(spec.name)
            self.context_length = self.tokenizer.context_length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, context_length=self.context_length)
        self._bound_cache()
        return tokens

    @property
    def vocabulary(self) -> Iterable[str]:
        """CLIP's BPE vocabulary (words end in ``</w>``)."""
        return self.tokenizer.encoder

    def _bound_cache(self) -> None:
        """Forget the words once there are too many; special tokens (cached as themselves) stay."""
        cache = getattr(self.tokenizer, "cache", None)
        if isinstance(cache, dict) and len(cache) > MAX_CACHED_WORDS:
            special = {word: bpe for word, bpe in cache.items() if word == bpe}
            cache.clear()
            cache.update(special)
