"""A reasoning model's output split into its thinking and its answer, as it streams.

The model writes ``<think> … </think>`` (its template's markers) and then the answer.
Text comes a token at a time, so a marker may straddle tokens: a tail that could
still become the marker is held back until it either completes it or cannot. A
prompt that already opened the thinking (a template whose generation prompt ends
with ``<think>``) starts the parser inside it. Whitespace between the end marker and
the answer is dropped (the templates write a blank line there), as llama.cpp does.
"""

from __future__ import annotations

from enum import Enum


class Phase(Enum):
    BEFORE = "before"  # nothing but whitespace yet: the model may still open its thinking
    THINKING = "thinking"
    AFTER = "after"  # the thinking ended: whitespace before the answer is dropped
    ANSWER = "answer"


class ReasoningParser:
    def __init__(self, start: str, end: str, *, opened: bool = False, closed: bool = False):
        """``opened``: the prompt ends with ``start``; ``closed``: the prompt ends with
        ``end`` (no thinking to come: everything is answer)."""
        if not start or not end:
            raise ValueError("the reasoning markers must not be empty")
        self.start, self.end = start, end
        self.phase = Phase.AFTER if closed else Phase.THINKING if opened else Phase.BEFORE
        self._held = ""

    @property
    def thinking(self) -> bool:
        return self.phase is Phase.THINKING

    @property
    def answering(self) -> bool:
        return self.phase in (Phase.AFTER, Phase.ANSWER)

    def feed(self, text: str) -> tuple[str, str]:
        """Add generated text; return (reasoning, answer) that can be released now."""
        buf, self._held = self._held + text, ""
        reasoning = answer = ""
        while buf:
            if self.phase is Phase.BEFORE:
                bare = buf.lstrip()
                if bare.startswith(self.start):
                    self.phase, buf = Phase.THINKING, bare[len(self.start):]
                elif self.start.startswith(bare):  # whitespace, or the start marker's beginning
                    self._held = buf
                    break
                else:
                    self.phase = Phase.ANSWER
            elif self.phase is Phase.THINKING:
                at = buf.find(self.end)
                if at >= 0:
                    reasoning += buf[:at]
                    self.phase, buf = Phase.AFTER, buf[at + len(self.end):]
                    continue
                keep = _partial(buf, self.end)
                reasoning += buf[: len(buf) - keep]
                self._held = buf[len(buf) - keep:]
                break
            elif self.phase is Phase.AFTER:
                buf = buf.lstrip()
                if buf:
                    self.phase = Phase.ANSWER
            else:
                answer += buf
                break
        return reasoning, answer

    def flush(self) -> tuple[str, str]:
        """The generation ended: release what was held back, where it was."""
        held, self._held = self._held, ""
        if self.phase is Phase.THINKING:
            return held, ""
        return "", held if self.phase is Phase.BEFORE else ""


def _partial(buf: str, marker: str) -> int:
    """Length of the longest suffix of ``buf`` that is a proper prefix of ``marker``."""
    for n in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:n]):
            return n
    return 0
