"""Why a document cannot be indexed or searched, naming the field; checked where it enters.

Per-document errors never fail a request: the document carries ``status: error``
and the message, and its siblings go on.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping, Optional, TypeVar

import numpy as np

from crossmodal.api.schemas import ContentDoc
from crossmodal.settings import LIMITS, MODALITIES, POSTED_AT, Limits

STRING_FIELDS = ("id", "owner", "modality", "text", "uri")
P = TypeVar("P")


class RequestError(ValueError):
    """A client error (bad parameter, unusable request): the gateway answers it with 4xx.

    Jina carries only the exception's class name and message to the gateway, so the
    name itself is the contract (``gateway.CLIENT_ERRORS``).
    """


def client_params(parse: Callable[[Mapping[str, Any]], P], parameters: Mapping[str, Any]) -> P:
    """Run a ``params.parse_*`` function; its errors are the client's (HTTP 422, not 500)."""
    try:
        return parse(parameters)
    except ValueError as err:
        raise RequestError(str(err)) from None


def string_error(name: str, value: Any) -> Optional[str]:
    """Strings are stored in SQLite and sent as protobuf/JSON: valid Unicode, no NUL."""
    if not isinstance(value, str):
        return None
    if "\x00" in value:
        return f"{name}: contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"{name}: not valid Unicode ({err.reason} at position {err.start})"
    return None


def shown(text: str) -> str:
    """``text`` as an error message can carry it: a lone surrogate or a NUL in a client's tag
    key, echoed as is, would make the error itself impossible to send."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def tags_error(tags: Any, limits: Limits = LIMITS) -> Optional[str]:
    """Why ``tags`` cannot be stored and returned in every later response, or None.

    Walks iteratively and stops at the first limit, so a hostile value costs at most
    ``max_tags_keys`` steps here (its size was already bounded by the request body).
    """
    if tags is None:
        return None
    if not isinstance(tags, dict):
        return f"tags: must be a JSON object, got {type(tags).__name__}"
    keys, stack = 0, [(tags, 1, "tags")]
    while stack:
        value, depth, path = stack.pop()
        if depth > limits.max_tags_depth:
            return f"tags: nested deeper than max_tags_depth={limits.max_tags_depth} at {path}"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            keys += 1
            if keys > limits.max_tags_keys:
                return f"tags: more than max_tags_keys={limits.max_tags_keys} keys and items"
            where = f"{path}.{shown(key)}" if isinstance(value, dict) else f"{path}[{key}]"
            error = string_error(f"{where} (key)", key) or string_error(where, child)
            if error:
                return error
            if isinstance(child, float) and not math.isfinite(child):
                return f"{where}: {child} is not a JSON number"
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1, where))
    try:
        size = len(json.dumps(tags, allow_nan=False).encode())
    except (TypeError, ValueError) as err:
        return f"tags: not JSON-serialisable ({err})"
    if size > limits.max_tags_bytes:
        return f"tags: {size} bytes exceeds max_tags_bytes={limits.max_tags_bytes}"
    return None


def strings_error(doc: ContentDoc, limits: Limits = LIMITS) -> Optional[str]:
    """The first string field (or tag) of a document that cannot be stored or sent back."""
    for name in STRING_FIELDS:
        error = string_error(name, getattr(doc, name, None))
        if error:
            return error
    return tags_error(doc.tags, limits)


def embedding_error(embedding: Any, dim: int, limits: Limits = LIMITS) -> Optional[str]:
    """Only unit vectors of the model's dimension are stored: anything else would rank
    wrongly in every search (a 1e30 vector scores 1e30 against every query)."""
    if embedding is None:
        return "embedding: missing (no encoder handled this document)"
    try:
        vector = np.asarray(embedding, dtype=np.float32)
    except (TypeError, ValueError) as err:
        return f"embedding: not a numeric vector ({err})"
    if vector.shape != (dim,):
        return f"embedding: shape {vector.shape} != ({dim},)"
    if not np.isfinite(vector).all():
        return "embedding: contains NaN or infinity"
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if abs(norm - 1.0) > limits.embedding_norm_tolerance:
        return f"embedding: norm {norm:.6g} is not 1 (encoders produce unit vectors)"
    return None


def id_required(limits: Limits = LIMITS) -> str:
    return f"id: required, a non-empty string of at most {limits.max_id_chars} characters"


def id_error(doc: ContentDoc, limits: Limits = LIMITS) -> Optional[str]:
    if not doc.id or not isinstance(doc.id, str) or len(doc.id) > limits.max_id_chars:
        return id_required(limits)
    return None


def content_error(doc: ContentDoc, limits: Limits = LIMITS, encoded: bool = False) -> Optional[str]:
    """Why a document cannot be indexed, or None when it can.

    ``encoded``: the image bytes were already consumed by the encoder upstream.
    """
    error = id_error(doc, limits) or strings_error(doc, limits)
    if error:
        return error
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
    return None


def query_error(doc: ContentDoc, limits: Limits = LIMITS) -> Optional[str]:
    """Why a query document cannot be searched, or None."""
    error = strings_error(doc, limits)
    if error:
        return error
    if doc.blob or doc.uri:
        return None
    if not doc.text or not doc.text.strip():
        return "text/uri/blob: a query needs a non-empty text or an image"
    if len(doc.text) > limits.max_text_chars:
        return f"text: {len(doc.text)} characters exceeds max_text_chars={limits.max_text_chars}"
    return None


def mark_error(doc: ContentDoc, message: str) -> None:
    doc.status, doc.error = "error", message


def posted_at(parameters: Optional[Mapping[str, Any]]) -> Optional[float]:
    """The posting time the gateway stamped on an /index request, or None (then the indexer's
    clock): a finite number of seconds since the epoch."""
    value = (parameters or {}).get(POSTED_AT)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None
