"""Keep torch and open_clip out of the processes that run no model.

DocArray tries ``import torch`` when it is imported (to support torch tensors), so
with torch installed every Jina process would carry the whole torch runtime:
about 300 MB of private memory in the gateway, the indexer and the recommender,
which never run a model. The launcher blocks those imports before importing Jina;
Jina forks every process of the Flow from it, so they all inherit the block, and
only the encoder lifts it (``allow_model_libraries``) before loading the towers.
Nothing else changes: DocArray then types embeddings as NumPy arrays, which is
what the service sends anyway.
"""
from __future__ import annotations

import importlib.abc
import sys
import types
from typing import Iterable

MODEL_LIBRARIES = ("torch", "torchvision", "open_clip", "open_clip_train", "tensorflow", "jax")


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, names: Iterable[str], why: str):
        self.names, self.why = frozenset(names), why

    def find_spec(self, name, path=None, target=None):
        if name.split(".", 1)[0] in self.names:
            raise ModuleNotFoundError(f"{name} is not loaded in this process: {self.why} (crossmodal.model.guard)",
                                      name=name)
        return None


def block_model_libraries() -> None:
    """From now on, importing a model library fails in this process and the ones it forks."""
    if any(name.split(".", 1)[0] in MODEL_LIBRARIES for name in sys.modules):
        return  # too late to save anything: the libraries are loaded already
    if not blocked():
        sys.meta_path.insert(0, _Blocker(MODEL_LIBRARIES, "it runs no model"))


def allow_model_libraries(unused: Iterable[str] = ()) -> None:
    """Lift the block, in the process that loads a model; the ``unused`` libraries (optional
    ones of open_clip that this model does not need) are blocked from now on instead."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _Blocker)]
    if unused:
        sys.meta_path.insert(0, _Blocker(unused, "this model does not use it"))


def blocked(name: str = "torch") -> bool:
    """Whether importing ``name`` is blocked in this process."""
    return any(isinstance(finder, _Blocker) and name.split(".", 1)[0] in finder.names for finder in sys.meta_path)


def import_torchvision_without_compiler() -> None:
    """Import torchvision (open_clip's transforms need it) without torch.compile's front end.

    torchvision's ``roi_align`` imports ``torch._dynamo.utils.is_compile_supported`` when it
    is imported, which loads dynamo and sympy: ~70 MB of PSS and ~2 s of start-up in an encoder
    whose towers run eagerly. While torchvision imports, that one name comes from a stand-in
    whose function imports the real one on its first call, so code that does compile loses
    nothing; once torchvision is in, ``torch._dynamo`` imports as usual.
    """
    name = "torch._dynamo.utils"
    if "torchvision" in sys.modules or "torch._dynamo" in sys.modules:
        return

    def is_compile_supported(device_type):
        from torch._dynamo.utils import is_compile_supported as real

        return real(device_type)

    stand_in = types.ModuleType(name)
    stand_in.is_compile_supported = is_compile_supported
    sys.modules[name] = stand_in
    try:
        import torchvision  # noqa: F401
    finally:
        del sys.modules[name]
    if "torch._dynamo" in sys.modules:  # this torchvision imports dynamo itself: it saw the stand-in
        raise ImportError(f"torchvision imported torch._dynamo while {name} stood in for it "
                          "(crossmodal.model.guard); this torchvision needs a plain import")
