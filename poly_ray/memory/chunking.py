"""Cut a document's text into chunks of at most N tokens of the embedding model.

Poly's parameters: ``chunk_max_tokens``, ``chunk_separators`` (tried in order:
a piece too long for one separator is cut at the next one, and as a last
resort at a token boundary), ``pre_filter`` (regular expressions replaced by a
space) and ``post_filter`` (strings removed), plus ``chunk_overlap`` tokens
repeated from the end of one chunk at the start of the next.

Chunks keep the character span they cover in the original text, so the
filters only change the stored text, never where a chunk points.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Count = Callable[[str], int]  # tokens in a text
# No token is longer than this many characters: a cut is looked for within
# max_tokens × this, so a long text without separators costs linear time.
MAX_TOKEN_CHARS = 32


@dataclass(frozen=True)
class DocumentChunk:
    index: int
    text: str  # filtered: what is embedded, stored and recalled
    start: int  # span in the document's text
    end: int


@dataclass(frozen=True)
class Chunker:
    count: Count
    max_tokens: int
    separators: tuple[str, ...] = ("\n\n", "\n", ". ", " ")
    overlap: int = 0
    pre_filter: tuple[str, ...] = ()
    post_filter: tuple[str, ...] = ()

    def __call__(self, text: str, sections: tuple[tuple[int, int], ...] = ()) -> list[DocumentChunk]:
        """Chunks of ``text``; with ``sections`` (e.g. PDF pages), no chunk crosses
        from one section into the next, so each has one page."""
        chunks: list[DocumentChunk] = []
        for first, last in sections or ((0, len(text)),):
            pieces = self._pieces(text, first, last, self.separators)
            for start, end in self._merge(text, pieces):
                start, end = _strip(text, start, end)
                cleaned = self.clean(text[start:end])
                if cleaned:
                    chunks.append(DocumentChunk(len(chunks), cleaned, start, end))
        return chunks

    def clean(self, text: str) -> str:
        for pattern in self.pre_filter:
            text = re.sub(pattern, " ", text)
        for token in self.post_filter:
            text = text.replace(token, " ")
        return re.sub(r" {2,}", " ", text).strip()

    def _pieces(self, text: str, start: int, end: int, separators: tuple[str, ...]) -> list[tuple[int, int, int]]:
        """Spans ``(start, end, tokens)`` of at most max_tokens each, cut at the first
        separator that splits the span; a separator stays with the text before it."""
        tokens = self.count(text[start:end])
        if tokens <= self.max_tokens:
            return [(start, end, tokens)]
        for i, sep in enumerate(separators):
            cuts = _split(text, start, end, sep)
            if len(cuts) > 1:
                return [p for s, e in cuts for p in self._pieces(text, s, e, separators[i + 1 :])]
        return self._hard_split(text, start, end)

    def _hard_split(self, text: str, start: int, end: int) -> list[tuple[int, int, int]]:
        """No separator helps: the longest prefixes that fit."""
        out = []
        while start < end:
            cut = start + fit_length(self.count, text, start, end, self.max_tokens)
            out.append((start, cut, self.count(text[start:cut])))
            start = cut
        return out

    def _merge(self, text: str, pieces: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
        """Adjacent pieces joined greedily up to max_tokens; each chunk after the first
        starts with the last pieces of the one before, up to ``overlap`` tokens."""
        spans: list[tuple[int, int]] = []
        first = 0
        while first < len(pieces):
            last, total = first, pieces[first][2]
            while last + 1 < len(pieces) and total + pieces[last + 1][2] <= self.max_tokens:
                last += 1
                total += pieces[last][2]
            # Token counts are not quite additive across a cut: check the joined text.
            while last > first and self.count(text[pieces[first][0] : pieces[last][1]]) > self.max_tokens:
                last -= 1
            spans.append((pieces[first][0], pieces[last][1]))
            if last + 1 >= len(pieces):
                break
            first = self._overlap_start(pieces, first, last)
        return spans

    def _overlap_start(self, pieces, first: int, last: int) -> int:
        """Where the next chunk starts: after ``last``, moved back over up to ``overlap`` tokens."""
        nxt, carried = last + 1, 0
        while nxt - 1 > first and carried + pieces[nxt - 1][2] <= self.overlap:
            nxt -= 1
            carried += pieces[nxt][2]
        if carried + pieces[last + 1][2] > self.max_tokens:  # no room for the overlap and new text
            return last + 1
        return nxt


def fit_length(count: Count, text: str, start: int, end: int, budget: int, *, tail: bool = False) -> int:
    """How many characters of ``text[start:end]``, from its start (or, with ``tail``,
    from its end), fit in ``budget`` tokens: the most that do, at least one. Found by
    bisection within budget × MAX_TOKEN_CHARS characters."""
    piece = (lambda n: text[end - n : end]) if tail else (lambda n: text[start : start + n])
    lo, hi = 1, min(end - start, budget * MAX_TOKEN_CHARS)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(piece(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _split(text: str, start: int, end: int, sep: str) -> list[tuple[int, int]]:
    cuts, pos = [], start
    while (found := text.find(sep, pos, end)) != -1:
        cut = found + len(sep)
        if cut > pos:
            cuts.append((pos, cut))
        pos = cut
    if pos < end:
        cuts.append((pos, end))
    return cuts


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
