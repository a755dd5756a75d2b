"""Schemas that attack the grammar path (review 2026-12-07, N1 and N2): each is refused with
a 400 that names the field and the schema_limits key, before any large grammar is built;
what the caps cannot foresee is stopped in the converter's child process."""

import re

import pytest

from poly_ray.grammars import Caps, SchemaError, from_schema, normalise, pattern_size
from poly_ray.grammars.patterns import PatternError, pattern_shape, places

ATTACKS = [
    # N1: a tuple-form items list was not walked; {,n} was not counted
    ({"type": "array", "items": [{"type": "string", "maxLength": 1_000_000_000}]},
     "schema.items[0].maxLength is 1000000000; at most 1000 can be enforced (schema_limits.max_length)"),
    ({"type": "array", "items": [{"type": "null"}] * 101}, "schema.items has 101 items; at most 100 (schema_limits.max_items)"),
    ({"type": "string", "pattern": "^a{,10000000}$"},
     "schema.pattern expands to 10000000 characters; at most 1000 (schema_limits.max_repeat)"),
    ({"type": "string", "pattern": "^a{ , 5000 }$"}, "schema.pattern expands to 5000 characters"),
    ({"type": "string", "pattern": "^a{5000,}$"}, "schema.pattern expands to 5000 characters"),
    # N2: many places at once in llama.cpp's parse
    ({"type": "string", "pattern": "^(a?){1000}$"},
     "schema.pattern can match at more than 32 places at once (optional parts in a row, alternatives); "
     "at most 32 (schema_limits.max_pattern_stacks)"),
    ({"type": "object", "properties": {"p": {"type": "string", "pattern": "^(a?b?){20}$"}}},
     "schema.properties.p.pattern can match at more than 32 places"),
    ({"type": "string", "pattern": "^((a?){8}){8}$"}, "schema.pattern can match at more than 32 places"),
    ({"type": "string", "pattern": "^(a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p|q|r|s|t|u|v|w|x|y|z|0|1|2|3|4|5|6)$"},
     "schema.pattern can match at more than 32 places"),
    # an enum's values (or a union's alternatives) are each tried at once: 1,000 cost 1.7 s per token
    ({"type": "string", "enum": [f"v{i}" for i in range(1000)]},
     "schema.enum has 1000 values; at most 128 (schema_limits.max_enum)"),
    ({"type": "object", "properties": {"p": {"anyOf": [{"const": i} for i in range(129)]}}},
     "schema.properties.p.anyOf has 129 alternatives; at most 128 (schema_limits.max_enum)"),
    # patterns the converter would loop on for ever, or turn into a left-recursive rule
    ({"type": "string", "pattern": "^a}$"}, "schema.pattern cannot be converted: a '}' at 1 must be escaped"),
    ({"type": "string", "pattern": "^]$"}, "schema.pattern cannot be converted: a ']' at 0 must be escaped"),
    ({"type": "string", "pattern": "^(a?)*$"}, "schema.pattern cannot be converted: it repeats without bound"),
    ({"type": "string", "pattern": "^(a|)+$"}, "schema.pattern cannot be converted: it repeats without bound"),
    ({"type": "string", "pattern": "^a{x}$"}, "schema.pattern cannot be converted: the quantifier {x}"),
    # a $ref the walk did not see reached the converter's fetching code
    ({"const": {"$ref": "https://127.0.0.1:9/x.json"}}, "schema.const holds a \"$ref\" key"),
    ({"enum": ["a", {"$ref": "#/x"}]}, "schema.enum holds a \"$ref\" key"),
    ({"type": "array", "items": [{"$ref": "https://127.0.0.1:9/x.json"}]},
     "schema.items[0].$ref: only references within the schema"),
]


@pytest.mark.parametrize("schema, message", ATTACKS)
def test_each_attack_is_refused_by_name(schema, message):
    with pytest.raises(SchemaError, match=re.escape(message)) as err:
        from_schema(schema)
    assert err.value.status == 400 and err.value.code == "unsupported_schema"


def test_references_in_annotations_never_reach_the_converter():
    schema = {"type": "string", "maxLength": 3, "default": {"$ref": "https://127.0.0.1:9/x.json"},
              "examples": [{"$ref": "https://127.0.0.1:9/y.json"}], "description": "d"}
    assert normalise(schema) == {"type": "string", "maxLength": 3}
    assert "root ::=" in from_schema(schema)


def test_a_tuple_items_list_is_converted_like_prefix_items():
    grammar = from_schema({"type": "array", "items": [{"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": 9}]})
    assert 'root ::= "[" space boolean "," space tuple-1 "]" space' in grammar and "tuple-1 ::= ( ([0-9]) ) space" in grammar


def test_a_copying_schema_inside_every_cap_is_stopped_in_the_child():
    """allOf copies what it references: 13 KB that pass every cap would make the converter build
    gigabytes (measured: the ingress process past 23 GB before). The child's limit stops it."""
    def level(ref):
        return {"type": "object", "properties": {f"o{j}": {"allOf": [{"$ref": ref}]} for j in range(100)}}
    leaf = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 1000} for i in range(100)}}
    schema = {"$defs": {"l1": leaf, "l2": level("#/$defs/l1"), "l3": level("#/$defs/l2")},
              "allOf": [{"$ref": "#/$defs/l3"}]}
    with pytest.raises(SchemaError, match=r"schema needs more than \d+ MiB to convert \(schema_limits\.max_grammar_bytes"):
        from_schema(schema, caps=Caps(timeout_s=30))
    with pytest.raises(SchemaError, match=r"took longer than 0\.05 s to convert \(schema_limits\.timeout_s\)"):
        from_schema(schema, caps=Caps(timeout_s=0.05))
    assert "root ::=" in from_schema({"type": "string", "maxLength": 7})  # a new child took over


NORMAL = [
    r"^\d{3}-\d{4}$", "^[a-z]{1,50}@[a-z]{2,10}\\.(com|org|net)$", r"^(\+\d{1,3} ?)?\(?\d{3}\)?[ -]?\d{3}-?\d{4}$",
    "^a{0,1000}$", "^(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)-[0-9]{2}$", "^(a?){31}$",
]


@pytest.mark.parametrize("pattern", NORMAL)
def test_normal_patterns_still_convert(pattern):
    assert "root ::=" in from_schema({"type": "string", "pattern": pattern})


def test_a_normal_schema_still_converts():
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "maxItems": 5},
        "kind": {"enum": ["a", "b"]}}, "required": ["name", "age"]}
    grammar = from_schema(schema)
    assert "root ::=" in grammar and "@@number" not in grammar


def test_places_count_what_llama_cpp_keeps():
    assert places(pattern_shape("^(a?){1000}$", 32)) > 32
    assert places(pattern_shape("^a{0,1000}$")) == 2  # nested optionals: one place inside, one after
    assert places(pattern_shape(r"^\d{3}-\d{4}$")) == 1
    assert places(pattern_shape("^a?b?c?d?$")) == 5
    assert pattern_size("^a{,9}$") == 9 and pattern_size("^(ab){2,}$") == 4
    with pytest.raises(PatternError):
        pattern_shape("^(?:a)$")


def test_the_stack_cap_is_a_config_key():
    from poly_ray import config

    cfg = config.schema.SchemaLimits(max_pattern_stacks=4)
    with pytest.raises(SchemaError, match=r"at most 4 \(schema_limits\.max_pattern_stacks\)"):
        from_schema({"type": "string", "pattern": "^a?b?c?d?$"}, caps=cfg.caps())
    assert from_schema({"type": "string", "pattern": "^a?b?c?$"}, caps=cfg.caps())


def test_the_enum_cap_is_a_config_key():
    from poly_ray import config

    values = {"type": "string", "enum": [f"v{i}" for i in range(128)]}
    assert from_schema(values)  # at the default, accepted
    with pytest.raises(SchemaError, match=r"has 128 values; at most 64 \(schema_limits\.max_enum\)"):
        from_schema(values, caps=config.schema.SchemaLimits(max_enum=64).caps())


def test_alternatives_add_their_patterns_places_up():
    """Ten alternatives of 31 places each are 310 at once for llama.cpp (measured 4.6 s per token)."""
    with pytest.raises(SchemaError, match=re.escape(
            "schema.anyOf: its alternatives' patterns can match at 320 places at once; at most 32 "
            "(schema_limits.max_pattern_stacks)")):
        from_schema({"anyOf": [{"type": "string", "pattern": "^(a?){31}$"}] * 10})
    with pytest.raises(SchemaError, match=re.escape("schema.$defs.u.oneOf: its alternatives' patterns")):
        from_schema({"type": "object", "properties": {"x": {"$ref": "#/$defs/u"}},
                     "$defs": {"u": {"oneOf": [{"type": "string", "pattern": "^a?b?c?d?e?f?g?h?$"}] * 5}}})
    assert from_schema({"anyOf": [{"const": i} for i in range(100)]})  # no pattern: cheap literals
    assert from_schema({"anyOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"type": "null"}]})
