"""Message lists through a Jinja chat template (a task's, or the one in the GGUF).

Templates are the Hugging Face kind (``messages``, ``add_generation_prompt``,
``bos_token``, ``eos_token``), rendered in Jinja's sandbox. The template's own
text may hold special tokens (``<start_of_turn>``); what the messages say must
not be able to: each message's content is rendered as a unique marker, and the
result is cut at the markers into template segments (special) and content
segments (plain text).
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .errors import BadRequest, ConfigError
from .generation import Segment


@functools.lru_cache(maxsize=32)
def _compile(template: str):
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except TemplateError as e:
        raise ConfigError(f"the chat template does not parse: {e}") from None


def _raise(message: str):
    raise BadRequest(f"the chat template refused these messages: {message}")


def check(template: str) -> None:
    """Raise ConfigError if ``template`` is not valid Jinja."""
    _compile(template)


def render(template: str, messages: list[tuple[str, str]], *, bos: str = "", eos: str = "",
           variables: Mapping[str, Any] | None = None) -> tuple[Segment, ...]:
    """The conversation as the model sees it, ending with the assistant's turn
    opened. A BOS the template writes first is left out: the engine adds one.
    ``variables``: the template's own switches (``enable_thinking``)."""
    from jinja2 import TemplateError

    marker = f"\x00{secrets.token_hex(8)}:"
    shown = [{"role": role, "content": f"{marker}{i}\x00"} for i, (role, _) in enumerate(messages)]
    try:
        text = _compile(template).render(**(variables or {}), messages=shown, add_generation_prompt=True,
                                         bos_token=bos, eos_token=eos)
    except TemplateError as e:
        raise BadRequest(f"the chat template failed on these messages: {e}") from None
    if bos and text.startswith(bos):
        text = text[len(bos) :]
    segments, pos, seen = [], 0, set()
    for m in re.finditer(re.escape(marker) + r"(\d+)\x00", text):
        segments.append(Segment(text[pos : m.start()], special=True))
        index = int(m.group(1))
        segments.append(Segment(messages[index][1]))
        seen.add(index)
        pos = m.end()
    segments.append(Segment(text[pos:], special=True))
    if "\x00" in "".join(s.text for s in segments if s.special) or len(seen) < sum(1 for _, c in messages if c):
        # The template cut or dropped a message's content: it cannot be kept apart.
        raise BadRequest("the chat template changes message content, so it cannot be kept apart from the template")
    return tuple(s for s in segments if s.text)
