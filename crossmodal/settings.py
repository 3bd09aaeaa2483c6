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


ENCODER = EncoderSettings()


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
    data_roots: Sequence[str] = field(default_factory=tuple)


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
