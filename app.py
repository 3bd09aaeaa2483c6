"""crossmodal command line: index content, serve the Flow, fine-tune CLIP, evaluate retrieval.

    python app.py -t index --data data/demo          # index a folder / caption CSV / text file
    python app.py -t index                           # index the shipped demo data (data/demo)
    python app.py -t query                           # serve gRPC + HTTP until Ctrl-C
    python app.py -t finetune --data DIR --out DIR   # contrastive fine-tuning (open_clip loss)
    python app.py -t eval --data DIR                 # Precision/Recall/nDCG@K through the Flow
    python app.py -t adduser NAME [--admin]          # create a user, print its token once
    python app.py -t newtoken NAME                   # a new token for NAME; the old one stops working
    python app.py -t deluser NAME                    # remove NAME: its token stops working
    python app.py -t query --shards 2 --replicas 2   # the indexer in 2 shards, 2 encoder replicas
    python app.py -t reshard --shards 4              # redistribute a stopped workspace over 4 shards
    python app.py -t export --format compose --out deploy   # Docker Compose / Kubernetes files
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

from crossmodal.settings import JINA_QUIET, OPS, ServiceConfig  # noqa: E402  (imports nothing heavy)

for _key, _value in {**JINA_QUIET, "GRPC_VERBOSITY": "ERROR"}.items():
    os.environ.setdefault(_key, _value)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # raised inside jina's deps
# Jina imports the gateway's py_module again in its forked process and mistakes that for shadowing
warnings.filterwarnings("ignore", message=r"(?s).*shadows one of built-in Python module name")

from crossmodal.serve.flow import free_port  # noqa: E402

DEFAULTS = ServiceConfig()
DEMO_DATA = Path(__file__).resolve().parent / "data" / "demo"
SHOWN_FAILURES = 20  # -t index lists this many failed files, then counts the rest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-t", "--task", required=True,
                   choices=["index", "query", "finetune", "eval", "adduser", "newtoken", "deluser", "reshard", "export"])
    p.add_argument("name", nargs="?", help="adduser / newtoken / deluser: the user's name")
    p.add_argument("--admin", action="store_true", help="adduser: the user may act for anyone")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--auth", action="store_true", default=None,
                      help="every endpoint needs a token (default: on unless --host is a loopback address)")
    auth.add_argument("--no-auth", action="store_false", dest="auth", help="no tokens even off loopback (unsafe)")
    p.add_argument("--data", type=Path,
                   help="folder, caption table (image,caption[,owner]) or text file (index: default data/demo)")
    p.add_argument("--workspace", type=Path, default=DEFAULTS.workspace)
    p.add_argument("--model", help="open_clip model name or config .json (default ViT-B-32, else the demo model)")
    p.add_argument("--pretrained", help="pretrained tag, checkpoint path, or 'none' for random weights")
    p.add_argument("--grpc-port", type=int, help=f"default {DEFAULTS.grpc_port} for query, a free port otherwise")
    p.add_argument("--http-port", type=int, help=f"default {DEFAULTS.http_port} for query, a free port otherwise")
    p.add_argument("--host", default=DEFAULTS.host, help="address to serve on (0.0.0.0 to expose)")
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--index-factory", default=DEFAULTS.index_factory,
                   help="FAISS factory string: Flat, HNSW32, IVF1024,Flat ...")
    p.add_argument("--precision", default=DEFAULTS.precision, choices=["fp32", "int8"],
                   help="text encoder on CPU: exact fp32 (default) or int8 dynamic quantisation (faster, approximate)")
    p.add_argument("--shards", type=int, default=DEFAULTS.shards,
                   help="index/query: the indexer runs as N shards, each owning part of the ids (WORKSPACE/shard-<i>)")
    p.add_argument("--replicas", type=int, default=DEFAULTS.replicas,
                   help="index/query: the encoder (both towers) runs as M replicas")
    p.add_argument("--data-root", action="append", default=[], dest="data_roots",
                   help="folder whose images requests may name by local path (repeatable)")
    p.add_argument("--owner", default="demo", help="owner of items whose source names none")
    p.add_argument("--batch-size", type=int, default=32, help="documents per request (index) or batch (finetune)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lock-image", action="store_true",
                   help="finetune: keep the image tower fixed and train the text tower only (LiT)")
    p.add_argument("--describe", type=int, default=0,
                   help="finetune (generated data, --lock-image): N short descriptions of each image's scene")
    p.add_argument("--out", type=Path, help="finetune, export: output folder; eval: JSON report path")
    p.add_argument("--format", choices=["compose", "k8s"], help="export: Docker Compose file or Kubernetes manifests")
    p.add_argument("--image", default=OPS.image, help=f"export: the image built from the Dockerfile (default {OPS.image})")
    p.add_argument("--metrics", type=int, nargs="?", const=OPS.metrics_port, metavar="PORT",
                   help=f"query, export: Prometheus metrics on the gateway at PORT (default {OPS.metrics_port}), "
                        f"executors on ports listed at start")
    p.add_argument("--no-calibrate", action="store_false", dest="calibrate",
                   help="index, query: serve a model that has no recorded thresholds with the defaults "
                        "instead of measuring them on first load")
    p.add_argument("--feedback", type=int, metavar="ROUNDS",
                   help="eval: simulate ROUNDS of relevance feedback (/refine) per query instead")
    p.add_argument("--relevance", choices=["caption", "pair"], default="caption",
                   help="eval: relevant = same caption text (generated data) or the image's own captions (Flickr)")
    return p.parse_args(argv)


def service_config(args: argparse.Namespace) -> ServiceConfig:
    """Serving uses the documented ports; one-shot tasks take free ones, beside any server."""
    serving = args.task in ("query", "export")  # export: the documented ports, inside containers
    return ServiceConfig(
        workspace=args.workspace, model=args.model, pretrained=args.pretrained,
        grpc_port=args.grpc_port or (DEFAULTS.grpc_port if serving else free_port()),
        http_port=args.http_port or (DEFAULTS.http_port if serving else free_port()),
        host=args.host, device=args.device,
        index_factory=args.index_factory, data_roots=tuple(args.data_roots), precision=args.precision,
        auth=serving and auth_wanted(args), shards=args.shards, replicas=args.replicas,
        metrics_port=args.metrics, calibrate=args.calibrate, bulk=not serving,
        request_log=serving,  # a batch job's progress bar and summary are its log
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def auth_wanted(args: argparse.Namespace) -> bool:
    """On when asked, or when serving beyond loopback; --no-auth there is allowed, loudly."""
    if args.auth is None:
        return not is_loopback(args.host)
    if args.auth is False and not is_loopback(args.host):
        print(f"\n{'!' * 78}\nWARNING: --no-auth on {args.host}: anyone who can reach this address can post, "
              f"search and DELETE\nas any user. Use it only behind an authenticating proxy.\n{'!' * 78}\n",
              file=sys.stderr, flush=True)
    return bool(args.auth)


USER_TASKS = {"adduser": "alice [--admin]", "newtoken": "alice", "deluser": "alice"}


def user_task_refusal(args: argparse.Namespace) -> str | None:
    """Why a user task cannot run as asked, before anything is created."""
    from crossmodal.index.store import DB_NAME

    if not args.name:
        return f"-t {args.task} needs a NAME: python app.py -t {args.task} {USER_TASKS[args.task]} --workspace DIR"
    if args.admin and args.task != "adduser":
        return f"--admin applies to -t adduser only: -t {args.task} keeps the user's role"
    if args.task != "adduser" and not (Path(args.workspace) / DB_NAME).is_file():
        return f"--workspace: no workspace at {args.workspace} (no {DB_NAME} there)"
    return None


def run_user_task(args: argparse.Namespace) -> int:
    """adduser / newtoken / deluser. Runs without the model stack (main calls it before
    importing torch): it takes a second, and a running service sees the change at once."""
    import sqlite3

    from crossmodal.index.users import UserError, Users

    refusal = user_task_refusal(args)
    if refusal is None:
        try:
            users = Users(args.workspace)
        except (OSError, sqlite3.Error) as err:
            refusal = f"--workspace: cannot use {args.workspace}: {getattr(err, 'strerror', None) or err}"
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        if args.task == "deluser":
            users.remove(args.name)
            print(f"user {args.name!r} removed from {args.workspace}: its token no longer works "
                  "(what it posted stays, under its name)")
            return 0
        token = users.add(args.name, admin=args.admin) if args.task == "adduser" else users.rotate(args.name)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        users.close()
    done = (f"{'admin ' if args.admin else ''}user {args.name!r} added to {args.workspace}" if args.task == "adduser"
            else f"user {args.name!r} of {args.workspace} has a new token; the old one no longer works")
    print(f"{done}. Its token, shown only once:\n{token}")
    return 0


def run_reshard(args: argparse.Namespace) -> int:
    """Runs without the model stack: it copies rows between SQLite stores."""
    from crossmodal.index.reshard import reshard
    from crossmodal.index.store import WorkspaceError

    try:
        before, after = reshard(args.workspace, args.shards)
    except WorkspaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.workspace}: {sum(before)} items on {len(before)} shard(s) {before} -> "
          f"{sum(after)} items on {len(after)} shard(s) {after}")
    return 0


def users_check(cfg: ServiceConfig) -> None:
    from crossmodal.index.users import Users

    users = Users(cfg.workspace)
    try:
        if not users.count():
            print(f"WARNING: authentication is on but {cfg.workspace} has no users: every request will be "
                  f"refused. Add one with: python app.py -t adduser NAME --workspace {cfg.workspace}",
                  file=sys.stderr, flush=True)
    finally:
        users.close()


def _post_sources(args: argparse.Namespace, sources: list, failures: list, counts: Counter) -> tuple[bool, float]:
    """Index ``sources`` through a one-shot Flow, counting answers and failures as they come:
    (whether Ctrl-C stopped it, seconds spent). Ctrl-C, once or again while the Flow stops,
    ends the posting; what the Flow acknowledged is stored."""
    from tqdm import tqdm

    from crossmodal.inputs.loaders import read_docs
    from crossmodal.serve.flow import running_flow
    from crossmodal.serve.posting import post_all

    start = time.time()
    try:
        with running_flow(service_config(args)) as client, tqdm(total=len(sources), unit="doc",
                                                                  desc="indexing") as bar:
            start = time.time()

            def failed(source, reason: str) -> None:
                failures.append((source.id, reason))
                counts["error"] += 1
                bar.update(1)

            def done(response) -> None:
                for doc in response.docs:
                    counts[doc.status or "error"] += 1
                    if doc.status == "error":
                        failures.append((doc.id, doc.error))
                bar.update(len(response.docs))

            post_all(client, "/index", read_docs(sources, failed), done, max_docs=args.batch_size)
    except KeyboardInterrupt:
        return True, time.time() - start
    return False, time.time() - start


def run_index(args: argparse.Namespace) -> int:
    from crossmodal.inputs.images import IMAGE_SUFFIXES
    from crossmodal.inputs.loaders import discover

    if args.data is None:
        args.data = DEMO_DATA
        print(f"no --data given: indexing the shipped demo data in {DEMO_DATA}", flush=True)
    failures: list[tuple[str, str]] = []  # (id, reason): tables that could not be read, then documents
    sources = discover(args.data, args.owner, failed=lambda name, reason: failures.append((name, reason)))
    if not sources:
        for name, reason in failures:
            print(f"  failed {name}: {reason}", file=sys.stderr)
        print(f"error: nothing to index in {args.data}: no {'readable ' if failures else ''}images "
              f"({', '.join(IMAGE_SUFFIXES)}), caption table or text file", file=sys.stderr)
        return 1
    counts = Counter(error=len(failures))
    interrupted, seconds = _post_sources(args, sources, failures, counts)
    for doc_id, error in failures[:SHOWN_FAILURES]:
        print(f"  failed {doc_id}: {error}", file=sys.stderr)
    if len(failures) > SHOWN_FAILURES:
        print(f"  ... and {len(failures) - SHOWN_FAILURES} more failed", file=sys.stderr)
    handled = counts["indexed"] + counts["updated"] + counts["error"]
    print(f"{'interrupted: ' if interrupted else ''}indexed {counts['indexed']}, updated {counts['updated']}, "
          f"failed {counts['error']} in {seconds:.1f}s ({handled / max(seconds, 1e-9):.1f} docs/s) into {args.workspace}"
          + (f"; {len(sources) - handled} of {len(sources)} not confirmed (run it again: what is stored is updated)"
             if interrupted else ""))
    if interrupted:
        return 130
    return 1 if counts["error"] and not (counts["indexed"] or counts["updated"]) else 0


AUTH_HEADER = '-H "Authorization: Bearer $TOKEN" '


def run_query(args: argparse.Namespace) -> int:
    from crossmodal.serve.flow import build_flow, metrics_ports, started, stop_on_signals
    from crossmodal.serve.shutdown import hard_stop_after

    cfg = service_config(args)
    if cfg.auth:
        users_check(cfg)
    with started(build_flow(cfg)) as flow, stop_on_signals() as stop:
        base = f"http://{cfg.host}:{cfg.http_port}"
        metrics = "" if cfg.metrics_port is None else (
            "  metrics: " + ", ".join(f"{name} :{port}" for name, port in metrics_ports(flow).items())
            + "   (Prometheus text at GET http://HOST:PORT/)\n")
        print(f"\ncrossmodal is serving (Ctrl-C to stop)\n"
              f"  gRPC : {cfg.host}:{cfg.grpc_port}   (jina Client(host='{cfg.host}', port={cfg.grpc_port}))\n"
              f"  HTTP : {base}   (OpenAPI docs: {base}/docs)\n"
              f"  Web  : {base}/ui/\n"
              f"  auth : {'on: send Authorization: Bearer <token> (create one: -t adduser NAME)' if cfg.auth else 'off'}\n"
              f"{metrics}"
              f"  try  : curl -s -X POST {base}/search -H 'Content-Type: application/json' "
              f"{AUTH_HEADER if cfg.auth else ''}"
              f"-d '{{\"data\": [{{\"id\": \"q1\", \"text\": \"two large red circles on a grey background\"}}], "
              f"\"parameters\": {{\"k\": 3, \"username\": \"alice\"}}}}'\n", flush=True)
        while not stop.wait(timeout=0.5):  # see stop_on_signals
            pass
        deadline = hard_stop_after(cfg.stop_grace_s)  # even a running request cannot hold the ports
    deadline.cancel()
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Containers listen on every interface, so tokens are on unless --no-auth says otherwise."""
    from crossmodal.serve.export import export, summary

    if args.format is None or args.out is None:
        sys.exit("-t export needs --format compose|k8s and --out DIR")
    cfg = service_config(args)
    cfg.auth = args.auth is not False
    if not cfg.auth:
        print("WARNING: --no-auth: the exported service takes requests from anyone who reaches it", file=sys.stderr)
    files = export(cfg, args.format, args.out, image=args.image)
    print(summary(files, args.format, args.out))
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from crossmodal.train.finetune import finetune

    if args.data is None or args.out is None:
        sys.exit("-t finetune needs --data DIR (captions.csv + images/) and --out DIR")
    checkpoint = finetune(
        captions_csv=args.data / "captions.csv", images_dir=args.data / "images",
        model=args.model or "demo-clip", pretrained=args.pretrained, out=args.out,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, lock_image=args.lock_image,
        describe=args.describe,
    )
    print(f"checkpoint written to {checkpoint}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from crossmodal.train.evaluate import evaluate

    if args.data is None:
        sys.exit("-t eval needs --data DIR (captions.csv + images/)")
    if args.feedback is not None:
        from crossmodal.train.feedback_eval import evaluate_feedback

        evaluate_feedback(args.data / "captions.csv", args.data / "images", args.model, args.pretrained,
                          args.feedback, batch_size=args.batch_size, device=args.device)
        return 0
    evaluate(args.data / "captions.csv", args.data / "images", args.model, args.pretrained, out_json=args.out,
             relevance=args.relevance, batch_size=args.batch_size, device=args.device)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.task in USER_TASKS:
        return run_user_task(args)
    if args.task == "reshard":
        return run_reshard(args)
    if args.task != "finetune":  # this process and the Flow's, forked from it, run no model
        from crossmodal.model.guard import block_model_libraries

        block_model_libraries()
    from crossmodal.index.store import WorkspaceError
    from crossmodal.model.resolve import ModelUnavailable

    task = {"index": run_index, "query": run_query, "finetune": run_finetune, "eval": run_eval,
            "export": run_export}[args.task]
    try:
        return task(args)
    except (ModelUnavailable, WorkspaceError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
