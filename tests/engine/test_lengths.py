"""Hugging Face's length limits (min_new_tokens, min_length, max_length) in the
engine, with the real Gemma 3 270M model."""

import pytest

from poly_ray.engine.llama_engine import Engine
from poly_ray.errors import BadRequest
from poly_ray.generation import Chunk, Done, GenerationRequest, Sampling, Segment, Started

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine(gemma_path):
    e = Engine(gemma_path, context_size=512, slots=1, threads=2, flush_interval=0, name="gemma")
    yield e
    e.close()

# Greedy under this grammar the model ends after "Yes." unless it may not.
SHORT = 'root ::= "Yes." ("!")*'


def greedy(prompt="Is the sky blue? Answer:", **kw):
    return GenerationRequest(prompt=(Segment(prompt),), sampling=Sampling(temperature=0), **kw)


async def run(engine, req):
    return [ev async for ev in engine.generate(req)]


async def test_min_tokens_hold_the_end_back(engine):
    free = (await run(engine, greedy(max_tokens=24, grammar=SHORT)))[-1]
    assert free.finish_reason == "stop" and free.completion_tokens == 2
    held = (await run(engine, greedy(max_tokens=24, grammar=SHORT, min_tokens=6)))[-1]
    assert held.completion_tokens >= 6


async def test_lengths_count_the_prompt(engine):
    events = await run(engine, greedy(prompt="Once upon a time", max_tokens=64, max_length=5 + 3))
    assert isinstance(events[0], Started) and events[0].prompt_tokens == 5
    assert events[-1].completion_tokens == 3 and events[-1].finish_reason == "length"
    assert sum(isinstance(ev, Chunk) for ev in events) >= 1 and isinstance(events[-1], Done)
    prompt = (await run(engine, greedy(max_tokens=1)))[0].prompt_tokens
    held = (await run(engine, greedy(max_tokens=24, grammar=SHORT, min_length=prompt + 6)))[-1]
    assert held.completion_tokens >= 6
    with pytest.raises(BadRequest, match="max_length 5 counts the prompt, which is already 5 tokens"):
        await run(engine, greedy(prompt="Once upon a time", max_length=5))
