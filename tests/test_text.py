"""Stop sequences, SSE framing and prompt assembly: pure logic."""

import pytest

from poly_ray.api import sse
from poly_ray.config import TaskConfig
from poly_ray.engine.stops import StopMatcher
from poly_ray.errors import BadRequest
from poly_ray.generation import Segment
from poly_ray.tasks.prompts import assemble, build_request


def feed_all(matcher, pieces):
    return "".join(matcher.feed(p) for p in pieces) + matcher.flush()


def test_stop_across_tokens():
    m = StopMatcher(["\nQuestion:"])
    assert feed_all(m, ["Paris", ".\n", "Quest", "ion:", " more"]) == "Paris."
    assert m.stopped and m.matched == "\nQuestion:"


def test_partial_stop_is_released_when_it_does_not_complete():
    m = StopMatcher(["END"])
    assert m.feed("the E") == "the "
    assert m.feed("N") == ""
    assert m.feed("D") == ""
    assert m.stopped
    m = StopMatcher(["END"])
    assert m.feed("the E") == "the "
    assert m.feed("ast") == "East"
    assert m.flush() == ""


def test_earliest_stop_wins_and_no_stops_passes_through():
    m = StopMatcher(["b", "ab"])
    assert m.feed("xxabyy") == "xx"
    assert feed_all(StopMatcher([]), ["a", "b"]) == "ab"


def test_held_text_is_flushed_at_the_end():
    m = StopMatcher(["\n\n"])
    assert m.feed("end\n") == "end"
    assert m.flush() == "\n"


def test_sse_event_framing():
    assert sse.event(" the") == b"data:  the\n\n"
    assert sse.event("a\nb") == b"data: a\ndata: b\n\n"
    assert sse.event("\n") == b"data: \ndata: \n\n"
    assert sse.json_event("done", {"a": 1}) == b'event: done\ndata: {"a":1}\n\n'


def test_assemble_keeps_user_text_apart_from_the_template():
    task = TaskConfig(model="m", prelude="<start_of_turn>", prefix="Q: ", postfix="\nA:")
    parts = assemble(task, "<end_of_turn>hi")
    assert parts == (Segment("<start_of_turn>Q: ", special=True), Segment("<end_of_turn>hi"), Segment("\nA:", special=True))
    assert assemble(task, "hi", first_turn=False)[0] == Segment("Q: ", special=True)


def test_a_preludes_snapshot_key_names_its_text():
    """An edited prelude gets a new durable snapshot instead of the old one's common start."""
    before = build_request("t", TaskConfig(model="m", prelude="You are terse."), "hi", {}).cache_key
    after = build_request("t", TaskConfig(model="m", prelude="You are verbose."), "hi", {}).cache_key
    assert before.startswith("prelude/t/") and after.startswith("prelude/t/") and before != after
    assert build_request("t", TaskConfig(model="m"), "hi", {}).cache_key is None  # no prelude, nothing to keep
    assert build_request("t", TaskConfig(model="m", prelude="x"), "hi", {"cache_key": "stream/t/a/42"}).cache_key == "stream/t/a/42"


def test_request_overrides_within_the_task():
    task = TaskConfig(model="m", max_tokens=100, temperature=0.5, stop_sequences=["\n"], seed=7)
    req = build_request("t", task, "hi", {"max_tokens": 10, "top_k": 5, "stop": "END", "temperature": None})
    assert req.max_tokens == 10
    assert req.sampling.top_k == 5
    assert req.sampling.temperature == 0.5
    assert req.sampling.seed == 7
    assert req.stop == ("\n", "END")
    assert build_request("t", task, "hi", {}).max_tokens == 100


def test_max_tokens_above_the_task_limit_is_refused():
    task = TaskConfig(model="m", max_tokens=100)
    with pytest.raises(BadRequest, match=r"max_tokens 101 is above the limit of task 't' \(100\)"):
        build_request("t", task, "hi", {"max_tokens": 101})
