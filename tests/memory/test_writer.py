"""A memory's writer over a real Qdrant Edge shard: uploads as transactions by id.

Two uploads of the same document race; whatever order their writes, commits and
rollbacks come in, a failure in one never deletes what the other reported stored.
"""

import pytest

from poly_ray.memory.vectorstore import EdgeStore, Sparse, StoredPoint
from poly_ray.memory.writer import Writer


def points(document: str, n: int = 3) -> list[StoredPoint]:
    return [
        StoredPoint(f"{abs(hash(document)) % 10**8:08d}-0000-0000-0000-{i:012d}", [1.0, float(i), 0, 0], Sparse([i], [1.0]),
                    {"document": document, "chunk": i})
        for i in range(n)
    ]


@pytest.fixture
def writer(tmp_path):
    store = EdgeStore("m", tmp_path / "s", 4)
    w = Writer(store)
    w.store = store
    yield w
    w.close()
    store.close()


def test_a_rollback_takes_back_only_its_own_documents(writer):
    assert writer.put("a", "kept", points("kept"))
    writer.commit("a")
    assert writer.put("b", "mine", points("mine"))
    assert not writer.put("b", "kept", points("kept"))  # there already: reported, not written
    writer.rollback("b")
    assert writer.store.count("kept") == 3 and writer.store.count("mine") == 0
    assert writer.in_flight() == {}


def test_the_other_upload_commits_first(writer):
    assert writer.put("b", "x", points("x"))  # b writes x, goes on with another document
    assert not writer.put("a", "x", points("x"))  # a finds x and reports it stored
    writer.commit("a")
    writer.rollback("b")  # b fails later: x is a's now
    assert writer.store.count("x") == 3 and writer.store.count("x", upload="a") == 3


def test_the_failing_upload_rolls_back_first(writer):
    assert writer.put("b", "x", points("x"))
    assert not writer.put("a", "x", points("x"))
    writer.rollback("b")  # a is still in flight and reports x: handed over, not deleted
    assert writer.store.count("x", upload="a") == 3
    writer.commit("a")
    assert writer.store.count("x") == 3 and writer.in_flight() == {}


def test_both_fail_and_nothing_is_left(writer):
    assert writer.put("b", "x", points("x"))
    assert not writer.put("a", "x", points("x"))
    writer.rollback("b")
    writer.rollback("a")
    assert writer.store.count() == 0 and writer.in_flight() == {}


def test_a_restarted_upload_owns_what_it_wrote_before(tmp_path):
    """After a restart the writer's memory is gone; the points' upload id is not."""
    store = EdgeStore("m", tmp_path / "s", 4)
    before = Writer(store)
    assert before.put("job-1", "x", points("x"))
    before.close()  # the process ended before the upload finished
    again = Writer(store)
    assert not again.put("job-1", "x", points("x"))  # resumed: found, and still its own
    assert not again.put("job-2", "x", points("x"))
    again.rollback("job-1")  # handed over to job-2, which reports it too
    assert store.count("x", upload="job-2") == 3
    again.rollback("job-2")
    assert store.count() == 0
    again.close()
    store.close()


def test_a_user_delete_ends_the_claims(writer):
    writer.put("a", "x", points("x"))
    assert writer.delete("x") == 3 and writer.delete("x") == 0
    writer.rollback("a")
    assert writer.store.count() == 0 and writer.in_flight() == {}


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
@pytest.mark.parametrize("kind", ["edge", "qdrant"])
def test_a_search_sees_documents_and_its_owners_prompts_only(tmp_path, kind):
    from qdrant_client import QdrantClient

    from poly_ray.memory.vectorstore import QdrantServerStore, Search

    store = EdgeStore("m", tmp_path / "s", 4) if kind == "edge" else QdrantServerStore("m", QdrantClient(location=":memory:"), "m", 4)
    doc, ann, bob = points("doc", 1), points("ann", 1), points("bob", 1)
    from dataclasses import replace

    store.upsert([*doc, replace(ann[0], payload={**ann[0].payload, "owner": "key:ann"}),
                  replace(bob[0], payload={**bob[0].payload, "owner": "key:bob"})])

    def seen(owner):
        found = store.search(Search([1.0, 0, 0, 0], None, 10, mode="dense", owner=owner))
        return sorted(p["document"] for _, p in found), sorted(p["document"] for p in store.first_chunks(owner))

    assert seen("key:ann") == (["ann", "doc"], ["ann", "doc"])
    assert seen("key:bob") == (["bob", "doc"], ["bob", "doc"])
    assert seen(None) == (["doc"], ["doc"])
    store.close()
