"""Patterns, read as llama-cpp-python's converter reads them (its ``_visit_pattern``).

Two things about a pattern matter before it reaches the converter and llama.cpp: the size
of what the converter writes (``{,n}`` and ``{n,}`` included, which it reads as ``{0,n}``
and ``{n}`` then a loop), and how many places a match can be at once. llama.cpp keeps one
parse stack per place and checks the whole vocabulary against each for every sampled
token; its de-duplication is quadratic in the stacks, so ``(a?){1000}`` (1000 places right
after the opening quote) costs hours per token, where ``a{0,1000}`` (nested: 2 places)
costs what any string does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_NEG = -(1 << 60)  # "no position" in the follow counts below


@dataclass(frozen=True)
class _Shape:
    """What the converter makes of a piece of a pattern. ``size``: characters it spells out,
    repeats multiplied out. Then, counting the character positions a match may be at
    (llama.cpp keeps one parse stack per position): ``empty`` (it can match nothing),
    ``first`` (positions on entering it), ``inner`` (the most positions that follow one of
    its positions inside it) and ``last`` (the same, over the positions it can end on)."""

    size: int
    empty: bool
    first: int
    inner: int
    last: int


_CHAR = _Shape(1, False, 1, 0, 0)
_NOTHING = _Shape(0, True, 0, 0, _NEG)


def _counts(s: _Shape) -> tuple:
    return s.empty, s.first, s.inner, s.last


def _then(a: _Shape, b: _Shape) -> _Shape:
    return _Shape(a.size + b.size, a.empty and b.empty, a.first + (b.first if a.empty else 0),
                  max(a.inner, a.last + b.first, b.inner), max(b.last, a.last + b.first if b.empty else _NEG))


def _either(a: _Shape, b: _Shape) -> _Shape:
    return _Shape(max(a.size, b.size), a.empty or b.empty, a.first + b.first, max(a.inner, b.inner),
                  max(a.last, b.last))


def _optional(a: _Shape) -> _Shape:
    return _Shape(a.size, True, a.first, a.inner, a.last)


def _loop(a: _Shape, empty: bool) -> _Shape:
    if a.empty:  # llama.cpp would find the rule left-recursive; the stacks would not end
        raise PatternError("it repeats without bound a part that can match nothing (write a* for (a?)*)")
    return _Shape(a.size, empty, a.first, max(a.inner, a.last + a.first), a.last + a.first)


def _repeat(a: _Shape, lo: int, hi: int | None, enough: int) -> _Shape:
    """``a{lo,hi}`` as the converter writes it (``_build_repetition``): ``lo`` copies, then
    ``hi - lo`` nested optional copies (or a loop). Counting stops once a count passes
    ``enough`` or stops changing (counts only grow with more copies)."""
    if lo == 0 and hi == 1:
        return _optional(a)
    if lo == 1 and hi is None:
        return _loop(a, a.empty)
    size = a.size * (hi if hi is not None else max(lo, 1))

    def copies(n: int, step) -> _Shape:
        out = _NOTHING
        for _ in range(n):
            nxt = step(out)
            if _counts(nxt) == _counts(out) or max(_counts(nxt)[1:]) > enough:
                return nxt
            out = nxt
        return out

    head = copies(lo, lambda s: _then(s, a))
    if hi is None:
        tail = _loop(a, True)
    else:  # (a (a (a)?)?)?: each step wraps the chain so far
        tail = copies(hi - lo, lambda s: _optional(_then(a, s)))
    shape = _then(head, tail)
    return _Shape(size, shape.empty, shape.first, shape.inner, shape.last)


class PatternError(ValueError):
    pass


def _quantifier(text: str) -> tuple[int, int | None]:
    """``{…}``'s bounds exactly as the converter reads them: ``{n}``, ``{n,}``, ``{,n}``,
    spaces allowed around the numbers."""
    nums = [s.strip() for s in text.split(",")]
    try:
        if len(nums) == 1:
            return int(nums[0]), int(nums[0])
        if len(nums) == 2:
            return int(nums[0]) if nums[0] else 0, int(nums[1]) if nums[1] else None
    except ValueError:
        pass
    raise PatternError(f"the quantifier {{{text}}} is not one the grammar converter reads")


def pattern_shape(pattern: str, enough: int = 1 << 20) -> _Shape:
    """The converter's reading of ``pattern`` (which it wants as ``^…$``): its size and how
    many positions a match can be at once; PatternError where the converter would fail
    (or, for a stray ``}`` or ``]``, loop for ever)."""
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$"):
        pattern = pattern[:-1]
    i, n = 0, len(pattern)

    def group(depth: int) -> _Shape:
        nonlocal i
        alternatives: list[_Shape] = []
        seq: list[_Shape] = []

        def close() -> _Shape:
            out = _NOTHING
            for s in seq:
                out = _then(out, s)
            return out

        while i < n:
            c = pattern[i]
            if c == "(":
                i += 1
                if i < n and pattern[i] == "?":
                    raise PatternError(f"the group syntax (? at {i} is not supported")
                if depth > 1000:
                    raise PatternError("groups are nested too deeply")
                seq.append(group(depth + 1))
            elif c == ")":
                if depth == 0:
                    raise PatternError(f"an unbalanced ')' at {i}")
                i += 1
                break
            elif c == "|":
                alternatives.append(close())
                seq = []
                i += 1
            elif c == "[":
                i += 1
                while i < n and pattern[i] != "]":
                    i += 2 if pattern[i] == "\\" else 1
                if i >= n:
                    raise PatternError("an unbalanced '['")
                i += 1
                seq.append(_CHAR)
            elif c in "*+?":
                if not seq:
                    raise PatternError(f"nothing to repeat at {i}")
                seq[-1] = _optional(seq[-1]) if c == "?" else _loop(seq[-1], c == "*" or seq[-1].empty)
                i += 1
            elif c == "{":
                j = pattern.find("}", i)
                if j < 0:
                    raise PatternError("an unbalanced '{'")
                if not seq:
                    raise PatternError(f"nothing to repeat at {i}")
                lo, hi = _quantifier(pattern[i + 1:j])
                if hi is not None and hi < lo:
                    raise PatternError(f"the quantifier {pattern[i:j + 1]} has its bounds the wrong way round")
                seq[-1] = _repeat(seq[-1], lo, hi, enough)
                i = j + 1
            elif c in "}]":
                raise PatternError(f"a '{c}' at {i} must be escaped")
            else:  # one literal character (or escape); the converter's literal runs are sequences of them
                i += 2 if c == "\\" and i < n - 1 else 1
                seq.append(_CHAR)
        else:
            if depth:
                raise PatternError("an unbalanced '('")
        out = close()
        for alt in alternatives[::-1]:
            out = _either(alt, out)
        return out

    return group(0)


def places(shape: _Shape) -> int:
    """The most places a match of the whole pattern can be at once (the closing quote,
    which follows the pattern, counts as one)."""
    return max(shape.first + shape.empty, shape.inner, shape.last + 1)


def crowded_union(schema: dict, where: str, cap: int) -> tuple[str, int] | None:
    """Where in a (normalised) schema anyOf/oneOf alternatives add up to more than ``cap``
    places of their patterns at once, and how many: llama.cpp tries every alternative
    together, so ten alternatives of 31 places are 310 (measured: 4.6 s per token, where
    one of them costs 0.1 to 0.3 s). None where every union stays within ``cap``.
    Values without a pattern count 0 here (their stacks are few and cheap); an object
    or array costs what its costliest part does; a ``$ref`` what it refers to."""
    memo: dict[str, int] = {}
    found: list[tuple[str, int]] = []

    def target(ref: str) -> Any:
        node: Any = schema
        for part in ref.lstrip("#").split("/")[1:]:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def load(node, here: str) -> int:
        if found or not isinstance(node, dict):
            return 0
        if isinstance(ref := node.get("$ref"), str):
            if ref not in memo:
                memo[ref] = 0  # a schema that refers to itself: its own cost counts once
                memo[ref] = load(target(ref), ".".join([where, *ref.lstrip("#").split("/")[1:]]))
            return memo[ref]
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list):
                total = sum(load(sub, f"{here}.{key}[{i}]") for i, sub in enumerate(node[key]))
                if total > cap and not found:
                    found.append((f"{here}.{key}", total))
                return total
        if isinstance(node.get("pattern"), str):
            try:
                return places(pattern_shape(node["pattern"], cap))
            except PatternError:
                return 0
        parts = [(f"{here}.properties.{k}", v) for k, v in (node.get("properties") or {}).items()]
        for key in ("items", "prefixItems", "allOf"):
            value = node.get(key)
            parts += [(f"{here}.{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else \
                [(f"{here}.{key}", value)]
        parts.append((f"{here}.additionalProperties", node.get("additionalProperties")))
        return max((load(v, h) for h, v in parts), default=0)

    load(schema, where)
    return found[0] if found else None
