"""LoRA adapters (GGUF, as llama.cpp's convert_lora_to_gguf.py writes them) on a context.

llama.cpp adds each adapter's low-rank product to the weights it names at every
matrix multiplication, so one base model file serves its fine-tunes. Adapters
are loaded once per model and belong to it (freed with it).
"""

from __future__ import annotations

import ctypes

import llama_cpp

from .sources import ModelSourceError


def apply(model, ctx, adapters: list[tuple[str, float]], name: str) -> list:
    """Load ``adapters`` ((path, scale), in config order) onto ``model`` and set them on ``ctx``.

    ModelSourceError names the adapter's config key when llama.cpp refuses it (another
    architecture, or tensors whose shapes do not fit this model)."""
    if not adapters:
        return []
    loaded = []
    for i, (path, _) in enumerate(adapters):
        adapter = llama_cpp.llama_adapter_lora_init(model, str(path).encode())
        if not adapter:
            raise ModelSourceError(
                f"models.{name}.lora_adapters[{i}].path: llama.cpp cannot apply {path} to this model "
                "(an adapter for another architecture, or tensors of other shapes?)"
            )
        loaded.append(adapter)
    pointers = (llama_cpp.llama_adapter_lora_p_ctypes * len(loaded))(*loaded)
    scales = (ctypes.c_float * len(loaded))(*(scale for _, scale in adapters))
    if llama_cpp.llama_set_adapters_lora(ctx, pointers, len(loaded), scales) != 0:
        raise ModelSourceError(f"models.{name}.lora_adapters: llama.cpp could not set the adapters on the context")
    return loaded
