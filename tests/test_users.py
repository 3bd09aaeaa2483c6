"""Users and tokens (crossmodal/index/users.py) and the per-endpoint rules (crossmodal/api/identity.py)."""
import sqlite3

import pytest

from crossmodal.api import identity
from crossmodal.api.schemas import ContentDoc
from crossmodal.index.store import DB_NAME
from crossmodal.index.users import KEY_ENV, User, UserError, Users, signature
from crossmodal.settings import AUTH


def test_token_verifies_and_only_a_salted_hash_is_stored(tmp_path):
    users = Users(tmp_path)
    token = users.add("alice")
    admin_token = users.add("root", admin=True)
    assert users.verify(token) == User("alice", False)
    assert users.verify(admin_token) == User("root", True)
    rows = sqlite3.connect(tmp_path / DB_NAME).execute("SELECT * FROM users").fetchall()
    assert len(rows) == 2
    secret = token.split(".", 1)[1]
    for row in rows:
        assert all(secret not in str(value) and secret.encode() not in (value if isinstance(value, bytes) else b"")
                   for value in row)
    salts = {row[3] for row in rows}
    assert len(salts) == 2  # one salt per user


@pytest.mark.parametrize("bad", [None, "", "Bearer x", "cm_0123456789abcdef.", "cm_0123456789abcdef." + "A" * 43,
                                 "cm_zz.short", 42])
def test_wrong_or_malformed_tokens_are_refused(tmp_path, bad):
    users = Users(tmp_path)
    users.add("alice")
    assert users.verify(bad) is None


def test_a_token_with_a_known_id_but_another_secret_is_refused(tmp_path):
    users = Users(tmp_path)
    token = users.add("alice")
    token_id, secret = token.split(".", 1)
    assert users.verify(f"{token_id}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}") is None


def test_duplicate_and_invalid_names_are_errors(tmp_path):
    users = Users(tmp_path)
    users.add("alice")
    with pytest.raises(UserError, match="already exists"):
        users.add("alice")
    for name in ["", "a b", "x" * (AUTH.max_name_chars + 1), "semi;colon"]:
        with pytest.raises(UserError, match="user name"):
            users.add(name)


def test_a_rotated_token_replaces_the_old_one_and_a_removed_user_has_none(tmp_path):
    users = Users(tmp_path)
    old = users.add("root", admin=True)
    other = users.add("alice")
    new = users.rotate("root")
    assert users.verify(old) is None and users.verify(new) == User("root", True)  # still an admin
    assert users.holder(old) is None and users.holder(new) == User("root", True)
    users.remove("root")
    assert users.verify(new) is None and users.holder(new) is None
    assert users.verify(other) == User("alice")  # nobody else is touched
    for change in (users.rotate, users.remove):
        with pytest.raises(UserError, match="'root' does not exist"):
            change("root")
    assert users.add("root") != new  # the name is free again, with a token of its own


def test_names_are_ascii_and_unique_whatever_their_case(tmp_path):
    """Names are shown as owners: a Cyrillic 'а' or another case would pass for someone else."""
    users = Users(tmp_path)
    users.add("alice")
    for lookalike in ("ALICE", "Alice"):
        with pytest.raises(UserError, match="'alice' already exists .* differ in case only"):
            users.add(lookalike)
    for foreign in ("\u0430lice", "\uff41lice", "caf\u00e9", "-", "..", ".hidden"):
        with pytest.raises(UserError, match="ASCII letters"):
            users.add(foreign)
    assert users.count() == 1
    for change in (users.rotate, users.remove):  # the exact name is needed, and suggested
        with pytest.raises(UserError, match="'ALICE' does not exist .*did you mean 'alice'"):
            change("ALICE")


def test_user_tasks_refuse_before_creating_anything(tmp_path, capsys):
    import app

    missing = tmp_path / "typo"
    assert app.main(["-t", "deluser", "bob", "--workspace", str(missing)]) == 2
    assert app.main(["-t", "newtoken", "bob", "--workspace", str(missing)]) == 2
    assert not missing.exists()  # a mistyped --workspace is not created by a failed command
    assert app.main(["-t", "adduser", "--workspace", str(tmp_path)]) == 2
    file = tmp_path / "a-file"
    file.write_text("x")
    assert app.main(["-t", "adduser", "bob", "--workspace", str(file)]) == 2
    assert app.main(["-t", "adduser", "bob", "--workspace", str(tmp_path)]) == 0
    assert app.main(["-t", "newtoken", "bob", "--admin", "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("--workspace: no workspace at") == 2 and "needs a NAME" in err
    assert f"--workspace: cannot use {file}" in err and "--admin applies to -t adduser only" in err


def test_gateway_reads_read_only_and_sees_users_added_later(tmp_path):
    Users(tmp_path).close()
    reader = Users(tmp_path, read_only=True)
    assert reader.count() == 0
    token = Users(tmp_path).add("bob")
    assert reader.verify(token) == User("bob")


KEY = "k" * 64


@pytest.fixture(autouse=True)
def signing_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def _params(name=None, admin=False, **extra):
    user = {"name": name, "admin": admin, "sig": signature(name, admin, KEY.encode())} if name else None
    return {**extra, **({AUTH.parameter: user} if user else {})}


def test_rules_change_nothing_with_auth_off():
    docs = [ContentDoc(id="a", owner="mallory", modality="text", text="x")]
    identity.check_index(docs, {}, False, lambda ids: {"a": "alice"})
    assert docs[0].error is None and docs[0].owner == "mallory"
    assert identity.as_user({"username": "x"}, False) == {"username": "x"}
    assert identity.deletable(docs, {}, False, lambda ids: {"a": "alice"}) == docs


def test_auth_on_without_a_user_is_refused():
    with pytest.raises(PermissionError, match="unauthenticated"):
        identity.as_user({"username": "alice"}, True)
    with pytest.raises(PermissionError):
        identity.check_index([], {AUTH.parameter: "alice"}, True, lambda ids: {})


@pytest.mark.parametrize("forge", [
    lambda p: {**p, "sig": "0" * 64},                          # made-up signature
    lambda p: {**p, "admin": True},                            # promoted after signing
    lambda p: {**p, "name": "bob"},                            # renamed after signing
    lambda p: {k: v for k, v in p.items() if k != "sig"},      # unsigned
])
def test_an_unsigned_or_altered_user_is_refused(forge):
    forged = {AUTH.parameter: forge(_params("alice")[AUTH.parameter])}
    with pytest.raises(PermissionError, match="not signed|no authenticated"):
        identity.acting_user(forged, True)


def test_without_a_key_nobody_is_accepted(monkeypatch):
    params = _params("alice")
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(PermissionError):
        identity.acting_user(params, True)


def test_index_rules_for_a_user():
    stored = {"alices": "alice", "bobs": "bob"}
    docs = [ContentDoc(id="new", owner="alice", modality="text", text="x"),  # new id
            ContentDoc(id="alices", owner="alice", modality="text", text="x"),  # own id: update
            ContentDoc(id="bobs", owner="alice", modality="text", text="x"),    # another's id
            ContentDoc(id="other", owner="bob", modality="text", text="x")]     # posting as another
    identity.check_index(docs, _params("alice"), True, lambda ids: {i: stored[i] for i in ids if i in stored})
    assert [d.error is None for d in docs] == [True, True, False, False]
    assert "belongs to another user" in docs[2].error and "differs" in docs[3].error


def test_admin_acts_for_anyone():
    docs = [ContentDoc(id="bobs", owner="bob", modality="text", text="x")]
    identity.check_index(docs, _params("root", admin=True), True, lambda ids: {"bobs": "bob"})
    assert docs[0].error is None
    assert identity.as_user(_params("root", True, username="bob"), True)["username"] == "bob"
    assert identity.deletable(docs, _params("root", True), True, lambda ids: {"bobs": "bob"}) == docs


def test_search_and_delete_rules_for_a_user():
    assert identity.as_user(_params("alice", username="bob"), True)["username"] == "alice"
    docs = [ContentDoc(id="mine"), ContentDoc(id="bobs"), ContentDoc(id="unknown")]
    allowed = identity.deletable(docs, _params("alice"), True, lambda ids: {"mine": "alice", "bobs": "bob"})
    assert [d.id for d in allowed] == ["mine", "unknown"]
    assert docs[1].status == "forbidden"


def test_store_owners_of_ids_in_chunks(tmp_path):
    import numpy as np

    from crossmodal.index.store import Item, Store

    store = Store(tmp_path)
    store.upsert([Item(f"id-{i}", "alice" if i % 2 else "bob", "text", np.zeros(4, np.float32), text="x")
                  for i in range(1200)])
    owners = store.owners([f"id-{i}" for i in range(1200)] + ["unknown", "id-1"])
    assert len(owners) == 1200 and owners["id-1"] == "alice" and owners["id-2"] == "bob" and "unknown" not in owners
    # the users table lives in the same file without touching the store's tables or generation
    generation = store.generation
    Users(tmp_path).add("carol")
    assert store.generation == generation and store.count() == 1200
