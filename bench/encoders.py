"""Encoder ceiling: matmul rate, plain open_clip vs our executors and text truncation."""
import io

import numpy as np
import torch
from docarray import DocList
from PIL import Image

from bench.common import Figure, Report, figure, repeat
from crossmodal import clip_model
from crossmodal.encode import encode_texts
from crossmodal.schemas import ContentDoc

MODEL = "ViT-B-32"  # real architecture; random weights (pretrained ones cannot be had here)
SHORT_QUERY = "two small red circles on a grey background"


def matmul_gflops(report: Report, n: int = 2048, repeats: int = 5) -> Figure:
    a, b = torch.randn(n, n), torch.randn(n, n)
    samples = repeat(lambda: a @ b, repeats)
    return report.add(figure("float32 matmul", [2 * n**3 / s / 1e9 for s in samples], "GFLOP/s"))


def sample_images(count: int, size: int = 256, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def plain_open_clip_images(report: Report, images: list[bytes], batch_sizes=(8, 16, 32), repeats=3
                           ) -> tuple[Figure, int]:
    """open_clip's own encode_image on preprocessed tensors, at its best batch size."""
    import open_clip

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL)
    model.eval()
    pixels = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
    best, best_batch = None, 0
    for batch in batch_sizes:
        with torch.inference_mode():
            samples = repeat(lambda: model.encode_image(pixels[:batch]), repeats)
        rate = figure(f"open_clip encode_image, best batch ({batch})", [batch / s for s in samples], "img/s")
        if best is None or rate.median > best.median:
            best, best_batch = rate, batch
    return report.add(best), best_batch


def our_image_executor(report: Report, images: list[bytes], batch: int, repeats=3) -> Figure:
    """The ClipImageEncoder executor called directly: decode + thumbnail + preprocess + encode."""
    from executors.clip_image.executor import ClipImageEncoder

    encoder = ClipImageEncoder(model=MODEL, pretrained="none", batch_size=batch)

    def run():
        docs = DocList[ContentDoc]([ContentDoc(id=str(i), owner="b", modality="image", blob=b)
                                    for i, b in enumerate(images[:batch])])
        encoder.index(docs)

    samples = repeat(run, repeats)
    encoder.close()
    return report.add(figure(f"our image executor (batch {batch}, decode+encode)", [batch / s for s in samples], "img/s"))


def text_latency(report: Report, repeats: int = 20) -> tuple[Figure, Figure]:
    tower = clip_model.load_text_tower(clip_model.resolve(MODEL, "none"))
    tokens = tower.transform([SHORT_QUERY])
    with torch.inference_mode():
        full = figure("open_clip encode_text, full 77-token context", repeat(
            lambda: tower.module.encode_text(tokens), repeats), "ms", scale=1000)
    ours = figure("our text encoder, short query (truncated context)", repeat(
        lambda: encode_texts(tower, [SHORT_QUERY]), repeats), "ms", scale=1000)
    report.add(full)
    report.add(ours)
    speedup = full.median / ours.median
    report.add(Figure("text encode speed-up for a short query", speedup, "x", target=">= 3x",
                      ratio=speedup, passed=speedup >= 3))
    return full, ours


def run(report: Report, quick: bool) -> dict:
    images = sample_images(32 if quick else 64)
    matmul_gflops(report)
    plain, batch = plain_open_clip_images(report, images, (8, 16) if quick else (8, 16, 32, 64))
    ours = our_image_executor(report, images, batch)
    report.ratio("image executor / plain open_clip", ours, plain, ">= 0.95", 0.95,
                 note="ours includes decoding and thumbnails; plain encodes preprocessed tensors")
    _, text = text_latency(report, 10 if quick else 30)
    return {"plain_img_per_s": plain.median, "text_encode_ms": text.median}
