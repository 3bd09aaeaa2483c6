"""Relevance feedback simulated through the running Flow (``app.py -t eval --feedback ROUNDS``).

A simulated person searches, then each round marks the top ``k`` results it has not
marked yet against the ground truth (relevant -> ``positive``, else ``negative``) and
asks ``/refine``. Marked items never come back, so each round's P@k is over results the
person has not seen: what a round adds, not what it repeats.

Two kinds of person: one who wants what they typed (relevant = every attribute the query
names), and one who wants more than they typed ("circles", but red ones: one attribute
more, taken from a scene the query matches). The second is what feedback is for once the
model understands the query itself.
"""
from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from crossmodal.inputs.captions import read_captions
from crossmodal.settings import EVAL
from crossmodal.train.evaluate import GroundTruth, index_ground_truth, short_query_truth
from crossmodal.train.metrics import precision_at_k

METHODS = ("rocchio", "linear")
Query = tuple[str, str, set]  # (query id, text, relevant image ids)


def _ranked(client, endpoint: str, query_id: str, text: str, parameters: dict) -> list[str]:
    from docarray import DocList

    from crossmodal.api.schemas import ContentDoc

    [doc] = client.post(endpoint, DocList[ContentDoc]([ContentDoc(id=query_id, text=text)]),
                        parameters=parameters, return_type=DocList[ContentDoc])
    if doc.status == "error":
        raise RuntimeError(f"{endpoint}: query {query_id!r} failed: {doc.error}")
    return [m.id for m in doc.image_matches]


def simulate(client, queries: Sequence[Query], rounds: int, method: str, k: int = 10) -> list[float]:
    """Mean P@k of text->image results per round (round 0 is the plain search)."""
    per_round: list[list[float]] = [[] for _ in range(rounds + 1)]
    base = {"k": k, "modalities": ["image"]}
    for query_id, text, relevant in tqdm(queries, desc=f"feedback {method}", unit="query"):
        ranked = _ranked(client, "/search", query_id, text, base)
        per_round[0].append(precision_at_k(np.array([r in relevant for r in ranked], float), k))
        positive, negative = [], []
        for r in range(1, rounds + 1):
            for item in ranked[:k]:
                (positive if item in relevant else negative).append(item)
            ranked = _ranked(client, "/refine", query_id, text,
                             {**base, "method": method, "positive": positive, "negative": negative})
            per_round[r].append(precision_at_k(np.array([x in relevant for x in ranked], float), k))
    return [float(np.mean(p)) for p in per_round]


def narrowed_queries(rows: list[tuple[Path, str]], images_dir: Path, n: int, seed: int, depth: int) -> list[Query]:
    """Short queries whose person wants one attribute more than the query names, with at
    least ``depth`` relevant images each (generated captions only)."""
    from crossmodal.train.describe import ATTRIBUTES, parse_caption, short_queries

    scenes = {p.relative_to(images_dir).as_posix(): parse_caption(c) for p, c in rows}
    rng = random.Random(f"narrowed-{seed}")
    queries = []
    for i, described in enumerate(short_queries(sorted(set(scenes.values()), key=str), n, seed)):
        matching = [s for s in scenes.values() if described.matches(s)]
        # only attributes that split what the query matches: the person wants strictly more
        free = [a for a in ATTRIBUTES if a not in described.attributes and len({getattr(s, a) for s in matching}) > 1]
        if not free:
            continue
        extra = rng.choice(free)
        wanted = {**described.attributes, extra: getattr(rng.choice(matching), extra)}
        relevant = {name for name, s in scenes.items() if all(getattr(s, a) == v for a, v in wanted.items())}
        if len(relevant) >= depth:
            queries.append((f"narrowed{i}", described.text, relevant))
    return queries


def feedback_table(results: dict[str, dict[str, list[float]]]) -> str:
    rounds = len(next(iter(next(iter(results.values())).values())))
    lines = [f"{'queries':<14}{'method':<10}" + "".join(f"{f'P@10 r{r}':>10}" for r in range(rounds))]
    for query_set, by_method in results.items():
        for method, values in by_method.items():
            lines.append(f"{query_set:<14}{method:<10}" + "".join(f"{v:>10.3f}" for v in values))
    return "\n".join(lines)


def evaluate_feedback(captions_csv: Path, images_dir: Path, model: Optional[str], pretrained: Optional[str],
                      rounds: int, query_sets: Optional[dict[str, Sequence[Query]]] = None, batch_size: int = 64,
                      device: str = "auto") -> dict:
    """Index the captioned images, then simulate ``rounds`` of feedback per query set and method.

    ``query_sets`` defaults to the distinct full captions and short queries drawn from the
    held-out scenes (``EVAL.short_query_seed``). Only queries with enough relevant images for
    every round to be perfect (10 per round, plus the first search) are kept.
    """
    from crossmodal.model.resolve import resolve
    from crossmodal.serve.flow import free_port, running_flow
    from crossmodal.settings import ServiceConfig

    if rounds < 1:
        raise ValueError(f"--feedback: rounds must be >= 1, got {rounds}")
    start = time.time()
    rows = read_captions(Path(captions_csv), Path(images_dir))
    truth = GroundTruth(rows, Path(images_dir), "caption")
    depth = 10 * (rounds + 1)
    if query_sets is None:
        query_sets = {"full captions": [q for q in truth.text_queries if len(q[2]) >= depth]}
        short = short_query_truth(rows, Path(images_dir), "caption", depth, EVAL.short_queries, EVAL.short_query_seed)
        if short is not None:  # generated captions: their scenes, hence short queries, are known
            query_sets["short queries"] = short.text_queries
            query_sets["wants more"] = narrowed_queries(rows, Path(images_dir), EVAL.short_queries,
                                                        EVAL.short_query_seed, depth)
    spec = resolve(model, pretrained)
    with tempfile.TemporaryDirectory(prefix="crossmodal-feedback-") as workspace:
        cfg = ServiceConfig(workspace=Path(workspace), model=model, pretrained=pretrained, bulk=True,
                            grpc_port=free_port(), http_port=free_port(), device=device,
                            calibrate=False, request_log=False)
        with running_flow(cfg, spec) as client:
            index_ground_truth(client, truth, batch_size)
            results = {name: {m: simulate(client, queries, rounds, m) for m in METHODS}
                       for name, queries in query_sets.items()}
    print(feedback_table(results))
    print(f"simulated {rounds} feedback round(s) for {sum(map(len, query_sets.values()))} queries "
          f"over {len(truth.images)} images with {spec.label} in {time.time() - start:.0f}s")
    return {"model": spec.label, "rounds": rounds, "p_at_10": results}
