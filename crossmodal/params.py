"""Validation of request parameters and content documents.

Jina delivers JSON numbers as floats and, over gRPC, a stray ``__results__`` key;
everything is checked here, where it enters, with the parameter named in the error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from crossmodal.schemas import MODALITIES, ContentDoc

MAX_K = 1000


def as_int(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """An integer parameter in [low, high]; integral floats (5.0) are accepted."""
    value = params.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"parameter {name!r} must be an integer in {low}..{high}, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"parameter {name!r} must be in {low}..{high}, got {value!r}")
    return int(value)


def as_bool(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"parameter {name!r} must be true or false, got {value!r}")
    return value


def as_username(params: Mapping[str, Any], required: bool) -> Optional[str]:
    value = params.get("username")
    if value is None or value == "":
        if required:
            raise ValueError("parameter 'username' is required")
        return None
    if not isinstance(value, str):
        raise ValueError(f"parameter 'username' must be a string, got {value!r}")
    return value


@dataclass(frozen=True)
class SearchParams:
    k: int = 10
    username: Optional[str] = None
    modalities: tuple[str, ...] = MODALITIES
    with_thumbnails: bool = False


def parse_search_params(params: Mapping[str, Any]) -> SearchParams:
    modalities = params.get("modalities") or list(MODALITIES)
    if isinstance(modalities, str):
        modalities = [modalities]
    if not isinstance(modalities, (list, tuple)) or any(m not in MODALITIES for m in modalities):
        raise ValueError(f"parameter 'modalities' must be a list drawn from {list(MODALITIES)}, got {modalities!r}")
    return SearchParams(
        k=as_int(params, "k", 10, 1, MAX_K),
        username=as_username(params, required=False),
        modalities=tuple(dict.fromkeys(modalities)),
        with_thumbnails=as_bool(params, "with_thumbnails", False),
    )


@dataclass(frozen=True)
class ContentLimits:
    max_text_chars: int = 10_000
    max_id_chars: int = 512
    max_tags_bytes: int = 16_384


def content_error(doc: ContentDoc, limits: ContentLimits, encoded: bool = False) -> Optional[str]:
    """Why a document cannot be indexed (naming the field), or None when it can.

    ``encoded``: the image bytes were already consumed by the encoder upstream.
    """
    if not doc.id or not isinstance(doc.id, str) or len(doc.id) > limits.max_id_chars:
        return f"id: required, a non-empty string of at most {limits.max_id_chars} characters"
    if not doc.owner or not doc.owner.strip():
        return "owner: required (the username who posted the content)"
    if doc.modality not in MODALITIES:
        return f"modality: must be one of {list(MODALITIES)}, got {doc.modality!r}"
    if doc.modality == "text":
        if not doc.text or not doc.text.strip():
            return "text: required and non-empty for modality 'text'"
        if len(doc.text) > limits.max_text_chars:
            return f"text: {len(doc.text)} characters exceeds max_text_chars={limits.max_text_chars}"
    elif not encoded and not doc.blob and not doc.uri:
        return "blob/uri: an image needs raw bytes (blob) or a uri"
    if doc.tags is not None:
        try:
            size = len(json.dumps(doc.tags))
        except (TypeError, ValueError) as err:
            return f"tags: not JSON-serialisable ({err})"
        if size > limits.max_tags_bytes:
            return f"tags: {size} bytes exceeds max_tags_bytes={limits.max_tags_bytes}"
    return None


def query_error(doc: ContentDoc, limits: ContentLimits) -> Optional[str]:
    """Why a query document cannot be searched, or None."""
    if doc.blob or doc.uri:
        return None
    if not doc.text or not doc.text.strip():
        return "text/uri/blob: a query needs a non-empty text or an image"
    if len(doc.text) > limits.max_text_chars:
        return f"text: {len(doc.text)} characters exceeds max_text_chars={limits.max_text_chars}"
    return None


def mark_error(doc: ContentDoc, message: str) -> None:
    doc.status, doc.error = "error", message
