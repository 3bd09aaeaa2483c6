"""Retrieval quality of a model measured through the real service.

The data is indexed by a Flow started in a throw-away workspace and queried
through it, so the numbers include everything a user gets: preprocessing,
encoders, the FAISS index and result assembly. Two relevance notions:

* ``caption``: generated data; an image and a text are relevant iff their caption
  strings are equal (many images share a caption);
* ``pair``: Flickr-style data; an image is relevant only to its own captions.

Generated data is also scored on short queries ("red circle", "two stars"):
descriptions of its scenes drawn with their own seed (``describe.short_queries``),
relevant to every image whose scene has each attribute the query names.
"""
from __future__ import annotations

import itertools
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from crossmodal.inputs.captions import read_captions
from crossmodal.settings import EVAL
from crossmodal.train.metrics import summarize

RELEVANCE = ("caption", "pair")
EVAL_OWNER = "eval"


def _post(client, endpoint: str, docs: Iterable, total: int, batch_size: int, parameters: Optional[dict] = None):
    """Stream ``docs`` in requests of ``batch_size`` (images are read lazily) and fail on any error."""
    from crossmodal.serve.posting import post_all

    result = []
    with tqdm(total=total, desc=endpoint.strip("/"), unit="doc") as bar:
        def done(response) -> None:
            result.extend(response.docs)
            bar.update(len(response.docs))

        post_all(client, endpoint, docs, done, max_docs=batch_size, parameters=parameters)
    failed = [d for d in result if d.status == "error"]
    if failed:
        raise RuntimeError(f"{endpoint}: {len(failed)} document(s) failed, e.g. {failed[0].id}: {failed[0].error}")
    return result


def index_ground_truth(client, truth: GroundTruth, batch_size: int) -> None:
    """Index every image and caption of the ground truth through the Flow."""
    from crossmodal.api.schemas import ContentDoc

    docs = itertools.chain(
        (ContentDoc(id=i, owner=EVAL_OWNER, modality="image", blob=p.read_bytes()) for i, p in truth.images.items()),
        (ContentDoc(id=i, owner=EVAL_OWNER, modality="text", text=t) for i, t in truth.texts.items()))
    _post(client, "/index", docs, len(truth.images) + len(truth.texts), batch_size)


def _search(client, queries: Iterable, total: int, modality: str, k: int, batch_size: int) -> dict[str, list[str]]:
    """Ranked result ids by query id."""
    found = _post(client, "/search", queries, total, batch_size, {"k": k, "modalities": [modality]})
    return {d.id: [m.id for m in getattr(d, f"{modality}_matches")] for d in found}


def _judge(ranked: dict[str, list[str]], relevant: dict[str, set[str]]) -> tuple[list[np.ndarray], list[int]]:
    missing = set(relevant) - set(ranked)
    if missing:
        raise RuntimeError(f"search: no answer for {len(missing)} quer(y/ies), e.g. {sorted(missing)[0]}")
    return ([np.array([r in relevant[q] for r in ranked[q]], dtype=float) for q in relevant],
            [len(rel) for rel in relevant.values()])


def _table(result: dict, ks: Sequence[int]) -> str:
    cols = [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks] + ["mAP"]
    labels = [c if c != "mAP" else f"mAP@{max(ks)}" for c in cols]
    lines = [f"{'direction':<15}{'queries':>8}" + "".join(f"{c:>8}" for c in labels)]
    for direction in ("text_to_image", "image_to_text"):
        row = result[direction]
        lines.append(f"{direction:<15}{row['queries']:>8}" + "".join(f"{row[c]:>8.3f}" for c in cols))
    return "\n".join(lines)


class GroundTruth:
    """Documents to index, queries to send, and which results are relevant to each query."""

    def __init__(self, rows: list[tuple[Path, str]], images_dir: Path, relevance: str):
        if relevance not in RELEVANCE:
            raise ValueError(f"relevance: must be one of {RELEVANCE}, got {relevance!r}")
        self.images = {p.relative_to(images_dir).as_posix(): p for p, _ in rows}
        self.texts: dict[str, str] = {}
        text_key, image_keys, n = {}, defaultdict(set), defaultdict(int)
        for path, caption in rows:
            image = path.relative_to(images_dir).as_posix()
            text_id = f"{image}#caption{n[image]}"
            n[image] += 1
            self.texts[text_id] = caption
            text_key[text_id] = caption if relevance == "caption" else image
            image_keys[image].add(text_key[text_id])
        texts_with, images_with = defaultdict(set), defaultdict(set)
        for text_id, key in text_key.items():
            texts_with[key].add(text_id)
        for image, keys in image_keys.items():
            for key in keys:
                images_with[key].add(image)
        if relevance == "caption":  # one query per distinct caption
            captions = sorted(set(self.texts.values()))
            self.text_queries = [(f"q{i}", c, images_with[c]) for i, c in enumerate(captions)]
        else:
            self.text_queries = [(t, c, images_with[text_key[t]]) for t, c in self.texts.items()]
        self.image_relevant = {i: set().union(*(texts_with[key] for key in image_keys[i])) for i in self.images}


def short_query_truth(rows: list[tuple[Path, str]], images_dir: Path, relevance: str, depth: int, n: int,
                 seed: int) -> Optional[ShortQueryTruth]:
    """None where the captions are not the generator's (Flickr): their scenes are unknown."""
    from crossmodal.train.describe import parse_caption

    if relevance != "caption" or n < 1:
        return None
    try:
        for _, caption in rows:
            parse_caption(caption)
    except ValueError:
        return None
    truth = ShortQueryTruth(rows, images_dir, n, seed, depth)
    return truth if truth.text_queries else None


class ShortQueryTruth:
    """Short descriptions of the scenes of generated captions, with attribute relevance.

    Queries with fewer relevant images than the ranking depth are dropped, so that
    P@k can reach 1; the caller reports how many were kept.
    """

    def __init__(self, rows: list[tuple[Path, str]], images_dir: Path, n: int, seed: int, depth: int):
        from crossmodal.train.describe import parse_caption, short_queries

        scenes = {p.relative_to(images_dir).as_posix(): parse_caption(c) for p, c in rows}
        self.images = {p.relative_to(images_dir).as_posix(): p for p, _ in rows}
        relevant = [(d, {i for i, s in scenes.items() if d.matches(s)})
                    for d in short_queries(sorted(set(scenes.values()), key=str), n, seed)]
        kept = [(d, rel) for d, rel in relevant if len(rel) >= depth]
        self.texts = {f"short{i}": d.text for i, (d, _) in enumerate(kept)}
        self.text_queries = [(f"short{i}", d.text, rel) for i, (d, rel) in enumerate(kept)]
        self.image_relevant = {i: {q for q, _, rel in self.text_queries if i in rel} for i in self.images}
        self.image_relevant = {i: rel for i, rel in self.image_relevant.items() if rel}


def _run(truth, cfg, spec, k: int, batch_size: int) -> tuple[dict, dict]:
    """Index the truth's images and texts in a fresh Flow and query it both ways."""
    from crossmodal.api.schemas import ContentDoc
    from crossmodal.serve.flow import running_flow

    with running_flow(cfg, spec) as client:
        index_ground_truth(client, truth, batch_size)
        t2i = _search(client, (ContentDoc(id=q, text=t) for q, t, _ in truth.text_queries),
                      len(truth.text_queries), "image", k, batch_size)
        i2t = _search(client, (ContentDoc(id=i, blob=truth.images[i].read_bytes()) for i in truth.image_relevant),
                      len(truth.image_relevant), "text", k, batch_size)
    return t2i, i2t


def _scores(truth, t2i: dict, i2t: dict, ks: Sequence[int]) -> dict:
    return {"text_to_image": summarize(*_judge(t2i, {q: rel for q, _, rel in truth.text_queries}), ks=ks),
            "image_to_text": summarize(*_judge(i2t, truth.image_relevant), ks=ks)}


def evaluate(captions_csv: Path, images_dir: Path, model: Optional[str], pretrained: Optional[str],
             ks: Sequence[int] = (1, 5, 10), out_json: Optional[Path] = None, relevance: str = "caption",
             batch_size: int = 64, device: str = "auto", short_queries: int = EVAL.short_queries,
             short_seed: int = EVAL.short_query_seed) -> dict:
    """Index the captioned images and their captions, query both ways through the Flow, score.

    Text->image queries are the distinct captions (``caption``) or every caption
    row (``pair``); image->text queries are the images. Generated data (``caption``
    relevance, captions in the generator's grammar) is also scored on
    ``short_queries`` short descriptions drawn with ``short_seed``, in a second Flow. Rankings are cut at
    ``max(ks)``, so mAP is over that depth. Returns the metrics dict (also
    written to ``out_json`` when given).
    """
    from crossmodal.model.resolve import resolve
    from crossmodal.serve.flow import free_port
    from crossmodal.settings import ServiceConfig

    start = time.time()
    rows = read_captions(Path(captions_csv), Path(images_dir))
    truth = GroundTruth(rows, Path(images_dir), relevance)
    spec = resolve(model, pretrained)
    k = max(ks)

    def scored(truth) -> dict:
        with tempfile.TemporaryDirectory(prefix="crossmodal-eval-") as workspace:
            cfg = ServiceConfig(workspace=Path(workspace), model=model, pretrained=pretrained, bulk=True,
                                grpc_port=free_port(), http_port=free_port(), device=device,
                                calibrate=False, request_log=False)
            return _scores(truth, *_run(truth, cfg, spec, k, batch_size), ks)

    result = {
        "model": spec.label, "relevance": relevance, "images": len(truth.images), "texts": len(truth.texts),
        "depth": k,  # rankings are cut here: R@k and mAP count deeper relevant items as misses
        **scored(truth),
    }
    short = short_query_truth(rows, Path(images_dir), relevance, k, short_queries, short_seed)
    if short is not None:
        result["short_queries"] = {"seed": short_seed, "texts": len(short.texts), **scored(short)}
    result["seconds"] = round(time.time() - start, 1)
    print("full captions\n" + _table(result, ks))
    if "short_queries" in result:
        print(f"short queries ({result['short_queries']['texts']}, seed {short_seed})\n"
              + _table(result["short_queries"], ks))
    print(f"evaluated {spec.label} on {len(truth.images)} images / {len(truth.texts)} captions "
          f"({relevance} relevance) in {result['seconds']}s")
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=2) + "\n")
    return result
