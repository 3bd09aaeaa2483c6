"""Resolve what ``--model/--pretrained`` name into a local open_clip config and checkpoint.

Model configs are read as JSON (open_clip's own folder, ``models/``, or a given file)
without importing open_clip: the launcher and the indexer learn the model's label and
embedding width without loading torch (see ``guard``). Only a pretrained tag needs
open_clip's table of weights; a process that blocks it looks the tag up in a child.

Resolution never waits on an unreachable hub: a pretrained tag is looked up in the
local caches first, downloaded only when the hub answers, and otherwise the
caller gets an error that says exactly what to do. When the user named no model
and the default weights cannot be had, the service falls back to the small demo
model trained by this project (``models/demo-clip``) and says so loudly.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

from crossmodal.model.guard import blocked
from crossmodal.settings import MODELS_DIR, ROOT

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
DEMO_MODEL = "demo-clip"
RANDOM_INIT = ("none", "random")
HUB_HOST = "huggingface.co"


class ModelUnavailable(RuntimeError):
    """The requested model or its weights cannot be loaded here."""


@dataclass(frozen=True)
class ModelSpec:
    """A fully resolved model: an open_clip config name plus a local checkpoint file."""

    name: str
    pretrained: str  # as given: a tag, a checkpoint path, or "none"; resolve(name, pretrained) is this spec
    checkpoint: Optional[str]  # None: seeded random initialisation (tests, benchmarks)
    label: str  # what the workspace records, e.g. "ViT-B-32/openai"
    fallback: bool = False
    preprocess: dict = field(default_factory=dict)  # image_mean/std/interpolation/resize_mode
    quick_gelu: bool = False


_EXTRA_CONFIGS: dict[str, Path] = {}  # config files named by path with --model


@lru_cache(maxsize=1)
def _packaged_configs() -> dict[str, Path]:
    """open_clip's shipped configs, found from its install record, not by importing it."""
    folder = Path(importlib.metadata.distribution("open_clip_torch").locate_file("open_clip/model_configs"))
    return {p.stem: p for p in folder.glob("*.json")}


def _configs() -> dict[str, Path]:
    local = {p.stem: p for p in MODELS_DIR.glob("*.json")} if MODELS_DIR.is_dir() else {}
    return {**_packaged_configs(), **local, **_EXTRA_CONFIGS}


def model_config(name: str) -> Optional[dict]:
    path = _configs().get(name)
    return json.loads(path.read_text()) if path else None


# open_clip imports these when installed; only configs naming one of these keys use them
OPTIONAL_LIBRARIES = {"timm": ("timm_model_name",), "transformers": ("hf_model_name", "hf_tokenizer_name")}
# torch.compile's GPU kernel compiler: importing open_clip loads it (torchvision.ops ->
# torch._dynamo asks whether it is installed: ~75 MB PSS), though an encoder runs its towers
# eagerly, never compiled. On the CPU, torch treats it as absent, as in its CPU wheels, which
# have none; not on a GPU, whose lazy CUDA start looks it up (torch.cuda: find_spec("triton")).
EAGER_UNUSED = ("triton",)


def unused_libraries(spec: ModelSpec, device: str = "auto") -> tuple[str, ...]:
    """Libraries that an encoder process of ``spec`` on ``device`` can keep out although
    open_clip or torch would import them: open_clip's optional ones its config does not name
    (timm alone adds ~60 MB PSS; none is known unused for an unknown config), and, on the
    CPU, torch.compile's ``EAGER_UNUSED``."""
    config = model_config(spec.name)
    named = {key for part in ("vision_cfg", "text_cfg") for key, value in ((config or {}).get(part) or {}).items()
             if value}
    optional = tuple(lib for lib, keys in OPTIONAL_LIBRARIES.items() if config and named.isdisjoint(keys))
    return optional + (EAGER_UNUSED if _on_cpu(device) else ())


def _on_cpu(device: str) -> bool:
    """Whether towers asked for on ``device`` run on the CPU (for "auto", imports torch)."""
    if device != "auto":
        return device == "cpu"
    import torch

    return not torch.cuda.is_available()


def register_local_configs() -> None:
    """Make every ``models/<name>.json`` (and configs named by path) usable as an open_clip model name."""
    import open_clip

    if MODELS_DIR.is_dir():
        open_clip.add_model_config(MODELS_DIR)
    for path in _EXTRA_CONFIGS.values():
        open_clip.add_model_config(path)


def config_name(model: str) -> str:
    """Accept a model name or a path to an open_clip config JSON (its stem is the name)."""
    if model.endswith(".json"):
        path = Path(model)
        if not path.is_file():
            raise ModelUnavailable(f"--model: config file {model!r} does not exist")
        _EXTRA_CONFIGS[path.stem] = path.resolve()
        if "open_clip" in sys.modules:
            sys.modules["open_clip"].add_model_config(path)
        return path.stem
    if model not in _configs():
        raise ModelUnavailable(
            f"--model: unknown model {model!r}; choose one of open_clip.list_models() "
            f"or a config in {MODELS_DIR}"
        )
    return model


def _hub_reachable(timeout: float = 2.0) -> bool:
    """False when offline or told to be (Hugging Face's own ``HF_HUB_OFFLINE=1`` switch)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        socket.getaddrinfo(HUB_HOST, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)


def _cached_file(cfg: dict, cache_dir: Optional[str]) -> Optional[str]:
    """The checkpoint of a pretrained tag if it is already on this machine."""
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return cfg["file"]
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" names no file
        for name in ([filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    if cfg.get("url"):
        path = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(cfg["url"])
        if path.is_file():
            return str(path)
    return None


def _tag_checkpoint(name: str, tag: str, cache_dir: Optional[str]) -> tuple[str, dict]:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        raise ModelUnavailable(
            f"--pretrained: {tag!r} is neither a file nor a known tag of {name}; "
            f"known tags: {open_clip.list_pretrained_tags_by_model(name)}"
        )
    found = _cached_file(cfg, cache_dir)
    if found is None and _hub_reachable():
        found = open_clip.download_pretrained(cfg, cache_dir=cache_dir) or None
    if found is None:
        where = cfg.get("hf_hub") or cfg.get("url")
        raise ModelUnavailable(
            f"pretrained weights {name}/{tag} are not on this machine and cannot be downloaded "
            f"(no network). Download them where there is network ({where}) and either copy the "
            f"Hugging Face cache (~/.cache/huggingface) here or pass --pretrained /path/to/checkpoint"
        )
    return found, cfg


def resolve(model: Optional[str] = None, pretrained: Optional[str] = None,
            cache_dir: Optional[str] = None) -> ModelSpec:
    """Turn the user's ``--model/--pretrained`` into a loadable spec.

    Naming nothing means ViT-B-32/openai, or the demo model when those weights are
    unavailable; naming a model explicitly never falls back.
    """
    if model is None and pretrained is None:
        try:
            return resolve(DEFAULT_MODEL, DEFAULT_PRETRAINED, cache_dir)
        except ModelUnavailable as err:
            demo = resolve(DEMO_MODEL, str(MODELS_DIR / f"{DEMO_MODEL}.pt"))
            log.warning(
                "\n%s\nWARNING: %s\nUsing the small offline demo model %r instead: it only knows "
                "the generated shapes data. Pass --model/--pretrained with real CLIP weights for "
                "real photos.\n%s", "!" * 78, err, DEMO_MODEL, "!" * 78,
            )
            return ModelSpec(**{**demo.__dict__, "fallback": True})
    name = config_name(model or DEFAULT_MODEL)
    if pretrained is None:
        local = MODELS_DIR / f"{name}.pt"
        if not local.is_file():
            raise ModelUnavailable(
                f"--pretrained is required for {name}: a tag (open_clip.list_pretrained_tags_by_model({name!r})), "
                "a checkpoint path, or 'none' for random weights"
            )
        pretrained = str(local)
    if pretrained.lower() in RANDOM_INIT:
        return ModelSpec(name, pretrained, None, f"{name}/random")
    if os.path.isfile(pretrained):
        return ModelSpec(name, pretrained, pretrained, f"{name}/{Path(pretrained).name}@{fingerprint(pretrained)}")
    if blocked():
        return _resolve_tag_in_child(name, pretrained, cache_dir)
    checkpoint, cfg = _tag_checkpoint(name, pretrained, cache_dir)
    preprocess = {
        "image_mean": cfg.get("mean"), "image_std": cfg.get("std"),
        "image_interpolation": cfg.get("interpolation"), "image_resize_mode": cfg.get("resize_mode"),
    }
    return ModelSpec(name, pretrained, checkpoint, f"{name}/{pretrained}", preprocess=preprocess,
                     quick_gelu=bool(cfg.get("quick_gelu")))


def fingerprint(path: str) -> str:
    """A short digest of a checkpoint's bytes, part of the label a workspace records.

    A checkpoint retrained under the same file name (the demo model was, twice) gives
    embeddings that must not be mixed with the old ones; with the digest in the label,
    a workspace built with the old weights refuses the new ones instead of answering
    nonsense. blake2b reads about 1 GB/s here: 20 ms for the demo model, under a
    second for ViT-B-32; the result is cached per file version in this process.
    """
    stat = os.stat(path)
    return _fingerprint(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.blake2b(digest_size=4)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _resolve_tag_in_child(name: str, tag: str, cache_dir: Optional[str]) -> ModelSpec:
    """A pretrained tag from a process that must not load open_clip: ask a short-lived child."""
    model = str(_EXTRA_CONFIGS.get(name, name))
    done = subprocess.run([sys.executable, "-m", "crossmodal.model.resolve", model, tag, cache_dir or ""],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise ModelUnavailable(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else
                               f"resolving {name}/{tag} failed with exit code {done.returncode}")
    return ModelSpec(**json.loads(done.stdout.strip().splitlines()[-1]))


def embed_dim(spec: ModelSpec) -> int:
    """Embedding width from the config alone, so the indexer never loads weights."""
    return int(model_config(spec.name)["embed_dim"])


if __name__ == "__main__":  # python -m crossmodal.model.resolve MODEL TAG [CACHE_DIR]: prints the spec as JSON
    try:
        print(json.dumps(resolve(sys.argv[1], sys.argv[2], (sys.argv[3:] or [""])[0] or None).__dict__))
    except ModelUnavailable as err:
        sys.exit(str(err).replace("\n", " "))
