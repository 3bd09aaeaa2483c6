"""Clients cut requests by bytes as well as by count, since the gateway refuses any gRPC
message above ``max_body_bytes``; files they cannot send fail alone, before sending."""
import io
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from crossmodal.api.schemas import ContentDoc
from crossmodal.inputs.images import IMAGE_SUFFIXES, ImageLimits
from crossmodal.inputs.loaders import Source, discover, read_docs
from crossmodal.serve.posting import request_batches
from crossmodal.settings import LIMITS
from tests.harness import ROOT, TINY_MODEL, app_env, run_app


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


def test_unsendable_files_fail_alone_with_their_reason_and_unread(tmp_path):
    small, large, empty, fifo = (tmp_path / n for n in ("small.png", "large.jpg", "empty.png", "pipe.png"))
    small.write_bytes(b"x" * 10)
    large.write_bytes(b"x" * 11)
    empty.write_bytes(b"")
    os.mkfifo(fifo)  # reading it would block forever
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    sources = [Source("t", "me", "text", text="hi"), *(Source(p.stem, "me", "image", path=p) for p in
               (small, large, empty, fifo, tmp_path / "dangling.png", tmp_path))]
    failed = {}
    docs = list(read_docs(sources, lambda source, reason: failed.update({source.id: reason}), ImageLimits(max_bytes=10)))
    assert [(d.id, d.blob) for d in docs] == [("t", None), ("small", b"x" * 10)]
    assert failed == {"large": f"file: {large}: 11 bytes exceeds max_image_bytes=10",
                      "empty": f"file: {empty} is empty", "pipe": f"file: {fifo} is not a regular file",
                      "dangling": f"file: {tmp_path / 'dangling.png'}: No such file or directory",
                      tmp_path.stem: f"file: {tmp_path} is not a regular file"}


def test_a_file_is_checked_as_it_is_read_not_as_it_was_listed(tmp_path):
    """A file replaced by a FIFO after the folder was listed hung the run; one that grew past
    the limit overflowed a request."""
    grows, swapped = tmp_path / "grows.png", tmp_path / "swapped.png"
    grows.write_bytes(b"x")
    swapped.write_bytes(b"x")
    sources = [Source("grows", "me", "image", path=grows), Source("swapped", "me", "image", path=swapped)]
    grows.write_bytes(b"x" * 11)
    swapped.unlink()
    os.mkfifo(swapped)
    failed = {}
    assert not list(read_docs(sources, lambda source, reason: failed.update({source.id: reason}),
                              ImageLimits(max_bytes=10)))
    assert failed == {"grows": f"file: {grows}: 11 bytes exceeds max_image_bytes=10",
                      "swapped": f"file: {swapped} is not a regular file"}


def test_a_folder_keeps_going_past_a_table_it_cannot_read(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"x")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    (tmp_path / "bad.csv").write_text("image,caption\nphoto.png,\n")  # a row without caption
    (tmp_path / "bom.csv").write_bytes("\ufeffimage,caption\nphoto.png,a red circle\n".encode())
    (tmp_path / "long.csv").write_text("text\n" + "x" * 200_000 + "\n")  # over csv's 128 kB field limit
    failed = {}
    sources = discover(tmp_path, "me", failed=lambda name, reason: failed.update({name: reason}))
    assert {s.id: (s.modality, s.tags) for s in sources if s.modality == "image"} == {
        "photo.png": ("image", {"caption": "a red circle"})}  # the BOM'd header was read as a header
    assert any(s.id == "long.csv:2" and len(s.text) == 200_000 for s in sources)
    assert set(failed) == {"latin1.txt", "bad.csv"}
    assert "utf-8" in failed["latin1.txt"] and "'caption' are required" in failed["bad.csv"]
    with pytest.raises(ValueError, match="'caption' are required"):
        discover(tmp_path / "bad.csv", "me")  # the table itself: its error is the answer
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(ValueError, match="neither a folder nor a regular file"):
        discover(tmp_path / "fifo.csv", "me")
    os.mkfifo(tmp_path / "notes.txt")  # in the folder: reported, not skipped silently, never read
    (tmp_path / "tables.csv").mkdir()  # a folder named like a table is no table
    failed.clear()
    assert {s.id for s in discover(tmp_path, "me", failed=lambda name, reason: failed.update({name: reason}))} == {
        s.id for s in sources}
    assert failed["notes.txt"] == f"file: {tmp_path / 'notes.txt'} is not a regular file"
    assert failed["fifo.csv"] == f"file: {tmp_path / 'fifo.csv'} is not a regular file"
    assert set(failed) == {"latin1.txt", "bad.csv", "notes.txt", "fifo.csv"}


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
    assert f"  failed big.jpg: file: {data / 'big.jpg'}: {LIMITS.max_image_bytes + 1} bytes exceeds max_image_bytes=" \
           f"{LIMITS.max_image_bytes}" in lines
    assert f"  failed ghost.png: file: {data / 'ghost.png'}: No such file or directory" in lines
    assert f"  failed pipe.png: file: {data / 'pipe.png'} is not a regular file" in lines
    assert f"  failed dangling.png: file: {data / 'dangling.png'}: No such file or directory" in lines
    assert lines[-1] == "  ... and 4 more failed"


def test_index_of_a_folder_with_nothing_to_index_says_so(tmp_path):
    (tmp_path / "notes.md").write_text("no images here")
    run = run_app("-t", "index", "--data", str(tmp_path), "--workspace", str(tmp_path / "ws"),
                  "--model", TINY_MODEL, "--pretrained", "none", timeout=120)
    assert run.returncode == 1 and f"nothing to index in {tmp_path}" in run.stderr, run.stderr[-2000:]
    os.mkfifo(tmp_path / "notes.txt")  # a text file that cannot be read: listed first, the verdict last
    run = run_app("-t", "index", "--data", str(tmp_path), "--workspace", str(tmp_path / "ws"),
                  "--model", TINY_MODEL, "--pretrained", "none", timeout=120)
    assert run.returncode == 1 and run.stderr.splitlines()[-2:] == [
        f"  failed notes.txt: file: {tmp_path / 'notes.txt'} is not a regular file",
        f"error: nothing to index in {tmp_path}: no readable images ({', '.join(IMAGE_SUFFIXES)}), "
        "caption table or text file"], run.stderr[-2000:]


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_index_keeps_what_was_acknowledged_and_says_so(tmp_path, presses):
    """Ctrl-C reaches the whole process group, the Flow's processes included: the run ends with
    its summary marked interrupted (exit 130), no traceback, and every document it counted is
    stored: a second run updates those (and any of the 4 requests in flight that the indexer
    stored before the stop) and indexes the rest. A second Ctrl-C while the Flow stops ended
    the run without its summary."""
    data, workspace = tmp_path / "texts", tmp_path / "ws"
    data.mkdir()
    (data / "notes.txt").write_text("".join(f"note number {i} about circles\n" for i in range(400)))
    args = [sys.executable, str(ROOT / "app.py"), "-t", "index", "--data", str(data), "--workspace", str(workspace),
            "--model", TINY_MODEL, "--pretrained", "none", "--batch-size", "1"]
    run = subprocess.Popen(args, cwd=ROOT, env=app_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           start_new_session=True)
    progress = b""
    try:
        while not re.search(rb"\b([2-9]\d|\d{3})/400\b", progress):  # 20+ documents acknowledged
            chunk = run.stderr.read1(4096)
            assert chunk, f"index ended before it could be interrupted: {progress[-2000:]!r}"
            progress += chunk
        for press in range(presses):
            time.sleep(0.05 * press)
            os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    err = (progress + err).decode()
    assert run.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "never retrieved" not in err, err[-3000:]
    counted = re.search(r"interrupted: indexed (\d+), updated 0, failed 0 in .*; (\d+) of 400 not confirmed",
                        out.decode())
    assert counted, out.decode()[-2000:]
    stored = int(counted.group(1))
    assert 20 <= stored < 400 and int(counted.group(2)) == 400 - stored
    again = run_app(*args[2:], timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = re.search(r"indexed (\d+), updated (\d+), failed 0", again.stdout)
    assert rerun and int(rerun.group(1)) + int(rerun.group(2)) == 400, again.stdout[-2000:]
    assert stored <= int(rerun.group(2)) <= stored + 4, (stored, again.stdout[-2000:])
