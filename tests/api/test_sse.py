"""Server-sent events framing (pure logic)."""

from poly_ray.api import sse


def test_sse_event_framing():
    assert sse.event(" the") == b"data:  the\n\n"
    assert sse.event("a\nb") == b"data: a\ndata: b\n\n"
    assert sse.event("\n") == b"data: \ndata: \n\n"
    assert sse.json_event("done", {"a": 1}) == b'event: done\ndata: {"a":1}\n\n'
