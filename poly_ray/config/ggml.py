"""GGML, the model format before GGUF (llama.cpp dropped it in August 2023): Poly's
sample model is one. llama.cpp loads GGUF only, so a GGML file is refused at start-up
with the way to a GGUF file: convert the original weights (docs/guides/migrating.md)."""

from __future__ import annotations

from pathlib import Path

# The first four bytes of GGML's variants, as written (a little-endian uint32):
# ggml (unversioned), ggmf, ggjt (llama.cpp's), ggla (a LoRA adapter).
_MAGIC = {"ggml": b"lmgg", "ggmf": b"fmgg", "ggjt": b"tjgg", "ggla": b"algg"}


def ggml_variant(path: Path) -> str | None:
    """Which GGML variant the file is, or None (GGUF, or something else)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    return next((name for name, magic in _MAGIC.items() if head in (magic, magic[::-1])), None)


def ggml_advice(path: Path, variant: str) -> str:
    """What to do with a GGML file, in one line."""
    return (f"{path} is a GGML file ({variant}), which llama.cpp no longer loads: convert the model's original "
            "weights to GGUF with llama.cpp's convert_hf_to_gguf.py (e.g. `python convert_hf_to_gguf.py "
            "path/to/hf-model --outfile model.gguf`), or use a GGUF file of it from Hugging Face")
