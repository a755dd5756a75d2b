"""The batched engine with the real Gemma 3 270M model, no Ray."""

import asyncio
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import llama_cpp
import pytest

from poly_ray.engine import backends
from poly_ray.engine.llama_engine import Engine
from poly_ray.errors import BadRequest, Busy, PromptTooLong
from poly_ray.generation import Chunk, Done, GenerationRequest, Sampling, Segment, Started

pytestmark = pytest.mark.model

SLOTS = 4


@pytest.fixture(scope="module")
def engine(gemma_path):
    e = Engine(gemma_path, context_size=512, slots=SLOTS, threads=2, max_queued=1, flush_interval=0, name="gemma")
    yield e
    e.close()


def request(prompt="Once upon a time", max_tokens=16, seed=1, stop=(), special=False, **kw):
    return GenerationRequest(
        prompt=(Segment(prompt, special=special),), max_tokens=max_tokens, stop=stop, sampling=Sampling(seed=seed), **kw
    )


async def run(engine, req):
    events = [ev async for ev in engine.generate(req)]
    text = "".join(ev.text for ev in events if isinstance(ev, Chunk))
    return text, events


async def test_stream_shape_and_usage(engine):
    text, events = await run(engine, request(max_tokens=12, ignore_eos=True))
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


async def test_concurrent_generations_keep_their_own_seeds_and_replay_exactly(gemma_path):
    prompts = ["Once upon a time", "The recipe calls for", "In the year 2050,", "Dear diary, today"]
    # One more than the slots: the last waits in the queue, then joins the batch.
    reqs = [request(p, seed=100 + i, max_tokens=32, ignore_eos=True) for i, p in enumerate(prompts + prompts[:1])]

    async def workload():
        e = Engine(gemma_path, context_size=512, slots=SLOTS, threads=2, max_queued=2, flush_interval=0)
        try:
            # The requests arrive while the worker reads a long prompt, so all of them join
            # at its next step, whatever the threads' timing: which tokens share a step
            # changes how llama.cpp's CPU kernels round, so arriving in two waves instead
            # of one can change a text (seen on both CPU variants).
            blocker = asyncio.ensure_future(run(e, request("word " * 400, max_tokens=1)))
            while e.stats()["active"] == 0:
                await asyncio.sleep(0.001)
            texts = [t for t, _ in await asyncio.gather(*(run(e, r) for r in reqs))]
            await blocker
            return texts
        finally:
            e.close()

    first, again = await workload(), await workload()
    assert first == again  # the same requests on the same engine state: the same text
    assert all(first)
    # Same prompt, other seed: its own sampler, not its neighbour's.
    assert first[0] != first[4]


@pytest.mark.parametrize("sampling", [
    Sampling(seed=5, mirostat=1, mirostat_tau=5.0),
    Sampling(seed=5, mirostat=2, mirostat_tau=3.0),
    Sampling(seed=5, temperature=0.0),
    Sampling(seed=5, frequency_penalty=0.5, presence_penalty=0.5, top_k=0, top_p=1.0, min_p=0.0),
    # Poly's example chain, "mirostat1:n_vocab=32000" (with llm's default repetition and temperature)
    Sampling(seed=5, mirostat=1, mirostat_n_vocab=32000, mirostat_m=50, repeat_penalty=1.3, top_k=0, top_p=1.0),
    Sampling(seed=5, typical_p=0.9, min_keep=2),
])
async def test_every_sampler_chain_generates_reproducibly(engine, sampling):
    req = GenerationRequest(prompt=(Segment("The weather today is"),), max_tokens=16, sampling=sampling, ignore_eos=True)
    first, events = await run(engine, req)
    assert events[-1].completion_tokens == 16 and first.strip()
    assert (await run(engine, req))[0] == first


async def logged(engine, req):
    """The text and every token's log-probabilities (its own and the 3 best) as floats."""
    text, events = await run(engine, req)
    return text, [lp for ev in events if isinstance(ev, Chunk) for lp in ev.logprobs], events[-1]


async def test_a_seeded_request_repeats_to_the_last_bit_whether_or_not_its_prefix_was_cached(gemma_path):
    # Exact log-probabilities, not only the text: a sampler draws the same token from
    # slightly different logits most of the time, so a text comparison alone would flake.
    # ggml's CPU kernels work on groups of 4 rows: prompts of each length modulo 4.
    base = "The weather today is cold, and the forecast for the rest of the week says that"
    lengths = set()
    for tail in ("", " it", " it will", " it will be"):
        e = Engine(gemma_path, context_size=256, slots=2, threads=2, flush_interval=0, name="gemma")
        req = GenerationRequest(prompt=(Segment(base + tail),), max_tokens=8, ignore_eos=True, logprobs=3,
                                sampling=Sampling(seed=5, mirostat=1, mirostat_tau=5.0))
        try:
            fresh = await logged(e, req)  # read afresh in an empty slot
            copied = await logged(e, req)  # its prefix copied from that slot into the other one
            in_place = await logged(e, req)  # its prefix kept in the slot it was used in last
        finally:
            e.close()
        n = fresh[2].prompt_tokens
        lengths.add(n % 4)
        assert [r[2].timings["cached_tokens"] for r in (fresh, copied, in_place)] == [0, n - 1, n - 1]
        assert fresh[:2] == copied[:2] == in_place[:2] and len(fresh[1]) == 8, (n, fresh[0], copied[0], in_place[0])
    assert lengths == {0, 1, 2, 3}


def test_seeded_requests_repeat_on_the_avx2_variant_too(gemma_path):
    # Floating-point paths differ between ggml's CPU variants: an AVX2-only machine
    # (haswell) once repeated a seeded request with another text where AVX-512 did not.
    if os.environ.get(backends.ENV_VARIANT):
        pytest.skip(f"this run already names its CPU variant ({os.environ[backends.ENV_VARIANT]})")
    if backends.load().scores.get("haswell", 0) <= 0:
        pytest.skip("this CPU cannot run the haswell variant")
    tests = [f"{__file__}::test_a_seeded_request_repeats_to_the_last_bit_whether_or_not_its_prefix_was_cached",
             f"{__file__}::test_every_sampler_chain_generates_reproducibly"]
    env = {**os.environ, backends.ENV_VARIANT: "haswell"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], check=False,
                         env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "7 passed" in out.stdout, out.stdout[-500:]


async def test_locally_typical_and_min_keep_reach_llama_cpp(engine):
    def texts(**kw):
        return [GenerationRequest(prompt=(Segment("The weather today is"),), max_tokens=12, ignore_eos=True,
                                  sampling=Sampling(seed=seed, temperature=1.5, top_k=0, min_p=0.0, **kw))
                for seed in (1, 2, 3)]
    # A tiny top_p keeps min_keep tokens: one token leaves the seed nothing to choose, 50 do.
    assert len({(await run(engine, r))[0] for r in texts(top_p=0.001, min_keep=1)}) == 1
    assert len({(await run(engine, r))[0] for r in texts(top_p=0.001, min_keep=50)}) > 1
    # Locally typical sampling changes what the same seed draws.
    plain = [(await run(engine, r))[0] for r in texts(top_p=1.0)]
    typical = [(await run(engine, r))[0] for r in texts(top_p=1.0, typical_p=0.3)]
    assert plain != typical


async def test_stop_sequence_ends_generation(engine):
    full, _ = await run(engine, request(seed=3, max_tokens=24, ignore_eos=True))
    word = full.split()[2]
    text, events = await run(engine, request(seed=3, max_tokens=24, stop=(word,)))
    assert word not in text
    assert full.startswith(text)
    assert events[-1].finish_reason == "stop"


async def test_stop_sequences_work_with_a_grammar(engine):
    from poly_ray.grammars import from_schema

    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
              "required": ["answer", "sure"]}
    req = request("Is the sky blue? JSON:", max_tokens=40, grammar=from_schema(schema))
    full, _ = await run(engine, req)
    text, events = await run(engine, GenerationRequest(**{**req.__dict__, "stop": ('"sure"',)}))
    assert '"sure"' in full and full.startswith(text)
    assert not any(text.endswith('"sure"'[:k]) for k in range(1, 7))  # not even partly
    assert events[-1].finish_reason == "stop"


async def test_grammar_constrains_the_output(engine):
    grammar = 'root ::= ("yes" | "no") "."'
    for seed in range(3):
        text, events = await run(engine, request("Is the sky blue? Answer:", seed=seed, max_tokens=10, grammar=grammar))
        assert text in ("yes.", "no."), text
        assert events[-1].finish_reason == "stop"
    with pytest.raises(BadRequest, match="grammar"):
        await run(engine, request(grammar="root ::= ("))


async def test_logit_bias_forces_and_bans_tokens(engine):
    yes = engine.tokenize_prompt((Segment(" yes"),), None)[-1]
    greedy = Sampling(temperature=0, seed=1)
    forced = GenerationRequest(prompt=(Segment("Is the sky blue?"),), max_tokens=3,
                               sampling=replace(greedy, logit_bias=((yes, 100.0),)))
    text, _ = await run(engine, forced)
    assert text == " yes yes yes"
    first, _ = await run(engine, replace(forced, sampling=greedy, max_tokens=1))
    banned_token = engine.tokenize_prompt((Segment(first),), None)[-1]
    banned = replace(forced, max_tokens=1, sampling=replace(greedy, logit_bias=((banned_token, -100.0),)))
    assert (await run(engine, banned))[0] != first
    with pytest.raises(BadRequest, match="logit_bias: token 999999 is not in the vocabulary"):
        await run(engine, replace(forced, sampling=Sampling(logit_bias=((999999, 1.0),))))


async def test_ignore_eos_generates_max_tokens(engine):
    assert llama_cpp.llama_vocab_eos(engine._vocab) in engine._eog_tokens
    _, events = await run(engine, request(prompt="The end.", max_tokens=40, seed=9, ignore_eos=True))
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


async def test_shared_prefix_is_reused(engine):
    prelude = "The following is a long and careful description of a quiet harbour town. " * 6
    first = await run(engine, request(prelude + "It begins", max_tokens=4))
    second = await run(engine, request(prelude + "Its fishermen", max_tokens=4))
    prelude_tokens = len(engine.tokenize_prompt((Segment(prelude),)))
    assert first[1][-1].timings["cached_tokens"] < prelude_tokens
    assert second[1][-1].timings["cached_tokens"] >= prelude_tokens - 2


async def test_another_owner_reuses_only_the_operators_start(engine):
    """N7: cached_tokens is no oracle for what another credential asked; the task's prelude
    (special segments) is still shared by everyone."""
    prelude = Segment("<start_of_turn>user\nYou answer questions about the harbour town. " * 3, special=True)
    secret = Segment("My account number at the harbour bank is 4481 2290 5531 and my PIN is 7788. " * 3)

    def asked(owner, text=secret):
        return GenerationRequest(prompt=(prelude, text), max_tokens=2, sampling=Sampling(seed=1), owner=owner)

    public = len(engine.tokenize_prompt((prelude,)))
    await run(engine, asked("alice"))
    guess = Segment(secret.text[:-4] + "9999")
    _, events = await run(engine, asked("bob", guess))
    assert events[-1].timings["cached_tokens"] == public
    _, events = await run(engine, asked("alice", guess))
    assert events[-1].timings["cached_tokens"] > public + 40


async def test_a_long_prompt_is_read_in_chunks_beside_running_streams(engine):
    running = engine.generate(request(seed=1, max_tokens=300, ignore_eos=True))
    assert isinstance(await anext(running), Started)
    await anext(running)  # generating
    long_gen = engine.generate(request("a long prompt about the sea " * 70, max_tokens=2))  # ~420 tokens
    assert isinstance(await anext(long_gen), Started)
    steps_before = engine.stats()["steps"]
    await anext(long_gen)  # its first text: the whole prompt has been read
    # Alone, the prompt would be one step (it fits the batch); beside a running
    # stream it is read a slice per step, and that stream advances each step.
    assert engine.stats()["steps"] - steps_before >= 3
    await long_gen.aclose()
    await running.aclose()


async def test_cancelled_stream_frees_its_slot_at_once(engine):
    gens = [engine.generate(request(seed=i, max_tokens=400, ignore_eos=True)) for i in range(SLOTS)]
    for gen in gens:
        async for ev in gen:
            if isinstance(ev, Chunk):
                break
    assert engine.stats()["active"] == SLOTS
    await gens[0].aclose()
    # The next request takes the freed slot without waiting for the 400-token runs.
    _, events = await run(engine, request(max_tokens=4))
    assert events[-1].timings["queued_ms"] < 1000
    for gen in gens[1:]:
        await gen.aclose()
    for _ in range(100):
        if engine.stats()["active"] == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.stats()["active"] == 0


async def test_bounded_queue_answers_busy(engine):
    running = [engine.generate(request(seed=i, max_tokens=200, ignore_eos=True)) for i in range(SLOTS)]
    for gen in running:
        await anext(gen)
    waiting = engine.generate(request(max_tokens=2))
    await anext(waiting)  # the one queue place
    with pytest.raises(Busy) as e:
        await anext(engine.generate(request(max_tokens=2)))
    assert e.value.headers == {"Retry-After": "1"} and "(max_queued_requests = 1)" in e.value.message
    for gen in running:
        await gen.aclose()
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


async def test_a_token_that_takes_too_long_to_sample_ends_its_request_and_not_the_engine(engine, monkeypatch):
    """N2's last line of defence: a grammar whose parse stacks explode makes each token take
    seconds to sample; past SAMPLE_LIMIT_S the request ends with a 400 naming the cause."""
    from poly_ray.engine import llama_engine

    monkeypatch.setattr(llama_engine, "SAMPLE_LIMIT_S", 0.0)  # every token is too slow now
    with pytest.raises(BadRequest, match=r"the request's grammar made one token take [\d.]+ s to sample"):
        await run(engine, request(max_tokens=4))
    monkeypatch.setattr(llama_engine, "SAMPLE_LIMIT_S", 5.0)
    text, _ = await run(engine, request(max_tokens=4))
    assert text and engine.alive
    # Done reaches the caller from inside the step that ended the request; the step is
    # over just after (a 34 ms step was still under way once, on a loaded machine).
    for _ in range(200):
        if engine.stalled_s == 0.0:
            break
        await asyncio.sleep(0.01)
    assert engine.stalled_s == 0.0


async def test_a_json_string_never_holds_a_raw_control_character(engine):
    """The schema converter shipped with llama-cpp-python let any character into a JSON string,
    so a model could write a raw newline there and the "valid" answer did not parse; pushed
    hard towards newlines, the answer still parses."""
    import json

    from poly_ray import grammars

    schema = {"type": "object", "properties": {"note": {"type": "string", "maxLength": 40}}, "required": ["note"]}
    [newline] = engine.tokenize("\n")
    req = GenerationRequest(prompt=(Segment("A short note about the sea:"),), max_tokens=60,
                            grammar=grammars.from_schema(schema, "schema"),
                            sampling=Sampling(seed=1, logit_bias=((newline, 30.0),)))
    text, _ = await run(engine, req)
    assert isinstance(json.loads(text)["note"], str), text
