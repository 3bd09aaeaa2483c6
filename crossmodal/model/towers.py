"""Load the towers of an open_clip model: both for the service's encoder, one alone for tools that need one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import open_clip
import torch

from crossmodal.model.memory import bound_kernel_caches, fix_mmap_threshold, release_freed_memory
from crossmodal.model.resolve import ModelSpec, ModelUnavailable, embed_dim, register_local_configs
from crossmodal.model.tokens import Tokenizer
from crossmodal.settings import ENCODER


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Tower:
    """One loaded tower: the module, its input transform and the model's identity."""

    module: torch.nn.Module
    transform: Callable  # image preprocess or text tokenizer
    spec: ModelSpec
    device: torch.device
    dim: int


def create_model(spec: ModelSpec, device: torch.device, seed: int = 0):
    """The whole open_clip model and its evaluation transform, as ``spec`` says."""
    register_local_configs()
    fix_mmap_threshold()
    bound_kernel_caches(ENCODER.kernel_cache)
    torch.manual_seed(seed)  # random-init models (tests, benchmarks) are reproducible
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.name, pretrained=spec.checkpoint, device=device, force_quick_gelu=spec.quick_gelu,
            **{k: v for k, v in spec.preprocess.items() if v is not None},
        )
    except (RuntimeError, FileNotFoundError, KeyError) as err:
        raise ModelUnavailable(f"cannot load {spec.label} from {spec.checkpoint}: {err}") from err
    return model.eval(), preprocess


def _image_tower(model, preprocess, spec: ModelSpec, device: torch.device, layout: str = "packed") -> Tower:
    from crossmodal.model.cpu_layout import relayout_image_tower

    visual = relayout_image_tower(model.visual, layout) if device.type == "cpu" else model.visual
    return Tower(visual, preprocess, spec, device, embed_dim(spec))


def _text_tower(model, spec: ModelSpec, device: torch.device, precision: str) -> Tower:
    """``model`` without ``visual``: only the text tower stays, at ``precision``."""
    from crossmodal.model.precision import apply_text_precision

    if hasattr(model, "visual"):
        del model.visual
    apply_text_precision(model, precision, device)
    return Tower(model, Tokenizer(spec), spec, device, embed_dim(spec))


def load_image_tower(spec: ModelSpec, device: str = "auto", seed: int = 0) -> Tower:
    """Load the model and keep only ``visual``: the text transformer is dropped."""
    dev = pick_device(device)
    tower = _image_tower(*create_model(spec, dev, seed), spec, dev)
    release_freed_memory()
    return tower


def load_text_tower(spec: ModelSpec, device: str = "auto", seed: int = 0, precision: str = "fp32") -> Tower:
    """Load the model and drop ``visual``: only the text tower stays in memory."""
    from crossmodal.model.precision import check_precision

    check_precision(precision)
    dev = pick_device(device)
    tower = _text_tower(create_model(spec, dev, seed)[0], spec, dev, precision)
    release_freed_memory()
    return tower


def load_towers(spec: ModelSpec, device: str = "auto", seed: int = 0, precision: str = "fp32",
                image_layout: str = "packed") -> tuple[Tower, Tower]:
    """(text, image) towers from one load of the model: one checkpoint read, one copy of each
    tower. ``image_layout``: see ``cpu_layout.fast_linear`` (CPU only)."""
    from crossmodal.model.cpu_layout import check_layout
    from crossmodal.model.precision import check_precision

    check_precision(precision)
    check_layout(image_layout)
    dev = pick_device(device)
    model, preprocess = create_model(spec, dev, seed)
    image = _image_tower(model, preprocess, spec, dev, image_layout)
    text = _text_tower(model, spec, dev, precision)
    release_freed_memory()
    return text, image
