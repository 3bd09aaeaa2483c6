"""Shared fixtures: a tiny seeded CLIP, free loopback ports, quiet Jina."""
import os
from pathlib import Path

import numpy as np
import pytest

from crossmodal.service import free_port  # noqa: F401  (re-exported for the tests)

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_HIDE_SURVEY", "1")
os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download weights, even where the hub is reachable

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = "tiny-clip"  # models/tiny-clip.json, random weights seeded by the loader


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def png_bytes(color=(200, 30, 30), size=(48, 40), shape: str = "rect") -> bytes:
    """A small distinct picture: a coloured shape on white."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    box = (size[0] // 5, size[1] // 5, size[0] * 4 // 5, size[1] * 4 // 5)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
