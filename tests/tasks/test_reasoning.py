"""From a task, its model and a request's controls to the engine's Thinking (no model)."""

import pytest

from poly_ray.config import ModelConfig, TaskConfig
from poly_ray.config.reasoning import EFFORT_BUDGETS, ReasoningMarkers
from poly_ray.errors import BadRequest
from poly_ray.generation import GenerationRequest, Segment, Thinking
from poly_ray.tasks.reasoning import drop_thinking, markers, plan, replayed
from poly_ray.tasks.turn import Overrides

MODEL = ModelConfig(model_path="m.gguf", context_size=2048)
QWEN = "{% for m in messages %}{{ m.content }}{% endfor %}{% if enable_thinking is false %}<think></think>{% endif %}"


def task(**kw):
    return TaskConfig(model="m", **kw)


def test_auto_finds_the_markers_in_the_template_or_the_tasks_text():
    assert markers(task(), MODEL, QWEN) == ReasoningMarkers()
    assert markers(task(postfix="\nA: <think>"), MODEL, None) == ReasoningMarkers()
    assert markers(task(), MODEL, "{{ messages }}") is None
    assert markers(task(), MODEL, None) is None


def test_the_task_overrides_the_model():
    custom = ReasoningMarkers(start="[THINK]", end="[/THINK]")
    assert markers(task(reasoning=custom), MODEL, None) == custom
    assert markers(task(reasoning="off"), MODEL, QWEN) is None
    assert markers(task(), MODEL.model_copy(update={"reasoning": "off"}), QWEN) is None
    assert markers(task(reasoning="auto"), MODEL.model_copy(update={"reasoning": "off"}), QWEN) == ReasoningMarkers()


def test_budgets_take_the_smallest_of_task_effort_and_request():
    t = task(postfix="<think>", max_reasoning_tokens=500)
    assert plan(t, MODEL, Overrides()).thinking == Thinking("<think>", "</think>", 500)
    assert plan(t, MODEL, Overrides(reasoning_effort="minimal")).thinking.budget == 256
    assert plan(t, MODEL, Overrides(reasoning_effort="high")).thinking.budget == 500
    assert plan(t, MODEL, Overrides(reasoning_budget=7)).thinking.budget == 7
    assert plan(task(postfix="<think>"), MODEL, Overrides()).thinking.budget is None
    # An effort is a cap, never more than the context holds.
    assert plan(task(postfix="<think>"), MODEL, Overrides(reasoning_effort="xhigh")).thinking.budget == 2047
    assert EFFORT_BUDGETS["xhigh"] > MODEL.context_size


def test_off_is_a_budget_of_zero_and_the_templates_switch():
    off = plan(task(), MODEL, Overrides(thinking=False), QWEN)
    assert off.thinking.budget == 0 and off.variables == {"enable_thinking": False}
    assert plan(task(), MODEL, Overrides(reasoning_effort="none"), QWEN).variables == {"enable_thinking": False}
    assert plan(task(), MODEL, Overrides(), QWEN).variables == {}  # the template's own default
    assert plan(task(postfix="<think>"), MODEL, Overrides(thinking=True)).variables == {}  # no template


@pytest.mark.parametrize(("overrides", "field", "words"), [
    (Overrides(reasoning_effort="extreme"), "reasoning_effort", "unknown reasoning effort 'extreme'"),
    (Overrides(reasoning_effort="loads", reasoning_field="think"), "think", "one of none, minimal"),
    (Overrides(reasoning_budget=-1, reasoning_field="thinking.budget_tokens"), "thinking.budget_tokens", "0 or more"),
    (Overrides(reasoning_budget=2048), "reasoning_budget", "does not fit the context"),
])
def test_bad_controls_name_their_field(overrides, field, words):
    with pytest.raises(BadRequest, match=words) as e:
        plan(task(postfix="<think>"), MODEL, overrides)
    assert e.value.param == field and e.value.message.startswith(field + ":")


def test_asking_a_model_configured_off_to_think_is_refused_and_auto_without_markers_takes_it_as_a_hint():
    with pytest.raises(BadRequest, match="does not think") as e:
        plan(task(reasoning="off"), MODEL, Overrides(thinking=True, reasoning_field="think"))
    assert e.value.param == "think"
    assert plan(task(), MODEL, Overrides(thinking=True)).thinking is None
    assert plan(task(reasoning="off"), MODEL, Overrides(thinking=False)).thinking is None


def test_earlier_thinking_is_dropped_from_assistant_turns_only():
    said = [("user", "<think>mine</think> q"), ("assistant", "<think>\nhm\n</think>\n\nFive."), ("user", "and?")]
    spec = Thinking("<think>", "</think>")
    assert drop_thinking(said, spec) == [said[0], ("assistant", "Five."), said[2]]
    assert drop_thinking(said, None) == said


def test_the_bias_prompt_flow_replays_the_thinking_closed():
    spec = Thinking("<think>", "</think>", 6)
    opened = GenerationRequest(prompt=(Segment("Q: hi\nA: <think>", special=True),), thinking=spec)
    assert [s.text for s in replayed(opened, "hm")] == ["hm", "</think>\n\n"]
    fresh = GenerationRequest(prompt=(Segment("Q: hi\nA:"),), thinking=spec)
    assert [(s.text, s.special) for s in replayed(fresh, "hm")] == [
        ("<think>", True), ("hm", False), ("</think>\n\n", True)]
    assert replayed(GenerationRequest(prompt=(), thinking=None), "hm") == ()
