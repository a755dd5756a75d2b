"""What the KV cache stores keys and values as, and what that costs per token of context.

llama-server's ``-ctk`` / ``-ctv`` / ``-fa``: ``f16`` (llama.cpp's default), ``q8_0``
(about half the bytes) or ``q4_0`` (about 0.28 of them). llama.cpp quantizes the V
cache only inside flash attention, so a quantized ``cache_type_v`` needs it on
(``auto`` turns it on where the backend has it); the config refuses ``off`` with
one (``config/models.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import llama_cpp

CacheType = Literal["f16", "q8_0", "q4_0"]
FlashAttn = Literal["auto", "on", "off"]

_GGML = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}
# ggml's blocks: (values per block, bytes per block).
_BLOCKS = {"f16": (1, 2), "q8_0": (32, 34), "q4_0": (32, 18)}
_FLASH = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
          "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}


@dataclass(frozen=True)
class KvCacheTypes:
    k: CacheType = "f16"
    v: CacheType = "f16"
    flash_attn: FlashAttn = "auto"

    @property
    def tag(self) -> str:
        """How snapshots and stats name it: cells of one type are not valid in a cache of another."""
        return f"k={self.k},v={self.v}"

    def apply(self, params) -> None:
        """Sets a ``llama_context_params``' cache types and flash attention."""
        params.type_k, params.type_v = _GGML[self.k], _GGML[self.v]
        params.flash_attn_type = _FLASH[self.flash_attn]

    def bytes_per_token(self, metadata: dict[str, str]) -> int | None:
        """Bytes one token's cell takes over all layers, from the GGUF's attention shape
        (None: a shape these keys do not describe, e.g. per-layer head counts)."""
        try:
            return self._bytes_per_token(metadata)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None

    def _bytes_per_token(self, metadata: dict[str, str]) -> int:
        arch = metadata["general.architecture"]

        def number(key: str, default: int | None = None) -> int:
            value = metadata.get(f"{arch}.{key}", default)
            if value is None:
                raise KeyError(f"{arch}.{key}")
            return int(value)

        layers, embd, heads = number("block_count"), number("embedding_length"), number("attention.head_count")
        heads_kv = number("attention.head_count_kv", heads)
        k_width = number("attention.key_length", embd // heads) * heads_kv
        v_width = number("attention.value_length", embd // heads) * heads_kv
        return layers * (_row_bytes(self.k, k_width) + _row_bytes(self.v, v_width))


def _row_bytes(kind: str, values: int) -> int:
    per_block, size = _BLOCKS[kind]
    return -(-values // per_block) * size
