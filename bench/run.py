"""Run every benchmark, print a table, write bench/results.json.

    python -m bench [--quick] [--only flow,encoders,vectors,serving,precision,contention,shards]
    python bench/run.py [--quick]
"""
import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import common  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"


def table(figures: list[common.Figure]) -> str:
    lines = ["| figure | median | p25–p75 | target | result |", "|---|---|---|---|---|"]
    for f in figures:
        spread = "" if f.spread[0] != f.spread[0] else f"{f.spread[0]:.4g}–{f.spread[1]:.4g}"
        result = "" if f.passed is None else ("PASS" if f.passed else "FAIL")
        note = f" ({f.note})" if f.note else ""
        lines.append(f"| {f.name}{note} | {f.median:.4g} {f.unit} | {spread} | {f.target} | {result} |")
    return "\n".join(lines)


def relate(report: common.Report, flow: dict, encoders: dict) -> None:
    """Targets that compare the Flow with the encoders measured in the same run."""
    report.ratio("app.py -t index / plain open_clip encode", flow["index_rate"], encoders["plain"], ">= 0.85", 0.85,
                 note="ours decodes, preprocesses, encodes and stores JPEG files")
    overhead = flow["grpc"].median - encoders["text"].median - flow["search"].median
    report.add(common.Figure("Flow overhead over gRPC (e2e - encoder - search)", overhead, "ms", target="<= 20 ms",
                             ratio=overhead, passed=overhead <= 20,
                             note=f"no-op topology p50 {flow['noop'].median:.1f} ms"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes on 2 cores")
    parser.add_argument("--only", default="flow,encoders,vectors,serving,precision,contention,shards")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the figures (default {RESULTS})")
    parser.add_argument("--threads", type=int, help="torch/OpenMP threads for this process and every server it "
                        "starts (default: torch's own, one per core); 1 keeps a shared, oversubscribed machine usable")
    args = parser.parse_args(argv)
    if args.threads:
        import os

        import torch

        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the Flows and the baseline
        torch.set_num_threads(args.threads)
    wanted = args.only.split(",")
    report, started = common.Report(), time.time()
    print("ViT-B-32 with random weights (pretrained ones cannot be downloaded here): "
          "the architecture, hence the cost, is the real one.")
    # The Flow first: its processes then start beside a bench process that has not yet
    # run torch and FAISS itself (measured here: ~8% lower indexing rate otherwise).
    flow_figures, encoder_figures = {}, {}
    if "flow" in wanted:
        from bench import flow
        flow_figures = flow.run(report, args.quick)
    if "encoders" in wanted or flow_figures:
        from bench import encoders
        encoder_figures = encoders.run(report, args.quick)
    if flow_figures:
        relate(report, flow_figures, encoder_figures)
    if "precision" in wanted:
        from bench import precision
        precision.run(report, args.quick)
    if "serving" in wanted:
        from bench import serving
        serving.run(report, args.quick)
    if "vectors" in wanted:
        from bench import vectors
        vectors.run(report, args.quick)
    if "contention" in wanted:
        from bench import contention
        contention.run(report, args.quick)
    if "shards" in wanted:
        from bench import shards
        shards.run(report, args.quick)
    rendered = table(report.figures)
    print("\n" + rendered)
    args.out.write_text(json.dumps({"machine": common.machine(), "quick": args.quick,
                                   "figures": [f.row() for f in report.figures], "table": rendered}, indent=1))
    failed = [f.name for f in report.figures if f.passed is False]
    print(f"\n{len(report.figures)} figures in {time.time() - started:.0f}s, "
          f"{sum(f.passed is True for f in report.figures)} targets met, {len(failed)} missed; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
