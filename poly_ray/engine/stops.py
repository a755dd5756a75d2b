"""Stop sequences over streamed text.

Text arrives a token at a time, and a stop sequence may straddle tokens, so the
matcher holds back any tail that could still become a stop sequence and
releases it once it cannot.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: tuple[str, ...] | list[str]):
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop sequence that was found

    def feed(self, text: str) -> str:
        """Add generated text; return what can be released to the client now."""
        if self.stopped:
            return ""
        buf = self._held + text
        first = min(((i, s) for s in self.stops if (i := buf.find(s)) >= 0), default=None)
        if first is not None:
            self.stopped, self.matched = True, first[1]
            self._held = ""
            return buf[: first[0]]
        keep = self._longest_partial(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """Generation ended without a stop: release what was held back."""
        out, self._held = self._held, ""
        return "" if self.stopped else out

    def _longest_partial(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of some stop."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
