"""The engine with the real Gemma 3 270M model, no Ray."""

import asyncio
import math

import pytest

from poly_ray.engine import Engine
from poly_ray.errors import Busy, PromptTooLong
from poly_ray.generation import Chunk, Done, GenerationRequest, Sampling, Segment, Started

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine(gemma_path):
    e = Engine(gemma_path, context_size=512, threads=2, max_queued=1, flush_interval=0, name="gemma")
    yield e
    e.close()


def request(prompt="Once upon a time", max_tokens=16, seed=1, stop=(), special=False):
    return GenerationRequest(
        prompt=(Segment(prompt, special=special),), max_tokens=max_tokens, stop=stop, sampling=Sampling(seed=seed)
    )


async def run(engine, req):
    events = [ev async for ev in engine.generate(req)]
    text = "".join(ev.text for ev in events if isinstance(ev, Chunk))
    return text, events


async def test_stream_shape_and_usage(engine):
    text, events = await run(engine, request(max_tokens=12))
    assert isinstance(events[0], Started) and events[0].prompt_tokens == 5  # BOS + 4
    done = events[-1]
    assert isinstance(done, Done)
    assert done.completion_tokens == 12 == sum(ev.tokens for ev in events if isinstance(ev, Chunk))
    assert done.finish_reason == "length"
    assert len([ev for ev in events if isinstance(ev, Chunk)]) > 1  # token by token
    assert text.strip()


async def test_same_seed_same_text_and_other_seed_differs(engine):
    a, _ = await run(engine, request(seed=42, max_tokens=24))
    b, _ = await run(engine, request(seed=42, max_tokens=24))
    c, _ = await run(engine, request(seed=43, max_tokens=24))
    assert a == b
    assert a != c


async def test_stop_sequence_ends_generation(engine):
    full, _ = await run(engine, request(seed=3, max_tokens=24))
    word = full.split()[2]
    text, events = await run(engine, request(seed=3, max_tokens=24, stop=(word,)))
    assert word not in text
    assert full.startswith(text)
    assert events[-1].finish_reason == "stop"


def test_ignore_eos_masks_every_end_of_generation_token(engine):
    import llama_cpp
    import numpy as np

    vocab = engine._llm._model.vocab
    eog = engine._eog_tokens
    assert llama_cpp.llama_vocab_eos(vocab) in eog
    logits = np.zeros(llama_cpp.llama_vocab_n_tokens(vocab), dtype=np.single)
    masked = engine._no_eog([], logits)
    assert np.isneginf(masked[eog]).all()
    assert np.isfinite(np.delete(masked, eog)).all()


async def test_ignore_eos_generates_max_tokens(engine):
    req = request(prompt="The end.", max_tokens=40, seed=9)
    _, events = await run(engine, GenerationRequest(**{**req.__dict__, "ignore_eos": True}))
    assert events[-1].completion_tokens == 40
    assert events[-1].finish_reason == "length"


async def test_prompt_longer_than_the_context_names_both_numbers(engine):
    with pytest.raises(PromptTooLong, match=r"the prompt is \d+ tokens; the context of model 'gemma' holds 512"):
        await run(engine, request(prompt="word " * 600))


async def test_user_text_cannot_spell_special_tokens(engine):
    special = engine.tokenize("<start_of_turn>", special=True)
    assert len(special) == 1
    assert engine.tokenize("<start_of_turn>") != special
    assert engine.tokenize_prompt((Segment("<start_of_turn>", special=True),))[1:] == special


async def test_cancelled_stream_frees_the_engine_at_once(engine):
    gen = engine.generate(request(max_tokens=400))
    async for ev in gen:
        if isinstance(ev, Chunk):
            break
    await gen.aclose()
    # The next request is not stuck behind the 400 tokens of the first.
    _, events = await run(engine, request(max_tokens=4))
    assert events[-1].timings["queued_ms"] < 1000
    assert engine.stats()["waiting"] == 0


async def test_bounded_queue_answers_busy(engine):
    long_one = engine.generate(request(max_tokens=200))
    await anext(long_one)  # accepted
    await asyncio.sleep(0.2)  # and running
    waiting = engine.generate(request(max_tokens=2))
    await anext(waiting)  # the one queue place
    with pytest.raises(Busy) as e:
        await anext(engine.generate(request(max_tokens=2)))
    assert e.value.headers == {"Retry-After": "1"}
    await long_one.aclose()
    rest = [ev async for ev in waiting]
    assert isinstance(rest[-1], Done)


def test_embeddings_are_normalised_and_consistent(engine):
    a, b, a2 = engine.embed(["The cat sat on the mat.", "Stock markets fell sharply.", "The cat sat on the mat."])
    assert len(a) == 640
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-4)

    def cos(x, y):
        return sum(p * q for p, q in zip(x, y))

    # Batched decoding moves the same text's vector by float noise only.
    assert cos(a, a2) > 0.999
    assert cos(a, b) < 0.99
