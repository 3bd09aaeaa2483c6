import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from crossmodal.inputs.images import ImageInputError, ImageLimits, decode, image_bytes, thumbnail_data_uri
from tests.harness import data_uri, png_bytes


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions: decoding it naively would allocate gigabytes."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_data_uri_and_blob_decode_to_rgb():
    limits = ImageLimits()
    blob = png_bytes()
    assert image_bytes(None, data_uri(blob), limits) == blob
    image = decode(blob, limits)
    assert image.mode == "RGB" and image.size == (48, 40)


@pytest.mark.parametrize("uri, field", [
    ("data:text/plain;base64,aGVsbG8=", "uri"),
    ("data:image/png;base64,!!!notbase64", "uri"),
    ("http://example.com/cat.jpg", "uri"),
    ("/etc/passwd", "uri"),
    ("file:///etc/hostname", "uri"),
])
def test_unsafe_or_malformed_uris_are_rejected(uri, field):
    with pytest.raises(ImageInputError, match=f"^{field}:"):
        image_bytes(None, uri, ImageLimits())


def test_local_paths_only_under_data_roots(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.png").write_bytes(png_bytes())
    (tmp_path / "secret.png").write_bytes(png_bytes())
    limits = ImageLimits(data_roots=(str(root),))
    assert image_bytes(None, str(root / "a.png"), limits) == png_bytes()
    with pytest.raises(ImageInputError, match="data roots"):
        image_bytes(None, str(root / ".." / "secret.png"), limits)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(ImageInputError, match="data roots"):
        image_bytes(None, str(root / "link.png"), limits)


def test_size_limits_apply_before_decoding():
    with pytest.raises(ImageInputError, match="max_bytes"):
        image_bytes(b"x" * 101, None, ImageLimits(max_bytes=100))
    with pytest.raises(ImageInputError, match="7000x7000 pixels exceeds max_pixels"):
        decode(_png_header_only(7000, 7000), ImageLimits(max_pixels=40_000_000))
    with pytest.raises(ImageInputError, match="decompression bomb"):
        decode(_png_header_only(100_000, 100_000), ImageLimits(max_pixels=10**12))


def test_undecodable_bytes_name_the_field():
    with pytest.raises(ImageInputError, match="^blob: not a decodable image") as err:
        decode(b"definitely not an image", ImageLimits())
    assert " at 0x" not in str(err.value), "a client gets no in-memory object's address"


def test_exif_orientation_applied_and_gif_first_frame():
    image = Image.new("RGB", (60, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    assert decode(out.getvalue(), ImageLimits()).size == (20, 60)
    frames = [Image.new("RGB", (10, 10), c) for c in ("blue", "yellow")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    r, g, b = decode(gif.getvalue(), ImageLimits()).getpixel((5, 5))
    assert b > 200 and r < 50


def test_thumbnail_is_a_small_jpeg():
    uri = thumbnail_data_uri(Image.new("RGB", (1000, 500), "green"), size=256)
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.partition(",")[2])))
    assert uri.startswith("data:image/jpeg;base64,") and max(thumb.size) == 256


@pytest.mark.parametrize("size", [(640, 480), (1001, 500), (300, 200), (256, 256), (5000, 40), (40, 3000)])
def test_thumbnail_reduced_first_keeps_the_size_and_looks_the_same(size):
    """The box-filter shortcut for large images: the thumbnail PIL makes from the whole image, within JPEG noise."""
    y, x = np.mgrid[0:size[1], 0:size[0]]
    pixels = np.stack([np.sin(x / 37.0), np.cos(y / 23.0), np.sin((x + y) / 51.0)], -1)
    image = Image.fromarray(((pixels + 1) * 127).astype(np.uint8))
    direct = image.copy()
    direct.thumbnail((256, 256))
    uri = thumbnail_data_uri(image, size=256, quality=95)
    ours = Image.open(io.BytesIO(base64.b64decode(uri.partition(",")[2]))).convert("RGB")
    assert ours.size == direct.size
    if min(direct.size) >= 16:  # a sliver of 2 pixels is all JPEG noise
        assert np.abs(np.asarray(ours, np.float32) - np.asarray(direct, np.float32)).mean() < 2.0


def test_large_jpeg_decodes_at_reduced_scale_but_never_below_min_size():
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1600), (200, 40, 40)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    assert decode(data, ImageLimits()).size == (2000, 1600)
    assert decode(data, ImageLimits(), min_size=256).size == (500, 400)  # 1/4: 1/8 would be under 256
    small = png_bytes(size=(600, 500))
    assert decode(small, ImageLimits(), min_size=64).size == (600, 500)  # PNG: no DCT scaling


def test_data_roots_arrive_as_the_flow_joins_them(tmp_path):
    """Several --data-root folders travel to the encoder as one os.pathsep-joined variable;
    each must count on its own (they were taken as one path that named no folder)."""
    import os

    from crossmodal.inputs.images import data_roots, image_bytes

    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        (folder / "x.png").write_bytes(b"png bytes")
    roots = data_roots(os.pathsep.join([str(first), str(second)]))
    assert roots == (str(first), str(second)) and data_roots("") == () and data_roots([str(first)]) == (str(first),)
    assert image_bytes(None, str(second / "x.png"), ImageLimits(data_roots=roots)) == b"png bytes"
