"""Turn untrusted image input into RGB pictures, safely.

A request may carry raw bytes, a ``data:`` URI or, only when the server was
started with data roots, a local path under one of them. Sizes are checked
before anything is decoded, so one huge input cannot exhaust memory.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageOps, UnidentifiedImageError

from crossmodal.settings import LIMITS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")


class ImageInputError(ValueError):
    """An image input that cannot be used; the message names the field."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = LIMITS.max_image_bytes
    max_pixels: int = LIMITS.max_image_pixels
    data_roots: tuple[str, ...] = ()  # folders whose files requests may name by local path


def data_roots(value) -> tuple[str, ...]:
    """``--data-root`` folders as an executor receives them: a list, or one string joined
    with ``os.pathsep`` (the Flow YAML passes them through one environment variable)."""
    items = value.split(os.pathsep) if isinstance(value, str) else list(value or ())
    return tuple(item for item in items if item)


def _from_data_uri(uri: str, limits: ImageLimits) -> bytes:
    header, _, payload = uri.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ImageInputError(f"uri: expected 'data:image/<type>;base64,...', got {header[:40]!r}")
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise ImageInputError(f"uri: image of ~{len(payload) * 3 // 4} bytes exceeds max_bytes={limits.max_bytes}")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageInputError(f"uri: invalid base64 payload ({err})") from None


def _from_path(uri: str, limits: ImageLimits) -> bytes:
    path = os.path.realpath(uri[len("file://"):] if uri.startswith("file://") else uri)
    roots = [os.path.realpath(root) for root in limits.data_roots]
    if not any(os.path.commonpath([path, root]) == root for root in roots):
        raise ImageInputError(
            f"uri: {uri!r} is not readable: local paths are only served from the server's data "
            "roots (start it with --data-root); send the bytes (blob) or a data: URI instead"
        )
    if not path.lower().endswith(IMAGE_SUFFIXES) or not os.path.isfile(path):
        raise ImageInputError(f"uri: {uri!r} is not an image file under the data roots")
    if os.path.getsize(path) > limits.max_bytes:
        raise ImageInputError(f"uri: {uri!r} exceeds max_bytes={limits.max_bytes}")
    return Path(path).read_bytes()


def image_bytes(blob: Optional[bytes], uri: Optional[str], limits: ImageLimits) -> bytes:
    """The encoded image a document carries, from ``blob`` or ``uri``."""
    if blob:
        if len(blob) > limits.max_bytes:
            raise ImageInputError(f"blob: {len(blob)} bytes exceeds max_bytes={limits.max_bytes}")
        return bytes(blob)
    if not uri:
        raise ImageInputError("blob/uri: an image needs raw bytes (blob) or a uri")
    if uri.startswith("data:"):
        return _from_data_uri(uri, limits)
    if "://" in uri and not uri.startswith("file://"):
        raise ImageInputError(f"uri: remote URIs are not fetched ({uri[:60]!r}); send a blob or a data: URI")
    return _from_path(uri, limits)


def decode(data: bytes, limits: ImageLimits, field: str = "blob", min_size: Optional[int] = None) -> Image.Image:
    """Decode to RGB with EXIF orientation applied; the first frame of animations.

    ``min_size``: JPEGs are decoded at the smallest 1/2, 1/4 or 1/8 scale whose sides
    stay at least this large (libjpeg's DCT scaling): a 12 MP photo that the model
    sees at 224 px then decodes many times faster.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageInputError(
                    f"{field}: {width}x{height} pixels exceeds max_pixels={limits.max_pixels}"
                )
            image.seek(0)
            if min_size and image.format == "JPEG":
                image.draft("RGB", (min_size, min_size))
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageInputError(f"{field}: decompression bomb rejected ({err})") from None
    except UnidentifiedImageError:  # PIL's message names an in-memory object's address: nothing to a client
        raise ImageInputError(f"{field}: not a decodable image (no image format recognised)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageInputError(f"{field}: not a decodable image ({err})") from None


def thumbnail_data_uri(image: Image.Image, size: int = 256, quality: int = 80) -> str:
    """A small JPEG the UI can show without the server ever serving files.

    ``reducing_gap=1``: an image at least twice the thumbnail's size is first averaged down by
    a whole factor (a box filter), then resized bicubically; PIL's default (2) resized a 640x480
    photo whole, 4.9 ms instead of 2.5 ms on the critical path of a one-image post.
    """
    thumb = image.copy()
    thumb.thumbnail((size, size), reducing_gap=1.0)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under ``folder`` (recursively), in a stable order."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in suffixes and p.is_file())
