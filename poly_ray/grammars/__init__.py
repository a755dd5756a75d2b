"""JSON schemas to the GBNF grammars that make the model's output follow them.

llama.cpp's converter enforces most of JSON Schema but skips what it does not
know. So a schema is walked first: Poly's own keywords are translated, and a
keyword the grammar cannot enforce is refused by name rather than silently
dropped, which would let unconstrained JSON through.

A schema is also a way to attack the server: the converter writes
``maxLength: 100000`` as 100,000 nested groups, which llama.cpp's GBNF parser
walks recursively (a crash of the model replica), and nested pattern repeats
multiply the grammar's size on the ingress. So every bound is capped (``Caps``,
the config's ``schema_limits``), remote ``$ref`` is refused, and the grammar's
size and nesting are checked before it leaves the ingress.

Every place a schema can hold a schema is walked (a tuple ``items`` list included), a
``pattern`` is read exactly as the converter reads it (``patterns``), and the converter
itself runs in a warm child process with a memory limit that a timeout kills
(``isolated``): what the caps do not foresee costs that child, never the ingress. A
pattern that keeps llama.cpp at many places at once (``(a?){1000}``) is refused: every
sampled token would cost a pass over the vocabulary per place, and more (see patterns).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from llama_cpp.llama_grammar import JSON_GBNF

from poly_ray.errors import BadRequest, Busy

from . import isolated
from .patterns import PatternError, crowded_union, pattern_shape, places

ANY_JSON = JSON_GBNF

# Poly's schema dialect → JSON Schema.
_POLY = {"min": "minimum", "max": "maximum", "max_length": "maxLength", "min_length": "minLength",
         "min_items": "minItems", "max_items": "maxItems"}
_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment"}
_ENFORCED = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "enum", "const", "minLength", "maxLength", "pattern", "format", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "definitions",
} | _ANNOTATIONS
_INTEGER_BOUNDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}


class SchemaError(BadRequest):
    code = "unsupported_schema"


@dataclass(frozen=True)
class Caps:
    """What one schema may ask of a grammar (the config's ``schema_limits``; these defaults
    keep llama.cpp's parser well inside its stack and the grammar small)."""

    max_length: int = 1000  # maxLength / minLength of a string
    max_items: int = 100  # maxItems / minItems / prefixItems of an array
    max_repeat: int = 1000  # characters a `pattern` expands to, repeats multiplied out
    # places a `pattern` can be at once; llama.cpp checks the vocabulary once per place and
    # token, and more than linearly: (a?){N} measured 0.10 s/token at 32, 0.47 at 64, 7 at 128
    max_pattern_stacks: int = 32
    # values of an enum, alternatives of an anyOf/oneOf: llama.cpp tries each at once at the
    # value's first tokens; an enum of random words measured about 2 ms per value and token
    # (Gemma's vocabulary, 2 cores): 0.08 s at 32, 0.25 at 128, 1.0 at 512, 1.7 at 1000
    max_enum: int = 128
    max_depth: int = 32  # schemas nested in schemas
    max_properties: int = 100  # properties of one object
    max_schema_bytes: int = 64 << 10  # the schema as JSON
    max_grammar_bytes: int = 256 << 10  # the GBNF grammar it becomes
    max_grammar_nesting: int = 1100  # parentheses open at once in a rule (llama.cpp recurses per group)
    timeout_s: float = 5.0  # converting, off the event loop


DEFAULT_CAPS = Caps()
_LENGTHS = {"maxLength": "max_length", "minLength": "max_length", "maxItems": "max_items", "minItems": "max_items"}


def normalise(schema, where: str = "schema", caps: Caps = DEFAULT_CAPS, depth: int = 0) -> dict:
    """The schema in standard JSON Schema; SchemaError names a keyword that cannot be enforced
    or a bound over ``caps``."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a JSON object")
    if depth > caps.max_depth:
        raise SchemaError(f"{where}: schemas are nested more than {caps.max_depth} deep (schema_limits.max_depth)")
    if schema.get("type") == "number" and (_NUMBER_BOUNDS & schema.keys()):
        return _number(schema, where)
    schema = {_POLY.get(k, k): v for k, v in schema.items()}
    if _INTEGER_BOUNDS & schema.keys():
        schema = _bounded_integer(schema, where)
    out = {}
    for key, value in schema.items():
        here = f"{where}.{key}"
        if key == "max_decimals":
            raise SchemaError(f"{where}.max_decimals is enforced on numbers only (type = \"number\")")
        elif key not in _ENFORCED:
            raise SchemaError(f"{here} cannot be enforced by a grammar")
        elif key in _ANNOTATIONS:
            continue  # no part of the grammar; and the converter would follow a "$ref" inside one
        _check_bound(key, value, here, caps)
        if key in ("properties", "$defs", "definitions"):
            if not isinstance(value, dict):
                raise SchemaError(f"{here} must be an object")
            value = {name: normalise(sub, f"{here}.{name}", caps, depth + 1) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = normalise(value, here, caps, depth + 1)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") or (key == "items" and isinstance(value, list)):
            # A list of "items" is a tuple (an older prefixItems): the converter reads it so.
            if not isinstance(value, list):
                raise SchemaError(f"{here} must be a list")
            value = [normalise(sub, f"{here}[{i}]", caps, depth + 1) for i, sub in enumerate(value)]
        elif key in ("const", "enum") and _holds_ref(value):
            raise SchemaError(f"{here} holds a \"$ref\" key, which the converter would follow as a reference")
        elif key in ("items", "additionalProperties") and not isinstance(value, bool):
            raise SchemaError(f"{here} must be a schema or a boolean")
        out[key] = value
    return out


def _holds_ref(value) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if "$ref" in v:
                return True
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _check_bound(key: str, value, here: str, caps: Caps) -> None:
    if key in _LENGTHS:
        cap = getattr(caps, _LENGTHS[key])
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SchemaError(f"{here} must be a non-negative integer")
        if value > cap:
            raise SchemaError(f"{here} is {value}; at most {cap} can be enforced (schema_limits.{_LENGTHS[key]})")
    elif key in ("prefixItems", "items") and isinstance(value, list) and len(value) > caps.max_items:
        raise SchemaError(f"{here} has {len(value)} items; at most {caps.max_items} (schema_limits.max_items)")
    elif key == "enum" and isinstance(value, list) and len(value) > caps.max_enum:
        raise SchemaError(f"{here} has {len(value)} values; at most {caps.max_enum} (schema_limits.max_enum)")
    elif key in ("anyOf", "oneOf") and isinstance(value, list) and len(value) > caps.max_enum:
        raise SchemaError(f"{here} has {len(value)} alternatives; at most {caps.max_enum} (schema_limits.max_enum)")
    elif key == "properties" and isinstance(value, dict) and len(value) > caps.max_properties:
        raise SchemaError(f"{here} has {len(value)} properties; at most {caps.max_properties} "
                          "(schema_limits.max_properties)")
    elif key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
        raise SchemaError(f"{here}: only references within the schema ('#/...') are followed, not {value!r}")
    elif key == "pattern":
        if not isinstance(value, str):
            raise SchemaError(f"{here} must be a string")
        try:
            shape = pattern_shape(value, caps.max_pattern_stacks)
        except PatternError as e:
            raise SchemaError(f"{here} cannot be converted: {e}") from None
        if shape.size > caps.max_repeat:
            raise SchemaError(f"{here} expands to {shape.size} characters; at most {caps.max_repeat} "
                              "(schema_limits.max_repeat)")
        stacks = places(shape)
        if stacks > caps.max_pattern_stacks:
            raise SchemaError(f"{here} can match at more than {caps.max_pattern_stacks} places at once (optional parts in a row, "
                              f"alternatives); at most {caps.max_pattern_stacks} (schema_limits.max_pattern_stacks): "
                              "write a{0,9} rather than (a?){9}, and [abc] rather than (a|b|c)")


def pattern_size(pattern: str) -> int:
    """How many characters a regex's grammar spells out with its repeats multiplied out
    (`(ab){3}` is 6, `a*` is 1, `a{,9}` is 9): an upper bound of what the converter writes.
    PatternError (a ValueError) where the converter could not read it."""
    return pattern_shape(pattern, 0).size


# Bounded numbers and their decimals (Poly's { type = "number", min, max, max_decimals }, JSON
# Schema's minimum, maximum, exclusiveMinimum, exclusiveMaximum on a number or an integer, one
# side or both) are grammar rules of their own: normalise leaves a marker (a string constant)
# that the converter writes as a literal, and _numbers puts the rule in its place. A bound in
# the marker is a plain decimal, after "!" when it is exclusive.
_MARK = re.compile(r'"\\"@@number\|(!?-?[0-9.]*)\|(!?-?[0-9.]*)\|(\d+)@@\\""')
_MAX_DECIMALS = 15
_MAX_DIGITS = 15  # an unbounded side: integer parts of at most this many digits (a double's precision)
_NUMBER_BOUNDS = {"min", "max", "max_decimals"} | _INTEGER_BOUNDS


@dataclass(frozen=True)
class Bound:
    """One side of a range: a decimal, and whether it is itself excluded."""

    value: Decimal
    open: bool = False

    def marker(self) -> str:
        return ("!" if self.open else "") + format(self.value, "f")

    @classmethod
    def read(cls, text: str) -> Bound | None:
        return cls(Decimal(text.lstrip("!")), text.startswith("!")) if text else None


def _bounds(schema: dict, where: str) -> tuple[Bound | None, Bound | None]:
    """The lower and upper bound a schema's minimum/maximum/exclusive* (Poly's min/max) set, the
    stricter where two set one side; an exclusive bound may be draft 4's boolean beside its bound."""
    def number(key: str) -> Decimal | None:
        value = schema.get(key)
        if value is None or (isinstance(value, bool) and key.startswith("exclusive")):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaError(f"{where}.{key} must be a number, not {value!r}")
        return Decimal(str(value))

    def side(inclusive: str, poly: str, exclusive: str) -> list[Bound]:
        found = [Bound(v, schema.get(exclusive) is True) for v in (number(inclusive), number(poly)) if v is not None]
        if (v := number(exclusive)) is not None:
            found.append(Bound(v, True))
        return found

    # The stricter of each side's bounds; on a tie the exclusive one.
    lo = max(side("minimum", "min", "exclusiveMinimum"), key=lambda b: (b.value, b.open), default=None)
    hi = min(side("maximum", "max", "exclusiveMaximum"), key=lambda b: (b.value, not b.open), default=None)
    if lo is not None and hi is not None and (lo.value > hi.value or (lo.value == hi.value and (lo.open or hi.open))):
        raise SchemaError(f"{where}: no number is above the minimum {lo.value} and below the maximum {hi.value}")
    return lo, hi


def _marker(lo: Bound | None, hi: Bound | None, decimals: int) -> dict:
    low, high = ("" if b is None else b.marker() for b in (lo, hi))
    return {"const": f"@@number|{low}|{high}|{decimals}@@"}


def _number(schema: dict, where: str) -> dict:
    """Poly's number schema (or JSON Schema's bounds on a number) as a marker."""
    poly = bool({"min", "max", "max_decimals"} & schema.keys())
    for key in schema:
        if key not in _NUMBER_BOUNDS | _ANNOTATIONS | {"type"}:
            raise SchemaError(f"{where}.{key} cannot be enforced by a grammar beside the bounds of a number")
    lo, hi = _bounds(schema, where)
    # Poly writes a number without max_decimals as a whole number; JSON Schema allows any decimals.
    decimals = schema.get("max_decimals", 0 if poly else _MAX_DECIMALS)
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= _MAX_DECIMALS:
        raise SchemaError(f"{where}.max_decimals must be a whole number from 0 to {_MAX_DECIMALS}")
    if number_expression(lo, hi, decimals) == "":
        raise SchemaError(f"{where}: no number with at most {decimals} decimals is within its bounds")
    return _marker(lo, hi, decimals)


def _numbers(grammar: str) -> str:
    """The converter's grammar with each number marker replaced by its rule."""
    def rule(m: re.Match) -> str:
        return f"( {number_expression(Bound.read(m.group(1)), Bound.read(m.group(2)), int(m.group(3)))} ) space"

    out = _MARK.sub(rule, grammar)
    if out != grammar and not re.search(r"^space ::=", out, re.M):
        out += '\nspace ::= " "?'
    return out


def number_expression(lo: Bound | int | None, hi: Bound | int | None, decimals: int) -> str:
    """A GBNF expression for the JSON numbers between lo and hi (None: unbounded; an int: an
    inclusive bound) with at most ``decimals`` digits after the point ("" when there are none).
    Exact for decimal bounds: a value's integer part is compared first, then its decimals as
    digits (``_fraction``)."""
    lo, hi = (Bound(Decimal(b)) if isinstance(b, int) else b for b in (lo, hi))
    zero = Bound(Decimal(0))
    alts = []
    # Non-negative values: magnitudes from max(lo, 0) to hi.
    if hi is None or hi.value > 0 or (hi.value == 0 and not hi.open):
        alts += _magnitudes(lo if lo is not None and lo.value >= 0 else zero, hi, decimals, "")
    # Negative values: magnitudes from max(-hi, 0) to -lo, after a minus.
    if lo is None or lo.value < 0:
        low = Bound(-hi.value, hi.open) if hi is not None and hi.value <= 0 else zero
        if low.value == 0 and not low.open:
            low = Bound(Decimal(0), True)  # zero is written without a minus
        alts += _magnitudes(low, None if lo is None else Bound(-lo.value, lo.open), decimals, '"-" ')
    return alts[0] if len(alts) == 1 else " | ".join(f"( {a} )" for a in alts)


def _magnitudes(low: Bound, high: Bound | None, decimals: int, sign: str) -> list[str]:
    """Alternatives for the non-negative numbers from low to high (None: unbounded): integer
    parts strictly between the bounds' as one digit range with any decimals, each bound's own
    integer part with the decimals on its side of it."""
    if decimals == 0:  # whole numbers: one digit range
        first = _floor(low.value) + 1 if low.open else -_floor(-low.value)
        last = None if high is None else (-_floor(-high.value) - 1 if high.open else _floor(high.value))
        return [f"{sign}({uint_range(first, last)})"] if last is None or first <= last else []
    low_int, low_frac = _split(low.value)
    anyfrac = f' ("." [0-9]{{1,{decimals}}})?'
    # An inclusive whole low bound takes any decimals: its integer part joins the range.
    first = low_int if not low_frac and not low.open else low_int + 1
    alts = [] if first == low_int else [
        _with_fraction(f'{sign}"{low_int}"', _fraction(low_frac, low.open, None, False, decimals))]
    if high is None:
        alts.append(f"{sign}({uint_range(first, None)}){anyfrac}")
        return [a for a in alts if a]
    high_int, high_frac = _split(high.value)
    if high_int == low_int:
        return [a for a in [_with_fraction(f'{sign}"{low_int}"', _fraction(low_frac, low.open, high_frac, high.open,
                                                                           decimals))] if a]
    if first <= high_int - 1:
        alts.append(f"{sign}({uint_range(first, high_int - 1)}){anyfrac}")
    alts.append(_with_fraction(f'{sign}"{high_int}"', _fraction("", False, high_frac, high.open, decimals)))
    return [a for a in alts if a]


def _split(value: Decimal) -> tuple[int, str]:
    """A non-negative decimal's integer part and the digits after its point (no trailing zeros)."""
    whole, _, digits = format(value, "f").partition(".")
    return int(whole), digits.rstrip("0")


def _with_fraction(integer: str, fraction: tuple[str | None, bool]) -> str:
    """An integer part and the decimals that may follow it ("" when none may: no such number)."""
    expr, bare = fraction
    if expr is None:
        return integer if bare else ""
    return f'{integer} ("." ({expr})){"?" if bare else ""}'


def _fraction(lo: str, lo_open: bool, hi: str | None, hi_open: bool, n: int) -> tuple[str | None, bool]:
    """The digit strings s of 0 to n digits whose value 0.s lies between 0.lo and 0.hi (hi None:
    below 1), each end excluded when open: a GBNF expression of the non-empty ones (None: there
    are none), and whether the empty one (the value 0) is in. Decimals compare digit by digit,
    a missing digit read as 0, so each level settles one digit."""
    bare = (not lo.strip("0") and not lo_open) and (hi is None or not hi_open or bool(hi.strip("0")))
    if n == 0:
        return None, bare
    low, low_rest = (int(lo[0]), lo[1:]) if lo else (0, "")
    high, high_rest = (10, None) if hi is None else ((int(hi[0]), hi[1:]) if hi else (0, ""))
    alts = []
    if low == high:  # both ends hold the first digit
        alts.append(_with_fraction_digit(low, _fraction(low_rest, lo_open, high_rest, hi_open, n - 1)))
    else:
        alts.append(_with_fraction_digit(low, _fraction(low_rest, lo_open, None, False, n - 1)))
        if low + 1 <= min(high - 1, 9):
            rest = f" [0-9]{{0,{n - 1}}}" if n > 1 else ""
            alts.append(f"[{low + 1}-{min(high - 1, 9)}]{rest}")
        if high <= 9:
            alts.append(_with_fraction_digit(high, _fraction("", False, high_rest, hi_open, n - 1)))
    alts = [a for a in alts if a]
    return (" | ".join(f"( {a} )" for a in alts) if alts else None), bare


def _with_fraction_digit(digit: int, rest: tuple[str | None, bool]) -> str:
    expr, bare = rest
    if expr is None:
        return f'"{digit}"' if bare else ""
    return f'"{digit}" ({expr}){"?" if bare else ""}'


def uint_range(lo: int, hi: int | None) -> str:
    """A GBNF expression for the decimal integers in [lo, hi] written without leading zeros
    (hi None: up to _MAX_DIGITS digits, or as many as lo has)."""
    top = 10 ** max(_MAX_DIGITS, len(str(lo))) - 1 if hi is None else hi
    alts = []
    for length in range(len(str(lo)), len(str(top)) + 1):
        a, b = max(lo, 10 ** (length - 1) if length > 1 else 0), min(top, 10 ** length - 1)
        if a <= b:
            alts.append(_same_length(str(a), str(b)))
    return " | ".join(alts)


def _same_length(lo: str, hi: str) -> str:
    """Digit strings of one length between lo and hi (inner digits may be zeros)."""
    if lo == hi:
        return f'"{lo}"'
    if len(lo) == 1:
        return f"[{lo}-{hi}]"
    rest = len(lo) - 1
    if lo[0] == hi[0]:
        return f'"{lo[0]}" ({_same_length(lo[1:], hi[1:])})'
    parts = []
    first, last = int(lo[0]), int(hi[0])
    if lo[1:] != "0" * rest:
        parts.append(f'"{lo[0]}" ({_same_length(lo[1:], "9" * rest)})')
        first += 1
    tail = None
    if hi[1:] != "9" * rest:
        tail = f'"{hi[0]}" ({_same_length("0" * rest, hi[1:])})'
        last -= 1
    if first <= last:
        parts.append(f"[{first}-{last}] [0-9]{{{rest}}}")
    if tail:
        parts.append(tail)
    return " | ".join(f"( {p} )" for p in parts) if len(parts) > 1 else parts[0]


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(ROUND_FLOOR))


def _bounded_integer(schema: dict, where: str) -> dict:
    """An integer's bounds (either side or both, inclusive or exclusive, whole or not) as the
    whole numbers between them: digit ranges (``uint_range``), which keep llama.cpp at a few
    places at once where an enum of the values kept it at one per value (0..1000 as an enum
    measured 1.4 s per token)."""
    if schema.get("type") != "integer":
        raise SchemaError(f"{where}: minimum/maximum are enforced on numbers and integers, not on {schema.get('type')!r}")
    for key in schema:
        if key not in _INTEGER_BOUNDS | _ANNOTATIONS | {"type"}:
            raise SchemaError(f"{where}.{key} cannot be enforced by a grammar beside the bounds of an integer")
    lo, hi = _bounds(schema, where)
    # The whole numbers within: from 3 above 2.5 or 2 (exclusive), to 6 below 7 (exclusive) or 6.5.
    low = None if lo is None else (_floor(lo.value) + 1 if lo.open else -_floor(-lo.value))
    high = None if hi is None else (-_floor(-hi.value) - 1 if hi.open else _floor(hi.value))
    if low is not None and high is not None and low > high:
        raise SchemaError(f"{where}: no integer is within its bounds")
    return _marker(None if low is None else Bound(Decimal(low)), None if high is None else Bound(Decimal(high)), 0)


def from_schema(schema: dict, where: str = "schema", caps: Caps = DEFAULT_CAPS) -> str:
    """The grammar of a JSON schema (standard or Poly's dialect); SchemaError if it cannot be
    enforced or asks more than ``caps``. CPU-bound: call it off the event loop."""
    try:
        # Not sorted: the converter writes properties in the schema's order, and the model must
        # too ("reasoning" before "answer" is a schema's way to have it think first).
        schema_json = json.dumps(schema)
    except (TypeError, ValueError, RecursionError):
        raise SchemaError(f"{where} must be JSON") from None
    if len(schema_json) > caps.max_schema_bytes:
        raise SchemaError(f"{where} is {len(schema_json)} bytes as JSON; at most {caps.max_schema_bytes} "
                          "(schema_limits.max_schema_bytes)")
    grammar, refusal = _grammar(schema_json, where, caps)
    if grammar is None:
        raise SchemaError(refusal or f"{where} could not be converted")
    return grammar


@functools.lru_cache(maxsize=256)
def _grammar(schema_json: str, where: str, caps: Caps) -> tuple[str | None, str | None]:
    """The grammar, or why not. Both are kept: the same task schema comes with every request,
    and a refused one, sent again, costs nothing again (a timeout held a child for timeout_s)."""
    try:
        return _convert(schema_json, where, caps), None
    except SchemaError as e:
        return None, e.message


def _convert(schema_json: str, where: str, caps: Caps) -> str:
    normalised = normalise(json.loads(schema_json), where, caps)
    if crowded := crowded_union(normalised, where, caps.max_pattern_stacks):
        raise SchemaError(f"{crowded[0]}: its alternatives' patterns can match at {crowded[1]} places at once; "
                          f"at most {caps.max_pattern_stacks} (schema_limits.max_pattern_stacks)")
    try:  # in a child process: what the caps do not foresee is killed there (isolated)
        answer = isolated.convert(json.dumps(normalised), caps.max_grammar_bytes, caps.timeout_s)
    except isolated.Failed as e:
        if e.reason == "busy":  # raised through _grammar, so not kept as the schema's answer
            raise Busy(f"no grammar converter came free within {caps.timeout_s} s (schema_limits.timeout_s); "
                       "try again") from None
        if e.reason == "timeout":
            raise SchemaError(f"{where} took longer than {caps.timeout_s} s to convert "
                              "(schema_limits.timeout_s)") from None
        answer = {"memory": True}
    if answer.get("memory"):
        raise SchemaError(f"{where} needs more than {isolated.MEMORY_BYTES >> 20} MiB to convert "
                          f"(schema_limits.max_grammar_bytes is {caps.max_grammar_bytes})")
    if "too_big" in answer:
        raise SchemaError(f"{where} becomes a grammar of {answer['too_big']} bytes; at most {caps.max_grammar_bytes} "
                          "(schema_limits.max_grammar_bytes)")
    if answer.get("error") == "recursion":
        raise SchemaError(f"{where} refers to itself too deeply")
    if "error" in answer:
        raise SchemaError(f"{where} is not supported: {answer['error'].partition(': ')[2] or answer['error']}")
    grammar = _numbers(answer["grammar"])
    check_grammar(grammar, where, caps)
    return grammar


def check_grammar(grammar: str, where: str, caps: Caps = DEFAULT_CAPS) -> None:
    """SchemaError unless the grammar is small enough and nested shallowly enough for llama.cpp."""
    if len(grammar) > caps.max_grammar_bytes:
        raise SchemaError(f"{where} becomes a grammar of {len(grammar)} bytes; at most {caps.max_grammar_bytes} "
                          "(schema_limits.max_grammar_bytes)")
    nesting = grammar_nesting(grammar)
    if nesting > caps.max_grammar_nesting:
        raise SchemaError(f"{where} becomes a grammar nested {nesting} deep; at most {caps.max_grammar_nesting} "
                          "(schema_limits.max_grammar_nesting)")


def grammar_nesting(grammar: str) -> int:
    """The most parentheses open at once in a GBNF grammar, outside literals and character classes."""
    deepest = depth = 0
    quote = None  # '"' inside a literal, "]" inside a class
    escaped = False
    for c in grammar:
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
        elif c == '"':
            quote = '"'
        elif c == "[":
            quote = "]"
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        elif c == "\n":
            depth = 0
    return deepest
