"""The stop-sequence matcher: text held back until it cannot start a stop sequence (pure logic)."""

from poly_ray.engine.stops import StopMatcher


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
