"""Every default and limit of the service, in one typed place.

The CLI's defaults, the environment that the Flow YAML reads and the executors'
``with:`` keyword defaults all come from these dataclasses, so a setting is added
or changed here once. Nothing here imports torch, Jina or DocArray: every process
of the service can read it cheaply.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"
FLOW_YAML = ROOT / "flows" / "crossmodal.yml"
UI_DIR = ROOT / "ui"

MODALITIES = ("text", "image")

# The gateway stamps every /index request with its time under this parameter (overwriting any
# client value), so that all indexer shards record one posting time, as a single indexer would.
POSTED_AT = "__posted_at__"

# Executors are reached only through the gateway, which checks tokens: they never listen
# beyond loopback, whatever --host the gateway serves on.
EXECUTOR_HOST = "127.0.0.1"

# Jina's telemetry, survey and chatty logs stay off in every process that starts a Flow;
# an explicit JINA_LOG_LEVEL is honoured.
JINA_QUIET = {"JINA_OPTOUT_TELEMETRY": "1", "JINA_HIDE_SURVEY": "1",
              "JINA_LOG_LEVEL": os.environ.get("JINA_LOG_LEVEL", "ERROR")}


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server; every executor enforces the ones it sees."""

    max_k: int = 1000
    max_text_chars: int = 10_000
    max_id_chars: int = 512
    max_tags_bytes: int = 16_384
    max_image_bytes: int = 20 * 2**20
    max_image_pixels: int = 40_000_000
    # tags: nesting depth and keys (all levels) bound what every later response carries;
    # Jina's protobuf transport fails on deeply nested structs
    max_tags_depth: int = 8
    max_tags_keys: int = 256
    # one HTTP request: refused up front with 413 above these (checked before parsing)
    max_body_bytes: int = 32 * 2**20
    max_docs_per_request: int = 10_000
    # an HTTP request travels the Flow in chunks of this many documents, one after the other,
    # so a concurrent search waits about one chunk; the answer comes once every chunk is done
    chunk_docs: int = 64  # = the text encoder batch: a search waits one encoder batch
    max_thumbnails_per_response: int = 100  # further image matches come without thumbnail
    # /recommend: work per request is bounded whatever the knobs or the history length
    max_recommend_seeds: int = 10
    max_recommend_candidates: int = 5_000  # candidates fetched per request, all seeds together
    max_recommend_history: int = 1_000  # most recent posts used (clustering and novelty)
    max_cluster_size: int = 200  # HDBSCAN min_cluster_size / min_samples upper bound
    embedding_norm_tolerance: float = 1e-3  # stored embeddings are unit vectors
    max_feedback_ids: int = 1000  # ids per 'positive' / 'negative' list of /refine
    max_owner_names_listed: int = 10_000  # a shard's /stats lists its owners (exact total) up to this many


LIMITS = Limits()


@dataclass(frozen=True)
class IndexSettings:
    """FAISS defaults. HNSW: recall@10 >= 0.95 at 1M clustered 512-d vectors in ~1 ms
    (bench/vectors.py); faiss's own efConstruction of 40 builds a graph that stalls near
    0.95 whatever efSearch. Flat ignores the knobs."""

    factory: str = "Flat"
    ef_search: int = 256
    ef_construction: int = 80
    nprobe: int = 16
    rebuild_tombstone_ratio: float = 0.25  # compact an index once this share of it is dead


INDEX = IndexSettings()


@dataclass(frozen=True)
class EncoderSettings:
    text_batch_size: int = 64
    image_batch_size: int = 32
    thumbnail_size: int = 256  # longest side of the JPEG stored for image results
    decode_threads: int = 2
    text_precision: str = "fp32"  # or "int8" (opt-in, CPU): crossmodal/model/precision.py
    # the image tower's weights on CPU: "packed" (oneDNN) encodes one image ~25 % faster,
    # "dense" (MKL) a batch of 32 ~10 % faster; batch jobs (ServiceConfig.bulk) take dense
    image_layout: str = "packed"
    # concurrent /index and /search requests that queue while an encoder computes run
    # together next, up to batch_docs documents of several requests (crossmodal/model/batcher.py)
    batch_docs: int = 16
    # OpenMP threads (torch in the encoder, FAISS in the indexer) spin this many times after a
    # parallel region before sleeping, instead of libgomp's 300,000: the service's processes
    # share the cores, and a thread spinning in one takes the core another needs. Measured on
    # 2 cores (ViT-B-32, 3 interleaved rounds): single text query 52.6 -> 43.5 ms, one-image
    # post 141 -> 129 ms, 16-client QPS 34.7-38.2 -> 39.0-44.1. OMP_WAIT_POLICY or
    # GOMP_SPINCOUNT in the environment win over it (crossmodal/serve/flow.openmp_env).
    openmp_spin_count: int = 10_000
    # oneDNN kernels kept for packed linears, one per product shape (crossmodal/model/memory.py):
    # four per even query length (cpu_layout.padded_rows) and four for one image
    kernel_cache: int = 64


ENCODER = EncoderSettings()


@dataclass(frozen=True)
class AuthSettings:
    """Users and tokens. A token is 32 random bytes, so no KDF cost makes guessing it
    easier or harder; scrypt with a per-user salt keeps a leaked users table from
    being reused, at ~12 ms a check here (n=2**14 costs ~50 ms, on every request)."""

    token_bytes: int = 32
    salt_bytes: int = 16
    scrypt_n: int = 2**12
    scrypt_r: int = 8
    scrypt_p: int = 1
    max_name_chars: int = 64
    # the gateway remembers tokens it verified (by SHA-256, never the token) for this long,
    # so that a client's next requests skip scrypt (they still look the token's id up)
    cache_seconds: float = 60.0
    cache_entries: int = 4096
    # a refused gRPC stream is read up to this many requests before the refusal is sent, so
    # that the client, still sending, gets UNAUTHENTICATED rather than a failed send
    max_refused_messages: int = 64
    # the request parameter the gateway sets to the authenticated user; clients' values are dropped
    parameter: str = "__crossmodal_user__"


AUTH = AuthSettings()


@dataclass
class ServiceConfig:
    """Everything a running service needs; the CLI's flags map one to one onto it."""

    workspace: Path = ROOT / "workspace"
    model: Optional[str] = None
    pretrained: Optional[str] = None
    grpc_port: int = 45679
    http_port: int = 45678
    host: str = "127.0.0.1"
    device: str = "auto"
    index_factory: str = INDEX.factory
    precision: str = ENCODER.text_precision
    data_roots: Sequence[str] = field(default_factory=tuple)
    # after Ctrl-C/SIGTERM the Flow closes gracefully for this long, then what is left is killed
    stop_grace_s: float = 8.0
    auth: bool = False  # every endpoint needs a token (app.py turns it on off loopback)
    # scale-out (issue 16): the indexer runs as `shards` processes, each owning the ids that
    # hash onto it (crossmodal/index/shards.py); the encoder runs as `replicas` processes
    shards: int = 1
    replicas: int = 1
    # Prometheus metrics (Jina's monitoring) on the gateway at this port, executors on free
    # ports listed at start; None: off
    metrics_port: Optional[int] = None
    request_log: bool = True  # one JSON line per request on the gateway's stderr (crossmodal/serve/requestlog.py)
    # a model without recorded thresholds is calibrated on first load into the workspace
    # (crossmodal/serve/flow.ensure_calibration); one-shot evaluations turn it off
    calibrate: bool = True
    # a batch job (app.py -t index, -t eval) rather than a served Flow: the image tower takes
    # the layout that is fastest for batches (EncoderSettings.image_layout)
    bulk: bool = False

    def __post_init__(self):
        for name in ("shards", "replicas"):
            if not 1 <= getattr(self, name) <= 64:
                raise ValueError(f"--{name} must be in 1..64, got {getattr(self, name)}")


@dataclass(frozen=True)
class OpsSettings:
    """Deployment on several machines (``app.py -t export``) and what operators read.

    Inside the image the repository sits at ``image_root``; every indexer shard, and the
    gateway (its users table), keep their workspace on their own volume at ``workspace``.
    """

    image: str = "crossmodal:latest"
    image_root: str = "/opt/crossmodal"
    workspace: str = "/data/workspace"
    image_gid: int = 1000  # the image's user and group (Dockerfile): volumes must be writable to it
    gateway_config: str = "crossmodal/serve/gateway.yml"  # the gateway's Jina config, in the repository
    stateful_executors: tuple = ("indexer",)  # executors that get a volume per shard
    metrics_port: int = 9090  # Prometheus port inside each container when --metrics is given
    k8s_namespace: str = "crossmodal"
    k8s_storage: str = "10Gi"  # PersistentVolumeClaim size per shard (and for the gateway's users)
    k8s_secret: str = "crossmodal-auth"  # Secret holding the signing key under k8s_secret_key
    k8s_secret_key: str = "signing-key"
    healthcheck_interval_s: int = 10
    healthcheck_start_s: int = 120  # a model loads for a while before the first ping counts
    request_logger: str = "crossmodal.requests"  # the logging name of the per-request JSON lines


OPS = OpsSettings()


@dataclass(frozen=True)
class EvalSettings:
    """Held-out evaluation: the short-query set has its own seed (training used seed 1's scenes)."""

    short_queries: int = 200
    short_query_seed: int = 2000


EVAL = EvalSettings()


@dataclass(frozen=True)
class CalibrationSettings:
    """Per-model thresholds: these defaults serve models that were never calibrated.
    Calibration renders its own held-out scenes (seed 3000, never trained or evaluated on)."""

    novelty_threshold: float = 0.95
    off_topic_quantile: float = 0.9  # relevance lines sit above the best result of this share of off-topic queries
    seed: int = 3000
    images: int = 600
    texts: int = 600


CALIBRATION = CalibrationSettings()


@dataclass(frozen=True)
class TrainSettings:
    off_topic_share: float = 0.25  # --describe: off-topic texts (matching nothing) per image


TRAIN = TrainSettings()
