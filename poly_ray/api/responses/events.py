"""The stream events of one response, numbered (``sequence_number``), in the
order the ``openai`` client's ``responses.stream()`` helper folds into a Response:
created, in_progress; per output item ``output_item.added``, then for a message
``content_part.added``, ``output_text.delta``... ``output_text.done``,
``content_part.done``, or for a function call ``function_call_arguments.delta``...
``function_call_arguments.done``, or for a reasoning model's thinking
``reasoning_text.delta``... ``reasoning_text.done``; ``output_item.done``; then
completed (or failed / incomplete).

Items open as the model writes them: text opens a message, a tool call's first
delta (its id and name) opens a function_call item and closes the one before.
"""

from __future__ import annotations

from collections.abc import Sequence

from poly_ray.api.openai.protocol import logprob_content
from poly_ray.generation import TokenLogprob, ToolCallDelta

from .protocol import function_call, output_message, reasoning_item


class EventStream:
    def __init__(self, response: dict, logprobs: bool = False):
        self.response = dict(response, status="in_progress", output=[])
        self.logprobs: list[dict] | None = [] if logprobs else None  # the open message's, when included
        self.items: list[dict] = []  # the finished output items
        self.open: dict | None = None  # the item being written
        self._parts: list[str] = []  # its text or arguments so far
        self._n = 0

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self._n, **fields}
        self._n += 1
        return event

    def _where(self) -> dict:
        if self.open is None:
            raise RuntimeError("no output item is open")
        where = {"item_id": self.open["id"], "output_index": len(self.items)}
        return dict(where, content_index=0) if self.open["type"] in ("message", "reasoning") else where

    def start(self) -> list[dict]:
        return [self._event("response.created", response=self.response),
                self._event("response.in_progress", response=self.response)]

    def _open(self, item: dict) -> list[dict]:
        events = self.close()
        self.open, self._parts = item, []
        events.append(self._event("response.output_item.added", output_index=len(self.items), item=item))
        if item["type"] == "message":
            events.append(self._event("response.content_part.added", **self._where(),
                                      part={"type": "output_text", "text": "", "annotations": []}))
        return events

    def delta(self, text: str, logprobs: Sequence[TokenLogprob] = ()) -> list[dict]:
        events = [] if self.open and self.open["type"] == "message" else self._open(
            output_message("", status="in_progress"))
        self._parts.append(text)
        entries = logprob_content(logprobs) if self.logprobs is not None else []
        if self.logprobs is not None:
            self.logprobs += entries
        events.append(self._event("response.output_text.delta", delta=text, logprobs=entries, **self._where()))
        return events

    def reasoning(self, text: str) -> list[dict]:
        events = [] if self.open and self.open["type"] == "reasoning" else self._open(
            reasoning_item("", status="in_progress"))
        self._parts.append(text)
        events.append(self._event("response.reasoning_text.delta", delta=text, **self._where()))
        return events

    def call(self, d: ToolCallDelta) -> list[dict]:
        events = self._open(function_call(d.id, d.name, "", status="in_progress")) if d.id else []
        if d.arguments and self.open is not None and self.open["type"] == "function_call":
            self._parts.append(d.arguments)
            events.append(self._event("response.function_call_arguments.delta", delta=d.arguments, **self._where()))
        return events

    def close(self) -> list[dict]:
        """The events that end the open item (none when nothing is open)."""
        if self.open is None:
            return []
        whole, where, item = "".join(self._parts), self._where(), self.open
        if item["type"] == "message":
            done = output_message(whole, item_id=item["id"], logprobs=self.logprobs)
            part = done["content"][0]
            events = [self._event("response.output_text.done", text=whole, logprobs=self.logprobs or [], **where),
                      self._event("response.content_part.done", part=part, **where)]
            if self.logprobs is not None:
                self.logprobs = []
        elif item["type"] == "reasoning":
            events = [self._event("response.reasoning_text.done", text=whole, **where)]
            done = reasoning_item(whole, item_id=item["id"])
        else:
            events = [self._event("response.function_call_arguments.done", arguments=whole, name=item["name"], **where)]
            done = function_call(item["call_id"], item["name"], whole, item_id=item["id"])
        events.append(self._event("response.output_item.done", output_index=where["output_index"], item=done))
        self.items.append(done)
        self.open = None
        return events

    def end(self) -> list[dict]:
        """Close the answer: the open item, or an empty message when nothing was written."""
        if self.open is None and not self.items:
            return self._open(output_message("", status="in_progress")) + self.close()
        return self.close()

    def finish(self, final: dict) -> dict:
        """``final``: the stored response (completed, incomplete, failed or cancelled)."""
        ends = {"completed": "response.completed", "incomplete": "response.incomplete"}
        return self._event(ends.get(final["status"], "response.failed"), response=final)
