"""Who a request acts as, and what that user may do at each endpoint.

With authentication on, the gateway checks the token and writes the user into the
request parameters under ``AUTH.parameter``, after dropping any value a client sent
there; the executors call these functions, one per endpoint, and never trust an
``owner`` or ``username`` over it. An admin acts for anyone (``owner``/``username``
as given). With authentication off they change nothing: owners are what clients say.

The gateway also signs the user with a key drawn at every start (HMAC-SHA256, shared
through the Flow's environment): executors listen on loopback only, and even a local
process that reached them could not name a user it has no signature for.

The indexer handles one request at a time (Jina's default), so checking owners and
then writing cannot interleave with another request's write.
"""
from __future__ import annotations

import hmac
from typing import Any, Callable, Mapping, Optional, Sequence

from crossmodal.api.schemas import ContentDoc
from crossmodal.api.validate import mark_error
from crossmodal.index.users import User, signature, signing_key
from crossmodal.settings import AUTH

OwnersOf = Callable[[Sequence[str]], Mapping[str, str]]  # id -> owner of the stored ones


def flag(value: Any) -> bool:
    """An executor's ``auth`` argument, which arrives from the Flow YAML as text."""
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


def acting_user(parameters: Mapping[str, Any], auth: bool) -> Optional[User]:
    """The authenticated user, None when authentication is off.

    With it on, a request without a user can only come from a gateway that did not
    authenticate it: refused rather than served as nobody.
    """
    if not auth:
        return None
    value = (parameters or {}).get(AUTH.parameter)
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str) or not value["name"]:
        raise PermissionError("unauthenticated: the request carries no authenticated user")
    user, key, sig = User(value["name"], value.get("admin") is True), signing_key(), value.get("sig")
    if not key or not isinstance(sig, str) or not hmac.compare_digest(sig, signature(user.name, user.admin, key)):
        raise PermissionError("unauthenticated: the request's user is not signed by this service's gateway")
    return user


def as_user(parameters: Mapping[str, Any], auth: bool) -> dict:
    """/search and /recommend: ``username`` is the signed-in user's (an admin's is kept as given)."""
    user = acting_user(parameters, auth)
    if user is None or user.admin:
        return dict(parameters or {})
    return {**parameters, "username": user.name}


def check_index(docs: Sequence[ContentDoc], parameters: Mapping[str, Any], auth: bool, owners_of: OwnersOf) -> None:
    """/index: content is stored as the signed-in user, and never over another user's id.

    ``owner`` stays required (the encoders check it first); one that is not the
    user, or an id that another user owns, is an error on that document only.
    """
    user = acting_user(parameters, auth)
    if user is None or user.admin:
        return
    stored = owners_of([d.id for d in docs if d.error is None])
    for doc in docs:
        if doc.error is not None:
            continue
        if doc.owner != user.name:
            mark_error(doc, f"owner: {doc.owner!r} differs from the signed-in user {user.name!r}")
        elif stored.get(doc.id, user.name) != user.name:
            mark_error(doc, f"id: forbidden, {doc.id!r} belongs to another user")


def deletable(docs: Sequence[ContentDoc], parameters: Mapping[str, Any], auth: bool,
              owners_of: OwnersOf) -> list[ContentDoc]:
    """/delete: the documents this user may delete; another user's ids answer ``forbidden``."""
    user = acting_user(parameters, auth)
    if user is None or user.admin:
        return list(docs)
    stored = owners_of([d.id for d in docs])
    allowed = []
    for doc in docs:
        if stored.get(doc.id, user.name) == user.name:
            allowed.append(doc)
        else:
            doc.status, doc.error = "forbidden", f"id: {doc.id!r} belongs to another user"
    return allowed
