"""Clients cut requests by bytes as well as by count, since the gateway refuses any gRPC
message above ``max_body_bytes``; files they cannot send fail alone, before sending."""
import io

import numpy as np
import pytest
from PIL import Image

from crossmodal.api.schemas import ContentDoc
from crossmodal.inputs.images import ImageLimits
from crossmodal.inputs.loaders import Source, unsendable
from crossmodal.serve.posting import request_batches
from crossmodal.settings import LIMITS
from tests.harness import TINY_MODEL, run_app


def doc(i: int, blob_bytes: int = 0, text: str = "") -> ContentDoc:
    return ContentDoc(id=f"d{i}", blob=b"x" * blob_bytes or None, text=text or None)


def test_batches_are_bounded_by_count_and_by_bytes_in_order():
    docs = [doc(i, blob_bytes=40) for i in range(10)]
    assert [[d.id for d in b] for b in request_batches(docs, max_docs=4, max_bytes=10_000)] == [
        ["d0", "d1", "d2", "d3"], ["d4", "d5", "d6", "d7"], ["d8", "d9"]]
    by_bytes = list(request_batches(docs, max_docs=32, max_bytes=100))
    assert [len(b) for b in by_bytes] == [2, 2, 2, 2, 2]
    assert [d.id for b in by_bytes for d in b] == [d.id for d in docs]


def test_text_counts_in_utf8_bytes_and_an_oversized_document_travels_alone():
    docs = [doc(0, text="é" * 30), doc(1, text="é" * 30), doc(2, blob_bytes=500), doc(3, text="ok")]
    assert [[d.id for d in b] for b in request_batches(docs, max_docs=32, max_bytes=100)] == [
        ["d0"], ["d1"], ["d2"], ["d3"]]  # 60 bytes each: two would be 120
    with pytest.raises(ValueError, match="max_docs"):
        list(request_batches(docs, max_docs=0))


def test_unsendable_names_missing_and_oversized_files_only(tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.jpg"
    small.write_bytes(b"x" * 10)
    large.write_bytes(b"x" * 11)
    sources = [Source("t", "me", "text", text="hi"), Source("small", "me", "image", path=small),
               Source("large", "me", "image", path=large), Source("gone", "me", "image", path=tmp_path / "gone.png")]
    found = {source.id: reason for source, reason in unsendable(sources, ImageLimits(max_bytes=10))}
    assert found == {"large": "blob: 11 bytes exceeds max_bytes=10",
                     "gone": f"path: {tmp_path / 'gone.png'}: No such file or directory"}


def noise_png(pixels: int, seed: int) -> bytes:
    side = int(pixels ** 0.5)
    array = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def test_index_sends_a_folder_larger_than_one_message_and_reports_unsendable_files(tmp_path):
    """Four 10 MB photos in one 32-document request were over the gateway's message limit."""
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(4):
        (data / f"noise{i}.png").write_bytes(noise_png(LIMITS.max_body_bytes // 9, seed=i))
    assert sum(p.stat().st_size for p in data.iterdir()) > LIMITS.max_body_bytes
    with (data / "huge.jpg").open("wb") as f:  # never read: its size alone refuses it
        f.truncate(LIMITS.max_image_bytes + 1)
    (data / "captions.csv").write_text("image,caption\nghost.png,a photo that is not there\n")
    run = run_app("-t", "index", "--data", str(data), "--workspace", str(tmp_path / "ws"),
                  "--model", TINY_MODEL, "--pretrained", "none")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "indexed 5, updated 0, failed 2" in run.stdout, run.stdout[-2000:]
    assert f"failed huge.jpg: blob: {LIMITS.max_image_bytes + 1} bytes exceeds max_bytes=" in run.stderr
    assert "failed ghost.png: path: " in run.stderr and "No such file or directory" in run.stderr
