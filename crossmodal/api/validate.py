"""Why a document cannot be indexed or searched, naming the field; checked where it enters.

Per-document errors never fail a request: the document carries ``status: error``
and the message, and its siblings go on.
"""
from __future__ import annotations

import json
from typing import Optional

from crossmodal.api.schemas import ContentDoc
from crossmodal.settings import LIMITS, MODALITIES, Limits


def content_error(doc: ContentDoc, limits: Limits = LIMITS, encoded: bool = False) -> Optional[str]:
    """Why a document cannot be indexed, or None when it can.

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


def query_error(doc: ContentDoc, limits: Limits = LIMITS) -> Optional[str]:
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
