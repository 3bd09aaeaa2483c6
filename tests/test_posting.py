"""Clients cut requests by bytes as well as by count, since the gateway refuses any gRPC
message above ``max_body_bytes``; files they cannot send fail alone, before sending."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from crossmodal.api.schemas import ContentDoc
from crossmodal.inputs.images import ImageLimits
from crossmodal.inputs.loaders import Source, read_docs, unsendable
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


def test_unsendable_names_missing_empty_oversized_and_irregular_files_only(tmp_path):
    small, large, empty, fifo = (tmp_path / n for n in ("small.png", "large.jpg", "empty.png", "pipe.png"))
    small.write_bytes(b"x" * 10)
    large.write_bytes(b"x" * 11)
    empty.write_bytes(b"")
    os.mkfifo(fifo)  # reading it would block forever
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    sources = [Source("t", "me", "text", text="hi"), *(Source(p.stem, "me", "image", path=p) for p in
               (small, large, empty, fifo, tmp_path / "dangling.png", tmp_path))]
    found = {source.id: reason for source, reason in unsendable(sources, ImageLimits(max_bytes=10))}
    assert found == {"large": "file: 11 bytes exceeds max_bytes=10", "empty": f"file: {empty} is empty",
                     "pipe": f"file: {fifo} is not a regular file",
                     "dangling": f"file: {tmp_path / 'dangling.png'}: No such file or directory",
                     tmp_path.stem: f"file: {tmp_path} is not a regular file"}


def test_a_file_that_fails_to_read_is_reported_and_its_siblings_still_come(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(b"x")
    sources = [Source("odd", "me", "image", path=tmp_path), Source("good", "me", "image", path=good)]
    failed = []
    docs = list(read_docs(sources, lambda source, reason: failed.append((source.id, reason))))
    assert [d.id for d in docs] == ["good"] and docs[0].blob == b"x"
    assert failed == [("odd", f"file: {tmp_path}: Is a directory")]


def noise_png(pixels: int, seed: int) -> bytes:
    side = int(pixels ** 0.5)
    array = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def test_index_sends_a_folder_larger_than_one_message_and_reports_unsendable_files(tmp_path):
    """Four 10 MB photos in one 32-document request were over the gateway's message limit;
    a caption row naming a FIFO hung the run, and an unreadable file ended it with a traceback."""
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(4):
        (data / f"noise{i}.png").write_bytes(noise_png(LIMITS.max_body_bytes // 9, seed=i))
    assert sum(p.stat().st_size for p in data.iterdir()) > LIMITS.max_body_bytes
    with (data / "big.jpg").open("wb") as f:  # never read: its size alone refuses it
        f.truncate(LIMITS.max_image_bytes + 1)
    os.mkfifo(data / "pipe.png")
    (data / "dangling.png").symlink_to(data / "nowhere.png")
    for i in range(20):
        (data / f"empty{i:02d}.png").write_bytes(b"")
    (data / "captions.csv").write_text("image,caption\nghost.png,a photo that is not there\npipe.png,a pipe\n")
    run = run_app("-t", "index", "--data", str(data), "--workspace", str(tmp_path / "ws"),
                  "--model", TINY_MODEL, "--pretrained", "none", timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    # indexed: the four photos and both captions; failed: big, ghost, pipe, dangling, 20 empty files
    assert "indexed 6, updated 0, failed 24" in run.stdout, run.stdout[-2000:]
    lines = run.stderr.splitlines()
    assert f"  failed big.jpg: file: {LIMITS.max_image_bytes + 1} bytes exceeds max_bytes=20971520" in lines
    assert f"  failed ghost.png: file: {data / 'ghost.png'}: No such file or directory" in lines
    assert f"  failed pipe.png: file: {data / 'pipe.png'} is not a regular file" in lines
    assert f"  failed dangling.png: file: {data / 'dangling.png'}: No such file or directory" in lines
    assert lines[-1] == "  ... and 4 more failed"


def test_index_of_a_folder_with_nothing_to_index_says_so(tmp_path):
    (tmp_path / "notes.md").write_text("no images here")
    run = run_app("-t", "index", "--data", str(tmp_path), "--workspace", str(tmp_path / "ws"),
                  "--model", TINY_MODEL, "--pretrained", "none", timeout=120)
    assert run.returncode == 1 and f"nothing to index in {tmp_path}" in run.stderr, run.stderr[-2000:]
