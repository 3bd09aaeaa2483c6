"""Text encoder precision: speed for a short query, and how far int8 moves the embeddings.

Speed: open_clip's ``encode_text`` (full 77-token context) vs our fp32 path (exact:
truncated context, in/out weight layout) vs our opt-in int8 path, interleaved.
Quality, against our fp32 embeddings of the same texts: cosine per text, and
recall@10 of text-to-text search when both the corpus and the queries are encoded
in int8 (what a service started with ``--precision int8`` stores and searches).
"""
import itertools

import numpy as np
import torch

from bench.common import Figure, Report, figure
from bench.encoders import MODEL, SHORT_QUERY, _interleaved
from crossmodal.model.encode import encode_texts
from crossmodal.model.resolve import resolve
from crossmodal.model.towers import create_model, load_text_tower


def captions(n: int) -> list[str]:
    """Short captions in the demo data's grammar, varied enough to make neighbours meaningful."""
    from crossmodal.train.datagen import BACKGROUNDS, COLOURS, COUNTS, SHAPES, SIZES

    combos = itertools.product(COUNTS, SIZES, COLOURS, SHAPES, BACKGROUNDS)
    texts = [f"{c} {s} {col} {shape}s on a {bg} background" for c, s, col, shape, bg in combos]
    extra = [f"a photo of {t} number {i}" for i, t in enumerate(texts)]
    return (texts + extra)[:n]


def recall_at_10(reference: np.ndarray, candidate: np.ndarray, queries: int) -> float:
    """Share of each query's fp32 top-10 that the candidate's top-10 also finds (self excluded)."""
    def top(x: np.ndarray) -> np.ndarray:
        scores = x[:queries] @ x.T
        np.fill_diagonal(scores[:, :queries], -np.inf)
        return np.argsort(-scores, axis=1)[:, :10]

    ref, cand = top(reference), top(candidate)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref, cand)]))


def run(report: Report, quick: bool) -> None:
    spec = resolve(MODEL, "none")
    fp32, int8 = load_text_tower(spec, "cpu"), load_text_tower(spec, "cpu", precision="int8")
    reference, _ = create_model(spec, torch.device("cpu"), seed=0)
    tokens = fp32.transform([SHORT_QUERY])

    def full():
        with torch.inference_mode():
            reference.encode_text(tokens)

    samples = _interleaved({"full": full, "fp32": lambda: encode_texts(fp32, [SHORT_QUERY]),
                            "int8": lambda: encode_texts(int8, [SHORT_QUERY])}, 10 if quick else 30)
    base = report.add(figure("open_clip encode_text, full 77-token context (precision bench)", samples["full"], "ms",
                             scale=1000))
    for name in ("fp32", "int8"):
        fig = report.add(figure(f"our text encoder, short query, {name}", samples[name], "ms", scale=1000))
        speedup = base.median / fig.median
        report.add(Figure(f"text encode speed-up for a short query, {name}", speedup, "x",
                          target=">= 3x" + (" (exact)" if name == "fp32" else " (opt-in)"), ratio=speedup,
                          passed=speedup >= 3))
    texts = captions(300 if quick else 900)
    exact, approx = encode_texts(fp32, texts), encode_texts(int8, texts)
    cosine = np.sum(exact * approx, axis=1)
    report.add(Figure("int8 vs fp32 embedding cosine, worst text", float(cosine.min()), "",
                      note=f"median {np.median(cosine):.5f} over {len(texts)} captions; fp32 target 0.9999"))
    recall = recall_at_10(exact, approx, 100)
    report.add(Figure("int8 recall@10 vs fp32 (text to text, corpus and queries int8)", recall, "",
                      note=f"{len(texts)} captions, 100 queries"))
