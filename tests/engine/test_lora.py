"""GGUF LoRA adapters on the engine's context, with the real Gemma 3 270M, no Ray."""

import asyncio

import pytest
from lora_files import write_lora

from poly_ray.engine.llama_engine import Engine
from poly_ray.engine.sources import ModelSourceError
from poly_ray.generation import Chunk, GenerationRequest, Sampling, Segment

pytestmark = pytest.mark.model


def greedy_text(gemma_path, adapters) -> str:
    engine = Engine(gemma_path, context_size=256, slots=1, threads=2, flush_interval=0, name="gemma",
                    lora_adapters=[(str(p), scale) for p, scale in adapters])
    req = GenerationRequest(prompt=(Segment("The capital of France is"),), max_tokens=12, ignore_eos=True,
                            sampling=Sampling(temperature=0.0))

    async def run():
        return "".join(ev.text for ev in [e async for e in engine.generate(req)] if isinstance(ev, Chunk))

    try:
        return asyncio.run(run())
    finally:
        engine.close()


def test_zero_adapter_changes_nothing_and_a_real_one_does(gemma_path, tmp_path):
    plain = greedy_text(gemma_path, [])
    zero = write_lora(tmp_path / "zero.gguf", value=0.0)
    assert greedy_text(gemma_path, [(zero, 1.0)]) == plain
    some = write_lora(tmp_path / "some.gguf", value=0.05, layers=range(18))
    changed = greedy_text(gemma_path, [(some, 1.0)])
    assert changed != plain
    # The scale reaches llama.cpp: 0 switches the adapter off.
    assert greedy_text(gemma_path, [(some, 0.0)]) == plain
    # Two adapters together: the zero one does not undo the other.
    assert greedy_text(gemma_path, [(zero, 1.0), (some, 1.0)]) == changed


@pytest.mark.parametrize("kw", [{"n_in": 512}, {"arch": "llama"}])
def test_an_adapter_for_another_model_is_refused_naming_the_key(gemma_path, tmp_path, kw):
    wrong = write_lora(tmp_path / "wrong.gguf", value=0.1, **kw)
    ok = write_lora(tmp_path / "ok.gguf", value=0.0)
    with pytest.raises(ModelSourceError, match=r"models\.gemma\.lora_adapters\[1\]\.path: llama\.cpp cannot apply"):
        Engine(gemma_path, context_size=256, slots=1, threads=2, name="gemma",
               lora_adapters=[(str(ok), 1.0), (str(wrong), 1.0)])
