"""Start the crossmodal Flow from its YAML with one typed configuration.

The Flow YAML reads its values from ``CROSSMODAL_*`` environment variables, so the
same file serves ``app.py``, the tests and the benchmarks; this module is the only
place that sets them, from ``settings.ServiceConfig`` and the model resolved once here.
"""
from __future__ import annotations

import contextlib
import gc
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from crossmodal.index.users import KEY_ENV
from crossmodal.model.calibration import find_calibration, load_calibration, workspace_calibration_path
from crossmodal.settings import ENCODER, EXECUTOR_HOST, FLOW_YAML, JINA_QUIET, ROOT, ServiceConfig

if TYPE_CHECKING:  # resolving models imports torch: only where a Flow starts (adduser stays fast)
    from jina import Client

    from crossmodal.model.resolve import ModelSpec


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now, for one-shot Flows that must not clash with a server."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def openmp_env(environ: Optional[dict] = None) -> dict[str, str]:
    """libgomp's spin count for every process of the Flow (settings.EncoderSettings), unless
    the operator chose an OpenMP wait policy or spin count. Set before the executors load
    torch or FAISS: libgomp reads it once, when it is loaded."""
    environ = os.environ if environ is None else environ
    if {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(environ):
        return {}
    return {"GOMP_SPINCOUNT": str(ENCODER.openmp_spin_count)}


def flow_env(cfg: ServiceConfig, spec: ModelSpec) -> dict[str, str]:
    from crossmodal.model.resolve import embed_dim

    return {
        **JINA_QUIET,
        **openmp_env(),
        "CROSSMODAL_ROOT": str(ROOT),
        "CROSSMODAL_GRPC_PORT": str(cfg.grpc_port),
        "CROSSMODAL_HTTP_PORT": str(cfg.http_port),
        "CROSSMODAL_HOST": cfg.host,
        "CROSSMODAL_EXECUTOR_HOST": EXECUTOR_HOST,
        "CROSSMODAL_WORKSPACE": str(Path(cfg.workspace).resolve()),
        "CROSSMODAL_MODEL": spec.name,
        "CROSSMODAL_PRETRAINED": spec.pretrained,
        "CROSSMODAL_MODEL_LABEL": spec.label,
        "CROSSMODAL_EMBED_DIM": str(embed_dim(spec)),
        "CROSSMODAL_DEVICE": cfg.device,
        "CROSSMODAL_PRECISION": cfg.precision,
        "CROSSMODAL_IMAGE_LAYOUT": "dense" if cfg.bulk else ENCODER.image_layout,
        "CROSSMODAL_INDEX_FACTORY": cfg.index_factory,
        "CROSSMODAL_SHARDS": str(cfg.shards),
        "CROSSMODAL_REPLICAS": str(cfg.replicas),
        "CROSSMODAL_DATA_ROOTS": os.pathsep.join(str(Path(r).resolve()) for r in cfg.data_roots),
        "CROSSMODAL_AUTH": "1" if cfg.auth else "0",  # read by the gateway and the executors
        KEY_ENV: secrets.token_hex(32),  # the gateway signs the acting user with it (api/identity.py)
        "CROSSMODAL_CALIBRATION": load_calibration(spec.checkpoint, spec.label, cfg.workspace).to_json(),
        "CROSSMODAL_MONITORING": "true" if cfg.metrics_port is not None else "false",
        "CROSSMODAL_METRICS_PORT": str(cfg.metrics_port or free_port()),  # unused when off
        "CROSSMODAL_REQUEST_LOG": "1" if cfg.request_log else "0",  # read by the gateway
    }


def preflight(cfg: ServiceConfig, spec: ModelSpec) -> None:
    """Fail in this process, with a clear message, before any executor starts.

    The indexer shards enforce the same checks themselves; doing them here first turns a
    Jina start-up failure deep in a child process into a one-line error.
    """
    from crossmodal.index.shards import check_layout, shard_dir
    from crossmodal.index.store import Store, WorkspaceLock
    from crossmodal.model.resolve import embed_dim

    check_layout(Path(cfg.workspace), cfg.shards)
    for shard in range(cfg.shards):
        workspace = shard_dir(Path(cfg.workspace), shard, cfg.shards)
        lock = WorkspaceLock(workspace)
        lock.acquire()
        try:
            store = Store(workspace)
            try:
                store.bind_model(spec.label, embed_dim(spec))
            finally:
                store.close()
        finally:
            lock.release()


def ensure_calibration(cfg: ServiceConfig, spec: ModelSpec) -> Optional[Path]:
    """Measure the thresholds of a model that came without them, once per workspace.

    A pretrained tag or someone's checkpoint has no ``.calibration.json`` beside it, and
    0.95 is not "near-duplicate" for every model (issue 13). Calibration loads both towers,
    so it runs in a child process (this one, and the gateway forked from it, never import
    torch); a failure leaves the defaults in place with a warning instead of blocking start.
    """
    if not cfg.calibrate or spec.checkpoint is None or find_calibration(spec.checkpoint, spec.label, cfg.workspace):
        return None
    out = workspace_calibration_path(cfg.workspace)
    print(f"{spec.label} has no calibration yet: measuring its near-duplicate and relevance thresholds once, "
          f"into {out} (--no-calibrate skips this)", file=sys.stderr, flush=True)
    model = cfg.model or spec.name  # as given: a config file outside models/ resolves in the child too
    cmd = [sys.executable, "-m", "crossmodal.train.calibrate", "--model", model, "--pretrained", spec.pretrained,
           "--device", cfg.device, "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **JINA_QUIET})
    if done.returncode != 0 or not out.is_file():
        print(f"WARNING: calibrating {spec.label} failed (exit {done.returncode}): serving with the uncalibrated "
              f"defaults; run `{' '.join(cmd[1:])}` to see why", file=sys.stderr, flush=True)
        return None
    return out


def build_flow(cfg: ServiceConfig, spec: Optional[ModelSpec] = None):
    """The Flow object, not started. Resolves the model once for every executor."""
    from crossmodal.model.resolve import resolve

    spec = spec or resolve(cfg.model, cfg.pretrained)
    preflight(cfg, spec)
    ensure_calibration(cfg, spec)
    os.environ.update(flow_env(cfg, spec))
    from jina import Flow

    return Flow.load_config(str(FLOW_YAML))


def metrics_ports(flow) -> dict[str, int]:
    """Every process's Prometheus port in a started Flow with monitoring on, by Jina runtime
    name (``gateway``, ``indexer/head``, ``indexer-0``, ``clip/rep-1`` ...)."""
    ports = {}
    for name, deployment in flow._deployment_nodes.items():
        if name == "gateway":
            ports[name] = deployment.args.port_monitoring
            continue
        head = deployment.pod_args.get("head")
        if head is not None:
            ports[head.name] = head.port_monitoring
        for replicas in deployment.pod_args["pods"].values():
            for args in replicas:
                ports[args.name] = args.port_monitoring
    return ports


@contextlib.contextmanager
def started(flow) -> Iterator:
    """Start a Flow without Jina's banner (it lists addresses we do not bind); stop it on exit.

    Jina forks the gateway and every executor from this process. Frozen first, the objects
    they inherit are never visited by their garbage collectors, whose writes would copy every
    page of them into each child: about 30 MB of PSS less for the whole service.
    """
    gc.collect()
    gc.freeze()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            flow.start()
    finally:
        gc.unfreeze()  # the children are forked: this process collects as usual again
    try:
        yield flow
    finally:
        flow.close()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM (``docker stop``, systemd) asks a served Flow to stop gracefully.

    Enter it after ``Flow.start``: the start leaves Python's default SIGINT handler
    installed and SIGTERM would kill the process without letting executors save.
    The serving loop polls the event with a timeout rather than waiting untimed (as
    ``Flow.block`` does), so a signal that another thread received is still acted on.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def running_flow(cfg: ServiceConfig, spec: Optional[ModelSpec] = None) -> Iterator[Client]:
    """Start the Flow and yield a connected gRPC client; the Flow stops on exit."""
    from jina import Client

    with started(build_flow(cfg, spec)):
        yield Client(host=cfg.host, port=cfg.grpc_port)
