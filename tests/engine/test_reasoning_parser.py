"""The streaming split of a reasoning model's output into thinking and answer, on token sequences."""

import pytest

from poly_ray.engine.reasoning_parser import ReasoningParser


def split(tokens, *, opened=False, closed=False, start="<think>", end="</think>"):
    parser = ReasoningParser(start, end, opened=opened, closed=closed)
    reasoning, answer = "", ""
    for token in tokens:
        r, a = parser.feed(token)
        reasoning, answer = reasoning + r, answer + a
    r, a = parser.flush()
    return reasoning + r, answer + a, parser


@pytest.mark.parametrize("tokens", [
    ["<think>", "Let me see.", "</think>", "\n\n", "42"],
    ["<th", "ink>Let", " me see.</", "thi", "nk>", "\n", "\n4", "2"],
    ["<", "t", "h", "i", "n", "k", ">", "L", "et me see.", "<", "/", "t", "h", "i", "n", "k", ">", "4", "2"],
    ["\n <think>Let me see.</think>42"],
    ["<think>Let me see.</think>\n\n42"],
])
def test_markers_split_anywhere(tokens):
    reasoning, answer, parser = split(tokens)
    assert (reasoning, answer) == ("Let me see.", "42")
    assert parser.answering


def test_a_prompt_that_opened_the_thinking():
    reasoning, answer, _ = split(["Hmm, ", "two", " and two.</think>", "Four."], opened=True)
    assert (reasoning, answer) == ("Hmm, two and two.", "Four.")


def test_a_stream_that_ends_inside_the_thinking_has_no_answer():
    reasoning, answer, parser = split(["<think>", "still going", " </thi"])
    assert (reasoning, answer) == ("still going </thi", "")
    assert parser.thinking


def test_a_held_tail_that_does_not_become_the_marker_is_released_as_it_was():
    reasoning, answer, _ = split(["a </", "b> c</think>d"], opened=True)
    assert (reasoning, answer) == ("a </b> c", "d")


def test_an_answer_without_thinking_passes_through():
    reasoning, answer, _ = split(["Hello", " <think> is", " a tag"])
    assert (reasoning, answer) == ("", "Hello <think> is a tag")
    # Whitespace or the start marker's beginning alone is held, then released as the answer.
    assert split(["  ", "<thi"]) [:2] == ("", "  <thi")


def test_a_closed_prompt_is_all_answer():
    reasoning, answer, _ = split(["\n", "<think>x</think>"], closed=True)
    assert (reasoning, answer) == ("", "<think>x</think>")


def test_custom_markers():
    reasoning, answer, _ = split(["[THINK]a", "b[/TH", "INK]c"], start="[THINK]", end="[/THINK]")
    assert (reasoning, answer) == ("ab", "c")


def test_nothing_is_released_before_it_is_known():
    parser = ReasoningParser("<think>", "</think>", opened=True)
    assert parser.feed("abc</th") == ("abc", "")
    assert parser.feed("ink>") == ("", "")
    assert parser.feed(" x") == ("", "x")
