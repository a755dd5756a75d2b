"""The state store: owner isolation, pagination, migrations from an old file, and
the restart sweep that ends anything left in progress."""

import json
import sqlite3

import pytest

from poly_ray.config import Config, state_path
from poly_ray.errors import BadRequest, ConfigError, NotFound, QuotaExceeded
from poly_ray.state import SCHEMA_VERSION, Store, open_store
from poly_ray.state.migrations import MIGRATIONS, migrate
from poly_ray.state.store import RESTART_REASON, Quota, new_id


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state.sqlite3")
    yield s
    s.close()


def test_opens_in_wal_mode_at_the_current_version(store):
    assert store.version == SCHEMA_VERSION
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_lives_under_state_dir(tmp_path):
    cfg = Config(state_dir=tmp_path / "data")
    s = open_store(state_path(cfg, "state"))
    assert s.path == tmp_path / "data" / "state" / "state.sqlite3" and s.path.exists()
    s.close()


def test_another_owner_reads_like_a_missing_id(store):
    store.create("alice", "response", {"id": "resp_1", "status": "completed"})
    assert store.get("alice", "response", "resp_1")["status"] == "completed"
    with pytest.raises(NotFound) as missing:
        store.get("alice", "response", "resp_nope")
    with pytest.raises(NotFound) as foreign:
        store.get("bob", "response", "resp_1")
    assert str(foreign.value) == "No response found with id 'resp_1'."
    assert type(missing.value) is type(foreign.value)
    with pytest.raises(NotFound):
        store.update("bob", "response", "resp_1", {"status": "cancelled"})
    with pytest.raises(NotFound):
        store.delete("bob", "response", "resp_1")
    with pytest.raises(NotFound):  # the kind is part of the identity too
        store.get("alice", "thread", "resp_1")
    assert store.list("bob", "response").data == []


def test_update_merges_and_tracks_status(store):
    store.create("a", "run", {"id": "run_1", "status": "queued", "model": "m"})
    out = store.update("a", "run", "run_1", {"status": "completed"})
    assert out == store.get("a", "run", "run_1") and out["model"] == "m" and out["status"] == "completed"
    assert store._db.execute("SELECT status FROM objects WHERE id = 'run_1'").fetchone()[0] == "completed"


def test_duplicate_id_is_a_bad_request(store):
    store.create("a", "item", {"id": "msg_1"})
    with pytest.raises(BadRequest):
        store.create("a", "item", {"id": "msg_1"})


def test_pagination_limit_after_order(store):
    for owner, conversation in [("a", "conv"), ("a", "other"), ("b", "conv_b")]:
        store.create(owner, "conversation", {"id": conversation})
    ids = [store.create("a", "item", {"id": f"it_{i}"}, parent="conv")["id"] for i in range(5)]
    store.create("a", "item", {"id": "elsewhere"}, parent="other")
    store.create("b", "item", {"id": "bobs"}, parent="conv_b")
    asc = store.list("a", "item", parent="conv", order="asc", limit=2)
    assert [o["id"] for o in asc.data] == ids[:2] and asc.has_more
    nxt = store.list("a", "item", parent="conv", order="asc", limit=2, after=asc.data[-1]["id"])
    assert [o["id"] for o in nxt.data] == ids[2:4] and nxt.has_more
    last = store.list("a", "item", parent="conv", order="asc", limit=2, after="it_3")
    assert [o["id"] for o in last.data] == ["it_4"] and not last.has_more
    desc = store.list("a", "item", parent="conv", limit=3)
    assert [o["id"] for o in desc.data] == ids[::-1][:3]
    assert [o["id"] for o in store.list("a", "item", parent="conv", after="it_2").data] == ["it_1", "it_0"]
    body = desc.to_body()
    assert body["object"] == "list" and body["first_id"] == "it_4" and body["last_id"] == "it_2" and body["has_more"]
    assert [o["id"] for o in store.all("a", "item", parent="conv")] == ids


@pytest.mark.parametrize("args, field", [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "up"}, "order"), ({"after": "nope"}, "after"),
])
def test_bad_listing_arguments_name_the_field(store, args, field):
    with pytest.raises(BadRequest) as err:
        store.list("a", "item", **args)
    assert str(err.value).startswith(field + ":")


def test_delete_cascades_to_children(store):
    store.create("a", "thread", {"id": "thread_1"})
    store.create("a", "message", {"id": "msg_1"}, parent="thread_1")
    store.create("a", "run", {"id": "run_1", "status": "completed"}, parent="thread_1")
    store.create("a", "step", {"id": "step_1"}, parent="run_1")
    store.create("a", "thread", {"id": "thread_2"})
    store.create("a", "message", {"id": "msg_2"}, parent="thread_2")
    store.delete("a", "thread", "thread_1")
    assert [r[0] for r in store._db.execute("SELECT id FROM objects ORDER BY seq")] == ["thread_2", "msg_2"]


def test_a_child_needs_its_parent(store):
    """N15: a run writing into a thread deleted meanwhile left rows no one could list or delete."""
    with pytest.raises(NotFound, match="No object found with id 'thread_gone' to hold this message"):
        store.create("a", "message", {"id": "msg_1"}, parent="thread_gone")
    store.create("a", "thread", {"id": "thread_1"})
    with pytest.raises(NotFound):  # another owner's thread reads as missing
        store.create("b", "message", {"id": "msg_1"}, parent="thread_1")
    assert store.create("a", "message", {"id": "msg_1"}, parent="thread_1")["id"] == "msg_1"


def test_a_parent_with_more_children_than_sqlite_binds_is_deleted(store):
    """N15: the children were bound as IN (?, ...): past the variable limit (32,766 on stock
    SQLite, 250,000 on Debian's) the parent could not be deleted."""
    store._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # as a small build would have it
    store.create("a", "thread", {"id": "thread_1"})
    store.create("b", "thread", {"id": "thread_b"})
    store.create("b", "message", {"id": "msg_b"}, parent="thread_b")  # another owner's rows stay
    n = 5000
    store._db.executemany("INSERT INTO objects (id, owner, kind, parent, created_at, status, body) "
                          "VALUES (?, 'a', 'message', 'thread_1', 0, NULL, '{}')", ((f"msg_{i}",) for i in range(n)))
    store.delete("a", "thread", "thread_1")
    assert [r[0] for r in store._db.execute("SELECT id FROM objects ORDER BY seq")] == ["thread_b", "msg_b"]


def test_restart_ends_unfinished_objects_failed(tmp_path):
    path = tmp_path / "state.sqlite3"
    s = Store(path)
    s.create("a", "response", {"id": "resp_run", "status": "in_progress", "error": None})
    s.create("a", "thread", {"id": "thread_1"})
    s.create("a", "run", {"id": "run_q", "status": "queued"}, parent="thread_1")
    s.create("a", "response", {"id": "resp_done", "status": "completed", "error": None})
    s.close()
    again = Store(path)
    assert again.swept == 2
    resp = again.get("a", "response", "resp_run")
    assert resp["status"] == "failed" and resp["error"] == {"code": "server_error", "message": RESTART_REASON}
    run = again.get("a", "run", "run_q")
    assert run["status"] == "failed" and run["last_error"]["message"] == RESTART_REASON and run["failed_at"]
    assert again.get("a", "response", "resp_done")["status"] == "completed"
    again.close()
    assert Store(path).swept == 0  # a second restart finds nothing left


def test_migrates_a_v1_file(tmp_path):
    """A file written by a v1 server (no status column) opens, keeps its objects,
    gets the status column filled in from the bodies, and is swept."""
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(str(path), isolation_level=None)
    assert migrate(db, target=1) == 1
    for oid, status in (("resp_old", "completed"), ("resp_stuck", "in_progress")):
        db.execute(
            "INSERT INTO objects (id, owner, kind, parent, created_at, body) VALUES (?, 'a', 'response', NULL, 1, ?)",
            (oid, json.dumps({"id": oid, "status": status, "created_at": 1})),
        )
    db.close()
    s = Store(path)
    assert s.version == SCHEMA_VERSION == MIGRATIONS[-1][0]
    versions = [r[0] for r in s._db.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [m[0] for m in MIGRATIONS]
    assert s.get("a", "response", "resp_old")["status"] == "completed"
    assert s.get("a", "response", "resp_stuck")["status"] == "failed" and s.swept == 1
    assert [o["id"] for o in s.list("a", "response", order="asc").data] == ["resp_old", "resp_stuck"]


def test_refuses_a_newer_file(tmp_path):
    path = tmp_path / "state.sqlite3"
    Store(path).close()
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    db.close()
    with pytest.raises(ConfigError, match="^state_dir: .*newer"):
        Store(path)


def test_a_file_that_is_not_a_database_names_state_dir(tmp_path):
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="^state_dir: cannot open"):
        Store(path)


def test_new_ids_are_prefixed_and_unique():
    ids = {new_id("resp") for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("resp_") for i in ids)


def test_a_conditional_update_leaves_an_object_in_another_status(store):
    store.create("alice", "response", {"id": "resp_1", "status": "in_progress"})
    store.update("alice", "response", "resp_1", {"status": "cancelled"}, only_if=("queued", "in_progress"))
    late = store.update("alice", "response", "resp_1", {"status": "completed", "output": ["x"]},
                        only_if=("queued", "in_progress"))
    assert late["status"] == "cancelled" and "output" not in late
    assert store.get("alice", "response", "resp_1")["status"] == "cancelled"


def test_restart_ends_a_run_being_written_with_its_message_incomplete(tmp_path):
    path = tmp_path / "state.sqlite3"
    s = Store(path)
    s.create("a", "thread", {"id": "thread_1"})
    s.create("a", "run", {"id": "run_1", "status": "in_progress"}, parent="thread_1")
    s.create("a", "step", {"id": "step_1", "status": "in_progress"}, parent="run_1")
    s.create("a", "message", {"id": "msg_1", "status": "in_progress"}, parent="thread_1")
    s.create("a", "response", {"id": "resp_bg", "status": "queued", "background": True})
    s.close()
    again = Store(path)
    assert again.swept == 4
    assert again.get("a", "run", "run_1")["status"] == "failed"
    assert again.get("a", "step", "step_1")["status"] == "failed"
    message = again.get("a", "message", "msg_1")
    assert message["status"] == "incomplete" and message["incomplete_details"] == {"reason": "run_failed"}
    assert again.get("a", "response", "resp_bg")["status"] == "failed"
    assert again.list("a", "message", parent="thread_1").data[0]["status"] == "incomplete"
    again.close()


def test_an_owner_past_its_quota_is_refused_and_others_are_not(tmp_path):
    """N6: per-owner quotas of objects and bytes, counted across restarts, freed by deletes."""
    store = Store(tmp_path / "s.sqlite3", Quota(objects=3, bytes=600))
    thread = store.create("alice", "thread", {"id": "t1"})["id"]
    store.create("alice", "message", {"id": "m1", "text": "x"}, parent=thread)
    store.create("alice", "message", {"id": "m2", "text": "x"}, parent=thread)
    with pytest.raises(QuotaExceeded, match="stores 3 objects.*max_stored_objects") as err:
        store.create("alice", "message", {"id": "m3"}, parent=thread)
    assert err.value.status == 403
    store.create("bob", "thread", {"id": "t2"})  # another owner has a quota of its own
    with pytest.raises(QuotaExceeded, match="max_stored_bytes"):
        store.update("bob", "thread", "t2", {"metadata": "y" * 600})
    assert "metadata" not in store.get("bob", "thread", "t2")  # nothing half-written
    store.close()

    store = Store(tmp_path / "s.sqlite3", Quota(objects=3, bytes=600))  # usage read back from the file
    with pytest.raises(QuotaExceeded):
        store.create("alice", "thread", {"id": "t3"})
    store.delete("alice", "thread", thread)  # its messages go with it
    for i in range(3):
        store.create("alice", "thread", {"id": f"t{10 + i}"})
    with pytest.raises(QuotaExceeded, match="max_stored_bytes"):
        store.create("bob", "thread", {"id": "t4", "big": "z" * 700})


def test_an_exclusive_create_is_refused_while_the_newest_is_active(store):
    """N15: one active run per thread, decided by the store (one writer for every ingress replica)."""
    store.create("o", "thread", {"id": "t"})
    store.create("o", "run", {"id": "r1", "status": "queued"}, parent="t", exclusive=("queued", "in_progress"))
    with pytest.raises(BadRequest, match=r"t already has an active run \(r1, queued\)"):
        store.create("o", "run", {"id": "r2", "status": "queued"}, parent="t", exclusive=("queued", "in_progress"))
    store.update("o", "run", "r1", {"status": "completed"})
    store.create("o", "run", {"id": "r2", "status": "queued"}, parent="t", exclusive=("queued", "in_progress"))


def test_an_object_still_referred_to_is_hidden_by_a_delete_and_goes_with_the_last_reference(store):
    """N6: a response's input refers to the previous response (``ref``) instead of copying it."""
    store.create("o", "response", {"id": "r1"})
    store.create("o", "response", {"id": "r2"})
    store.create("o", "response_input", {"id": "i2"}, parent="r2", ref="r1")
    store.create("o", "response", {"id": "r3"})
    store.create("o", "response_input", {"id": "i3"}, parent="r3", ref="r2")
    size = store._used("o")[1]
    store.delete("o", "response", "r1")
    store.delete("o", "response", "r2")
    for kind, oid in (("response", "r1"), ("response", "r2"), ("response_input", "i2")):
        with pytest.raises(NotFound):
            store.get("o", kind, oid)
    assert [r["id"] for r in store.list("o", "response").data] == ["r3"]
    assert store._used("o") == [5, size]  # still counted: still stored
    with pytest.raises(NotFound):  # nothing new hangs under a deleted one
        store.create("o", "response_input", {"id": "i9"}, parent="r2")
    with pytest.raises(NotFound, match="No object found with id 'r0' to refer to"):  # nor refers to a gone one
        store.create("o", "response_input", {"id": "i9"}, parent="r3", ref="r0")
    store.delete("o", "response", "r3")  # the last reference: the chain goes with it
    assert store._db.execute("SELECT COUNT(*) FROM objects").fetchone() == (0,) and store._used("o") == [0, 0]


def test_a_chain_reads_what_each_response_saw_and_stops_at_its_bound(store):
    def turn(rid, text, previous=None, outputs=0, output=()):
        store.create("o", "response", {"id": rid, "status": "completed", "output": list(output)})
        link = {"previous": previous, "outputs": outputs} if previous else {}
        store.create("o", "response_input", {"id": "in_" + rid, "items": [text], "chain": "r1", **link},
                     parent=rid, ref=previous)

    turn("r1", "u1")  # still running when r2 continued it: r2 saw none of its output
    turn("r2", "u2", "r1", 0, ["a2"])
    store.update("o", "response", "r1", {"output": ["a1"]})
    turn("r3", "u3", "r2", 1)
    chain = store.chain("o", "r3", 10)
    assert chain.items == ["u1", "u2", "a2", "u3"] and chain.root == "r1" and chain.previous["id"] == "r3"
    assert store.chain("o", "r1", 10).items == ["u1", "a1"]
    with pytest.raises(BadRequest, match="previous_response_id: the chain of 'r3' holds more than 3 items") as err:
        store.chain("o", "r3", 3)
    assert err.value.param == "previous_response_id"
    with pytest.raises(NotFound, match="No response found with id 'r3'"):
        store.chain("other", "r3", 10)
