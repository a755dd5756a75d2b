"""Thinking in the engine with the real Gemma 3 270M, which does not think on its own: a
prompt that opens the thinking marker makes its own tokens the reasoning; the budget
closes it and the answer follows, under a grammar when there is one."""

import json

import pytest

from poly_ray.engine.llama_engine import Engine
from poly_ray.generation import Chunk, Done, GenerationRequest, Reasoning, Sampling, Segment, Thinking, gather_calls
from poly_ray.grammars import from_schema

pytestmark = pytest.mark.model

THINK = Thinking("<think>", "</think>", budget=6)
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
          "additionalProperties": False}


@pytest.fixture(scope="module")
def engine(gemma_path):
    e = Engine(gemma_path, context_size=512, slots=2, threads=2, flush_interval=0, name="gemma")
    yield e
    e.close()


def request(prompt="Question: what is two and two?\n<think>", thinking=THINK, max_tokens=40, **kw):
    return GenerationRequest(prompt=(Segment(prompt, special=True),), max_tokens=max_tokens,
                             sampling=Sampling(seed=3, temperature=0), thinking=thinking, **kw)


async def events_of(engine, req):
    return [ev async for ev in engine.generate(req)]


async def test_the_budget_closes_the_thinking_and_the_answer_follows(engine):
    events = await events_of(engine, request(ignore_eos=True, max_tokens=20))
    done = events[-1]
    assert isinstance(done, Done)
    thought = "".join(e.text for e in events if isinstance(e, Reasoning))
    answer = "".join(e.text for e in events if isinstance(e, Chunk))
    assert thought.strip() and answer.strip()
    assert "<think>" not in answer and "</think>" not in answer and "</think>" not in thought
    end = len(engine.tokenize("</think>", special=True))  # the marker the engine wrote counts as reasoning
    assert done.reasoning_tokens == THINK.budget + end
    assert done.completion_tokens == 20
    # Every generated token is counted once, as reasoning or as answer.
    assert sum(e.tokens for e in events if isinstance(e, (Chunk, Reasoning))) == done.completion_tokens
    assert sum(e.tokens for e in events if isinstance(e, Reasoning)) == done.reasoning_tokens
    assert done.usage["completion_tokens_details"] == {"reasoning_tokens": THINK.budget + end}
    # Reasoning comes first: no answer text before the last of it.
    kinds = [type(e) for e in events if isinstance(e, (Chunk, Reasoning)) and e.text]
    assert kinds.index(Chunk) > max(i for i, k in enumerate(kinds) if k is Reasoning)


async def test_a_grammar_holds_only_after_the_thinking(engine):
    grammar = from_schema(SCHEMA, "response_format")
    text, _, _, done = await gather_calls(engine.generate(request(grammar=grammar)))
    assert isinstance(json.loads(text)["answer"], int)
    assert done.reasoning.strip() and "{" not in done.reasoning[:1]
    assert done.reasoning_tokens == THINK.budget + len(engine.tokenize("</think>", special=True))


async def test_a_grammar_with_a_prompt_that_did_not_open_the_thinking(engine):
    # The engine opens it itself, so the first token is not drawn under the grammar.
    grammar = from_schema(SCHEMA, "response_format")
    text, _, _, done = await gather_calls(engine.generate(request("Question: two and two?\n", grammar=grammar)))
    assert isinstance(json.loads(text)["answer"], int)
    assert done.reasoning_tokens == THINK.budget + len(engine.tokenize("</think>", special=True))
    assert done.reasoning.strip()


async def test_a_budget_of_zero_is_no_thinking(engine):
    text, _, _, done = await gather_calls(engine.generate(request(thinking=Thinking("<think>", "</think>", 0),
                                                                  ignore_eos=True, max_tokens=8)))
    assert done.reasoning == "" and done.reasoning_tokens == 0 and text.strip()


async def test_a_stream_that_ends_inside_the_thinking(engine):
    text, _, _, done = await gather_calls(engine.generate(request(thinking=Thinking("<think>", "</think>"),
                                                                  ignore_eos=True, max_tokens=5)))
    assert (text, done.finish_reason, done.reasoning_tokens) == ("", "length", 5)
    assert done.reasoning.strip()


async def test_without_thinking_the_markers_are_text(engine):
    text, _, _, done = await gather_calls(engine.generate(request(thinking=None, ignore_eos=True, max_tokens=6)))
    assert done.reasoning == "" and done.reasoning_tokens == 0 and text


async def test_log_probabilities_are_the_answers_tokens_only(engine):
    events = await events_of(engine, request(ignore_eos=True, max_tokens=16, logprobs=0))
    chunks = [e for e in events if isinstance(e, Chunk)]
    answer_tokens = sum(c.tokens for c in chunks)
    assert answer_tokens == 16 - events[-1].reasoning_tokens > 0
    assert sum(len(c.logprobs) for c in chunks) == answer_tokens
