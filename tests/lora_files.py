"""GGUF LoRA adapters for Gemma 3 270M, written with the `gguf` package as llama.cpp's
convert_lora_to_gguf.py writes them (no adapter for this model ships on PyPI)."""

from pathlib import Path

import gguf
import numpy as np

RANK = 4


def write_lora(path: Path, *, value: float, layers=(0,), arch: str = "gemma3", n_in: int = 640, n_out: int = 1024,
               alpha: float = RANK) -> Path:
    """An adapter on ``blk.N.attn_q.weight`` (640 in, 1024 out for Gemma 3 270M) whose
    A and B are filled with ``value``: 0 changes nothing, anything else changes the output."""
    w = gguf.GGUFWriter(path, arch=arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for layer in layers:
        # numpy shapes are ggml's reversed: A is ne [n_in, rank], B is ne [rank, n_out].
        w.add_tensor(f"blk.{layer}.attn_q.weight.lora_a", np.full((RANK, n_in), value, dtype=np.float32))
        w.add_tensor(f"blk.{layer}.attn_q.weight.lora_b", np.full((n_out, RANK), value, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
