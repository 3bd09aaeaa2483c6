"""The gateway's HTTP answers, rendered once, from the protobuf the executors sent.

Jina's HTTP route returns ``response.to_dict()``, which FastAPI then validates against the
endpoint's output model, rebuilding every document and match, and dumps again; the gateway
already skipped that pass (``json_answer``: ~4 ms of CPU for a 10-result query). Reading the
answer still made docarray parse every document and match from protobuf into pydantic
models, validating each field, only to turn them back into dicts: ~1.6 ms of the gateway's
~9 ms of CPU for a 20-result query. The JSON is now built straight from the protobuf wherever
every value has its field's declared type (what the executors' validated documents write);
anything else (arrays, bytes, a value pydantic would coerce, a missing id) is parsed by
docarray as before. Either way the body is the one FastAPI would have sent
(tests/test_integrity.py).
"""
from __future__ import annotations

import typing
from functools import cache
from typing import Any, Optional

from docarray import BaseDoc, DocList
from docarray.base_doc.docarray_response import DocArrayResponse
from docarray.typing import ID

_SCALAR_KINDS = {str: "text", int: "integer", float: "float", bool: "boolean", dict: "dict"}


class _Unrendered(Exception):
    """A value only docarray's parse renders faithfully."""


def json_answer(response, docs: Optional[DocList] = None, doc_type: Optional[type] = None) -> DocArrayResponse:
    """The JSON body of Jina's HTTP route for ``response``: from ``docs``, else from its protobuf
    (read as ``doc_type``), else from its parsed documents."""
    header = response.header
    data = _json_ready(docs) if docs is not None else _docs_json(response, doc_type)
    return DocArrayResponse({"data": data, "parameters": response.parameters,
                             "header": {"requestId": header.request_id or None,
                                        "targetExecutor": header.target_executor
                                        if header.HasField("target_executor") else None}})


def _docs_json(response, doc_type: Optional[type]) -> list:
    content = response.proto_with_data.data
    if (doc_type is not None and response.data._loaded_doc_array is None  # parsed: may have changed
            and content.WhichOneof("documents") == "docs"):
        try:
            return [_doc_json(doc, doc_type) for doc in content.docs.docs]
        except _Unrendered:
            pass
    return _json_ready(response.docs)


def _doc_json(doc, doc_type: type) -> dict:
    data, out = doc.data, {}
    for name, kind, inner, field in _layout(doc_type):
        if name in data:
            out[name] = _node_json(data[name], kind, inner, field.allow_none)
        elif name == "id":
            raise _Unrendered("a document without an id gets a random one")
        else:
            out[name] = _json_ready(field.get_default())
    return out


def _node_json(node, kind: Optional[str], inner: Optional[type], nullable: bool) -> Any:
    content = node.WhichOneof("content")
    if content is None:
        if nullable:
            return None
        raise _Unrendered("null for a field that cannot be null")
    tagged = node.type if node.WhichOneof("docarray_type") is not None else None
    if kind in ("id", "text") and content == "text" and tagged == "id":  # Jina's models type ids as str
        return node.text
    if kind == "any":
        return _any_json(node)
    if tagged is not None or kind is None:
        raise _Unrendered(tagged or content)
    if kind == "doc" and content == "doc":
        return _doc_json(node.doc, inner)
    if kind == "doc_array" and content == "doc_array":
        return [_doc_json(item, inner) for item in node.doc_array.docs]
    if kind == "dict" and content == "dict":
        return _any_json(node)
    if kind == "list_text" and content == "list":
        return [_node_json(item, "text", None, False) for item in node.list.data]
    if kind == content and kind in ("text", "integer", "float", "boolean"):
        return getattr(node, content)
    raise _Unrendered(f"{content} for a field of kind {kind}")


def _any_json(node) -> Any:
    """A value inside a ``dict`` field: docarray reads it as it is, without a field type."""
    content = node.WhichOneof("content")
    if node.WhichOneof("docarray_type") is not None:
        raise _Unrendered(node.type)
    if content is None:
        return None
    if content in ("text", "integer", "float", "boolean"):
        return getattr(node, content)
    if content == "dict":
        return {key: _any_json(value) for key, value in node.dict.data.items()}
    if content == "list":
        return [_any_json(item) for item in node.list.data]
    raise _Unrendered(content)


@cache
def _layout(doc_type: type) -> tuple:
    """(name, kind, nested document type, pydantic field) per key, in the order of ``dict()``.

    ``doc_type`` is the HTTP route's output model: not ``ContentDoc`` itself but the model Jina's
    gateway rebuilds from its JSON schema (fields in another order, ``dict`` fields as ``Any``)."""
    rows = []
    for name in _key_order(doc_type):
        field = doc_type.__fields__[name]
        kind, inner = _kind(field.outer_type_)
        rows.append((name, kind, inner, field))
    return tuple(rows)


def _kind(annotation) -> tuple[Optional[str], Optional[type]]:
    if annotation is ID:
        return "id", None
    if annotation is typing.Any:  # what Jina's gateway models make of a dict field
        return "any", None
    if isinstance(annotation, type) and issubclass(annotation, DocList):
        return "doc_array", annotation.doc_type
    if isinstance(annotation, type) and issubclass(annotation, BaseDoc):
        return "doc", annotation
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,):
        return "list_text", None
    return _SCALAR_KINDS.get(annotation), None


def _json_ready(value):
    """Documents as plain dicts, keys in the order FastAPI's validation gives them (documents
    read from protobuf keep the wire's order); orjson writes plain dicts without calling back
    into pydantic for each document (a third of the answer's rendering time)."""
    if isinstance(value, BaseDoc):
        return {name: _json_ready(getattr(value, name)) for name in _key_order(type(value))}
    if isinstance(value, list):  # DocList is a list
        return [_json_ready(item) for item in value]
    return value


@cache
def _key_order(doc_type) -> tuple[str, ...]:
    """The keys of ``doc_type``'s ``dict()``: its fields in order, DocList fields last (docarray)."""
    return tuple(doc_type.construct().dict())
