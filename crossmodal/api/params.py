"""Request parameters of every endpoint, validated one way.

Each endpoint's parameters are a frozen dataclass whose fields carry their own
check (``metadata["check"]``); ``parse`` runs them on a request's ``parameters``
dict. Jina delivers JSON numbers as floats and, over gRPC, a stray ``__results__``
key: unknown keys are ignored, ``None`` means "the default", integral floats are
accepted where an integer is due, and every error names the parameter and the
offending value.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Optional, TypeVar

from crossmodal.settings import CALIBRATION, LIMITS, MODALITIES

P = TypeVar("P")


def _as_sent(value: float) -> str:
    """An integer parameter as the client wrote it: Jina carries parameters as protobuf numbers,
    all floats, so ``k=0`` arrives as ``0.0``."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53 else repr(value)


def number(low: float, high: float, *, integer: bool = False, low_open: bool = False,
           high_open: bool = False) -> Callable[[str, Any], float]:
    """A check for a real number in an interval (open or closed at each end)."""
    if integer and not (low_open or high_open):
        interval = f"{low}..{high}"
    else:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"parameter {name!r} must be a number in {interval}, got {value!r}")
        try:
            as_float = float(value)
        except OverflowError:  # an int beyond float range is outside every interval
            raise ValueError(f"parameter {name!r} must be in {interval}, got {value!r}") from None
        if not math.isfinite(as_float) or (integer and not as_float.is_integer()):
            kind = "an integer" if integer else "a finite number"
            raise ValueError(f"parameter {name!r} must be {kind} in {interval}, got {value!r}")
        above = as_float > low if low_open else as_float >= low
        below = as_float < high if high_open else as_float <= high
        if not (above and below):
            raise ValueError(f"parameter {name!r} must be in {interval}, got {_as_sent(value) if integer else repr(value)}")
        return int(as_float) if integer else as_float

    return check


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"parameter {name!r} must be true or false, got {value!r}")
    return value


def username(name: str, value: Any) -> Optional[str]:
    if value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"parameter {name!r} must be a non-empty string, got {value!r}")
    return value


def modalities(name: str, value: Any) -> tuple[str, ...]:
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, (list, tuple)) or not value or any(m not in MODALITIES for m in value):
        raise ValueError(f"parameter {name!r} must be a list drawn from {list(MODALITIES)}, got {value!r}")
    return tuple(dict.fromkeys(value))


def id_list(name: str, value: Any) -> tuple[str, ...]:
    value = [value] if isinstance(value, str) else value
    if (not isinstance(value, (list, tuple)) or len(value) > LIMITS.max_feedback_ids
            or any(not isinstance(i, str) or not i for i in value)):
        raise ValueError(f"parameter {name!r} must be a list of at most {LIMITS.max_feedback_ids} document ids, "
                         f"got {str(value)[:200]}")
    return tuple(dict.fromkeys(value))


def choice(*allowed: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"parameter {name!r} must be one of {list(allowed)}, got {value!r}")
        return value

    return check


def param(default: Any, check: Callable[[str, Any], Any]) -> Any:
    return field(default=default, metadata={"check": check})


def parse(cls: type[P], params: Mapping[str, Any]) -> P:
    """Build ``cls`` from a request's parameters, checking every given field."""
    values = {}
    for f in fields(cls):
        value = params.get(f.name)
        if value is not None:
            checked = f.metadata["check"](f.name, value)
            if checked is not None:
                values[f.name] = checked
    return cls(**values)


K = param(10, number(1, LIMITS.max_k, integer=True))


@dataclass(frozen=True)
class SearchParams:
    k: int = K
    username: Optional[str] = param(None, username)  # whose own posts are excluded
    modalities: tuple[str, ...] = param(MODALITIES, modalities)
    with_thumbnails: bool = param(False, boolean)


@dataclass(frozen=True)
class RecommendParams:
    """The clustering defaults (3, 2) still find interests in a history of 10-20 posts:
    three posts about something is already a pattern for a single person."""

    username: Optional[str] = param(None, username)
    k: int = K
    min_cluster_size: int = param(3, number(2, LIMITS.max_cluster_size, integer=True))  # HDBSCAN needs >= 2
    min_samples: int = param(2, number(1, LIMITS.max_cluster_size, integer=True))
    max_seeds: int = param(3, number(1, LIMITS.max_recommend_seeds, integer=True))
    outlier_share: float = param(0.2, number(0, 1, high_open=True))  # 1 would leave no room for interests
    novelty_threshold: float = param(CALIBRATION.novelty_threshold, number(0, 1, low_open=True))
    diversity: float = param(0.7, number(0, 1))  # MMR lambda: 1 = pure relevance, 0 = pure diversity
    seed: int = param(0, number(0, 2**32, integer=True, high_open=True))
    with_thumbnails: bool = param(False, boolean)


@dataclass(frozen=True)
class RefineParams:
    """``/refine``: the search parameters plus the marks and how to use them.

    Rocchio weights are the classic (1, 0.75, 0.15); ``c`` is the inverse regularisation of
    the linear method; ``weak_negatives`` random items stand in when nothing was marked
    not relevant.
    """

    k: int = K
    username: Optional[str] = param(None, username)
    modalities: tuple[str, ...] = param(MODALITIES, modalities)
    with_thumbnails: bool = param(False, boolean)
    positive: tuple[str, ...] = param((), id_list)
    negative: tuple[str, ...] = param((), id_list)
    # rocchio is the default: it did better than linear in the simulated rounds (README, eval --feedback)
    method: str = param("rocchio", choice("rocchio", "linear"))
    alpha: float = param(1.0, number(0, 10))
    beta: float = param(0.75, number(0, 10))
    gamma: float = param(0.15, number(0, 10))
    c: float = param(1.0, number(1e-4, 1e4))
    weak_negatives: int = param(64, number(1, 1000, integer=True))
    seed: int = param(0, number(0, 2**32, integer=True, high_open=True))


def parse_search_params(params: Mapping[str, Any]) -> SearchParams:
    return parse(SearchParams, params)


def parse_refine_params(params: Mapping[str, Any]) -> RefineParams:
    return parse(RefineParams, params)


def parse_recommend_params(params: Mapping[str, Any],
                           novelty_threshold: float = CALIBRATION.novelty_threshold) -> RecommendParams:
    """Recommendations are for someone: ``username`` is required here. ``novelty_threshold``
    is the loaded model's calibrated value, used unless the request gives its own."""
    parsed = parse(RecommendParams, params)
    if params.get("novelty_threshold") is None:
        parsed = replace(parsed, novelty_threshold=novelty_threshold)
    if parsed.username is None:
        raise ValueError(f"parameter 'username' is required, got {params.get('username')!r}")
    return parsed
