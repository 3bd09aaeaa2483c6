"""Score thresholds that belong to one model, recorded next to its checkpoint.

A cosine of 0.95 is a near-copy for one model and an ordinary neighbour for
another, and "relevant" starts at different scores for text->image and
image->image. So the thresholds are measured per model (``crossmodal.train.calibrate``)
and stored as ``<checkpoint>.calibration.json``. A model that came without one (a
pretrained tag from the hub cache, someone's checkpoint) is calibrated on its first load
into the workspace, as ``<workspace>/calibration.json`` naming the model it measured
(``serve.flow.ensure_calibration``); until then, or with ``--no-calibrate``, the
uncalibrated defaults of ``settings.CALIBRATION`` serve.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from crossmodal.settings import CALIBRATION

PAIRS = ("text-image", "image-image", "text-text")  # query/result modalities, either order


@dataclass(frozen=True)
class Calibration:
    novelty_threshold: float = CALIBRATION.novelty_threshold
    relevance_threshold: dict = field(default_factory=dict)  # pair -> score; missing: uncalibrated
    close_threshold: dict = field(default_factory=dict)  # pair -> median score of matching pairs
    calibrated: bool = False

    def relevance(self, query: str, result: str) -> Optional[float]:
        key = "-".join(sorted((query, result), reverse=True))
        return self.relevance_threshold.get(key)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | Mapping) -> Calibration:
        """Parse what ``to_json`` wrote (empty: the defaults), checking every value.
        A mapping is accepted too: a Flow YAML may already have parsed the JSON."""
        if not text:
            return cls()
        raw = json.loads(text) if isinstance(text, str) else dict(text)
        novelty = float(raw.get("novelty_threshold", CALIBRATION.novelty_threshold))
        if not 0 < novelty <= 1:
            raise ValueError(f"calibration: novelty_threshold must be in (0, 1], got {novelty!r}")
        relevance, close = (_per_pair(raw, key) for key in ("relevance_threshold", "close_threshold"))
        return cls(novelty, relevance, close, bool(raw.get("calibrated", True)))


def _per_pair(raw: Mapping, key: str) -> dict:
    values = {str(k): float(v) for k, v in (raw.get(key) or {}).items()}
    unknown = set(values) - set(PAIRS)
    if unknown:
        raise ValueError(f"calibration: {key} has unknown pair(s) {sorted(unknown)}; expected {list(PAIRS)}")
    return values


def calibration_path(checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    return path.with_name(path.stem + ".calibration.json")


def workspace_calibration_path(workspace: str | Path) -> Path:
    return Path(workspace) / "calibration.json"


def find_calibration(checkpoint: Optional[str], label: str, workspace: Optional[str | Path] = None) -> Optional[Path]:
    """Where this model's calibration is recorded: beside its checkpoint, else in the
    workspace when it was measured for this very model (``label``); None when nowhere."""
    if checkpoint is not None and calibration_path(checkpoint).is_file():
        return calibration_path(checkpoint)
    if workspace is None or not workspace_calibration_path(workspace).is_file():
        return None
    path = workspace_calibration_path(workspace)
    try:
        measured = json.loads(path.read_text()).get("measured", {}).get("model")
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a calibration file ({err}); delete it to measure again") from err
    return path if measured == label else None


def load_calibration(checkpoint: Optional[str], label: str = "", workspace: Optional[str | Path] = None) -> Calibration:
    """The calibration recorded for this model (``find_calibration``), or the defaults."""
    path = find_calibration(checkpoint, label, workspace)
    if path is None:
        return Calibration()
    try:
        return Calibration.from_json(path.read_text())
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: {err}") from err
