"""One generation's thinking in the engine: kept apart from the answer, bounded by its
budget, and never blocked by a grammar.

The engine calls three hooks: ``prepare`` when it tokenizes the prompt, ``feed`` with
each token's text (before the stop sequences, which apply to the answer only) and
``flush`` at the end. The rest happens here:

- A grammar (a JSON schema, a response format, a tool-call envelope, a task's biaser)
  constrains only the answer: the run samples without it while the model thinks, and
  its sampler chain is built anew with it once the end marker is written. A prompt
  with a grammar that did not open the thinking gets the start marker appended, or the
  first token would have to be drawn before anyone knew whether it was thinking.
- When the budget is spent inside the thinking, the engine writes the end marker
  itself: its tokens go in like a prompt's (``_Run.pending``), and the answer follows.
- A budget of 0 is no thinking: a prompt that opened it gets the end marker at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from poly_ray.generation import GenerationRequest, Thinking

from .reasoning_parser import ReasoningParser


@dataclass
class RunThinking:
    spec: Thinking
    parser: ReasoningParser
    end_tokens: list[int]
    deferred: str | None  # the grammar, held back until the answer starts
    tokens: int = 0  # reasoning tokens generated
    held: int = 0  # of those, not yet sent
    unsent: str = ""  # reasoning text not yet sent
    chain: Callable[..., object] | None = None  # builds the run's sampler chain: grammar=, history=, min_tokens=
    closing: bool = field(default=False)

    @property
    def first_grammar(self) -> str | None:
        """The grammar the run starts sampling with."""
        return self.deferred if self.parser.answering else None

    def feed(self, run, text: str) -> str:
        """A token's text: its reasoning kept here, its answer returned. Switches the
        grammar on when the answer starts."""
        was = self.parser.thinking
        reasoning, answer = self.parser.feed(text)
        if was or self.parser.thinking:
            self.tokens += 1
            self.held += 1
            if run.job.request.logprobs is not None:  # the answer's log-probabilities are the answer's tokens'
                run.unsent_logprobs.pop()
        self.unsent += reasoning
        self._grammar_on(run)
        return answer

    def after(self, run) -> None:
        """After a token was accepted: a spent budget inside the thinking closes it (the
        sampled token and the end marker are evaluated next, and the answer follows)."""
        if self.spec.budget is None or not self.parser.thinking or self.tokens < self.spec.budget:
            return
        n = len(self.end_tokens)
        if run.generated + n >= run.budget:  # no room left for an answer: max_tokens ends it
            return
        run.pending = [run.next_token, *self.end_tokens]
        run.next_token = None
        # The marker's tokens are output as if the model had written them: reasoning tokens.
        run.output += self.end_tokens
        run.generated += n
        run.held += n
        self.tokens += n
        self.held += n
        reasoning, _ = self.parser.feed(self.spec.end)
        self.unsent += reasoning
        self._grammar_on(run)

    def flush(self, text: str) -> str:
        """The generation's last text (the decoder's tail): its answer part, all held text released."""
        reasoning, answer = self.parser.feed(text)
        held_reasoning, held_answer = self.parser.flush()
        self.unsent += reasoning + held_reasoning
        return answer + held_answer

    def take(self) -> tuple[str, int]:
        """The reasoning text not yet sent and the tokens it covers."""
        out = self.unsent, self.held
        self.unsent, self.held = "", 0
        return out

    def _grammar_on(self, run) -> None:
        if self.deferred is not None and self.parser.answering and self.chain is not None:
            # A new chain: the penalties' history and min_tokens' hold go on where they were.
            run.sampler.close()
            run.sampler = self.chain(grammar=self.deferred, history=run.job.tokens + run.output,
                                     min_tokens=max(0, run.job.request.min_tokens - run.generated))
            self.deferred = None


def prepare(request: GenerationRequest, tokens: list[int],
            tokenize: Callable[[str], list[int]]) -> tuple[RunThinking | None, list[int]]:
    """The run's thinking state and the prompt's tokens (with a marker appended where
    the engine opens or closes the thinking itself)."""
    spec = request.thinking
    if spec is None:
        return None, tokens
    text = request.text.rstrip()
    opened = text.endswith(spec.start)
    closed = text.endswith(spec.end)
    if spec.budget == 0:
        if opened:
            tokens, opened, closed = tokens + tokenize(spec.end), False, True
        elif request.grammar is not None:
            closed = True  # the grammar holds from the first token: no thinking can start
    elif request.grammar is not None and not opened and not closed:
        tokens, opened = tokens + tokenize(spec.start), True
    parser = ReasoningParser(spec.start, spec.end, opened=opened, closed=closed)
    return RunThinking(spec, parser, tokenize(spec.end), request.grammar), tokens
