"""The lease book behind max_concurrent and max_streams_per_credential (no Ray)."""

import pytest

from poly_ray.api.limits import Lease, LeaseBook, StreamLimits
from poly_ray.errors import Busy, TooManyStreams


def test_a_credential_gets_its_places_and_then_a_429_naming_the_key():
    book = LeaseBook(limit=10, per_credential=2)
    book.take("a", "1", Lease("k", True))
    book.take("b", "2", Lease("k", True))  # another ingress replica: the same book
    with pytest.raises(TooManyStreams, match="max_streams_per_credential"):
        book.take("a", "3", Lease("k", True))
    book.take("a", "4", Lease("other", True))
    book.release("b", "2")
    book.take("a", "5", Lease("k", True))


def test_the_server_wide_limit_is_a_503_and_chats_do_not_count_against_it():
    book = LeaseBook(limit=1, per_credential=5)
    book.take("a", "1", Lease(None, True))
    with pytest.raises(Busy, match="max_concurrent"):
        book.take("b", "2", Lease("k", True))
    book.take("b", "3", Lease("k", False))  # an open WebSocket chat: its credential's place only
    assert (book.used, dict(book.by_credential)) == (1, {"k": 1})


def test_a_release_is_idempotent_and_an_unknown_one_is_ignored():
    book = LeaseBook(limit=2, per_credential=2)
    book.take("a", "1", Lease("k", True))
    book.release("a", "1")
    book.release("a", "1")
    book.release("ghost", "9")
    assert (book.used, dict(book.by_credential)) == (0, {})


def test_renewal_makes_good_a_lost_release_and_teaches_a_restarted_book():
    book = LeaseBook(limit=5, per_credential=5, expire_s=60)
    book.take("a", "1", Lease("k", True))
    book.take("a", "2", Lease("k", True))
    book.renew("a", {"2": Lease("k", True)})  # the release of "1" never arrived
    assert (book.used, book.by_credential["k"]) == (1, 1)
    fresh = LeaseBook(limit=5, per_credential=5, expire_s=60)  # the coordinator restarted
    fresh.renew("a", {"2": Lease("k", True)})
    fresh.renew("b", {"7": Lease("j", False)})
    assert (fresh.used, dict(fresh.by_credential)) == (1, {"k": 1, "j": 1})


def test_a_holder_that_stops_renewing_has_its_places_freed(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("poly_ray.api.limits.time.monotonic", lambda: clock[0])
    book = LeaseBook(limit=1, per_credential=1, expire_s=20)
    book.take("dead", "1", Lease("k", True))
    clock[0] += 10
    with pytest.raises(TooManyStreams):
        book.take("live", "2", Lease("k", True))
    clock[0] += 11  # the replica that held it died 21 s ago
    book.take("live", "3", Lease("k", True))
    assert book.used == 1


async def test_stream_limits_release_once_and_hold_across_their_context():
    limits = StreamLimits.local(limit=1, per_credential=1)
    release = await limits.take("k")
    with pytest.raises(TooManyStreams):
        await limits.take("k")
    release()
    release()
    async with limits.held("k"):
        with pytest.raises(Busy):
            await limits.take(None)
    assert (await limits.take(None))


def test_a_take_that_arrives_after_its_renewal_counts_once():
    book = LeaseBook(limit=5, per_credential=5, expire_s=60)
    book.renew("a", {"1": Lease("k", True)})  # sent while the take was on its way
    book.take("a", "1", Lease("k", True))
    assert (book.used, book.by_credential["k"]) == (1, 1)
