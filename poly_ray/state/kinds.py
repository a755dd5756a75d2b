"""The kinds of object the state store holds, named once: what each stateful API
stores, and under which parent (a row's ``parent`` column)."""

from __future__ import annotations

# Responses (and its stored input: its own items and a reference to the previous response).
RESPONSE, INPUT = "response", "response_input"
# Conversations and their items (also the items of a conversation's responses).
CONVERSATION, ITEM = "conversation", "item"
# Assistants v2: a thread's messages and runs, a run's steps and context (its tool rounds).
ASSISTANT, THREAD, MESSAGE, RUN, STEP, CONTEXT = "assistant", "thread", "message", "run", "step", "run_context"

# Appended to the kind of an object deleted while another still refers to it (a response
# continued by another): no read by kind finds it, and it goes when the last reference does.
HIDDEN = ":deleted"
