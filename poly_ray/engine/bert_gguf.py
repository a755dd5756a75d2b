"""Convert a Hugging Face BERT checkpoint (e.g. a sentence-transformers model) to GGUF, without torch.

llama.cpp embeds BERT-family models, but its converter (convert_hf_to_gguf.py,
class BertModel) needs torch and transformers. This writes the same GGUF for
BERT from the files alone: weights through safetensors' NumPy loader, the
WordPiece vocabulary straight from tokenizer.json, metadata with the `gguf`
package (whose SpecialVocab and tensor-name map llama.cpp's converter uses too).

2-D weight matrices are stored as F16, the converter's default for F32
checkpoints: half the size, and on all-MiniLM-L6-v2 the embeddings' cosine to
an all-F32 file's stays above 0.999999. Norms, biases and the position and
token-type tables stay F32 because llama.cpp expects them so.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

from poly_ray.errors import ConfigError

ARCHITECTURES = ("BertModel", "BertForMaskedLM")
_HPARAMS = ("max_position_embeddings", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# The embedding graph does not use these (llama.cpp's converter drops them too).
_UNUSED = ("embeddings.position_ids", "pooler.", "cls.")
# llama.cpp keeps these F32 whatever the file type.
_ALWAYS_F32 = ("position_embd.weight", "token_types.weight")
_SPECIAL_TOKENS = ("bos", "eos", "unk", "sep", "pad", "mask")
_POOLING = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}


class ConversionError(ConfigError):
    """The directory is not a BERT checkpoint this converter can turn into GGUF (the message names the file)."""


def convert(model_dir: Path, out_path: Path) -> Path:
    """Write ``model_dir``'s BERT model as GGUF to ``out_path``.

    The file is written beside ``out_path`` and renamed into place, so a reader
    never sees half a model.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    config = _read_json(model_dir, "config.json")
    _check_bert(model_dir, config)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".part")
    os.close(fd)
    try:
        with contextlib.closing(gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])) as writer:
            _add_hparams(writer, model_dir, config)
            _add_vocab(writer, model_dir, config)
            _add_tensors(writer, model_dir, config["num_hidden_layers"])
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return out_path


def _read_json(model_dir: Path, name: str):
    try:
        return json.loads((model_dir / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"no {name}") from None


def _check_bert(model_dir: Path, config: dict) -> None:
    """Refuse what llama.cpp's BERT graph would run wrongly rather than convert it silently."""
    architectures = config.get("architectures") or []
    if config.get("model_type") != "bert" or not set(architectures) & set(ARCHITECTURES):
        found = f"model_type {config.get('model_type')!r}, architectures {architectures}"
        raise ConversionError(f"config.json: not a BERT model ({found}); only {', '.join(ARCHITECTURES)} convert")
    if missing := [k for k in _HPARAMS if k not in config]:
        raise ConversionError(f"config.json lacks {', '.join(missing)}")
    if (positions := config.get("position_embedding_type", "absolute")) != "absolute":
        raise ConversionError(f"config.json: position_embedding_type {positions!r} is not supported")
    if not (act := config.get("hidden_act", "gelu")).startswith("gelu"):
        raise ConversionError(f"config.json: hidden_act {act!r} is not supported (llama.cpp's BERT uses GELU)")
    if not (model_dir / "model.safetensors").is_file():
        raise ConversionError("no model.safetensors (other weight formats need torch)")


def _add_hparams(writer: gguf.GGUFWriter, model_dir: Path, config: dict) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config.get("layer_norm_eps", 1e-12))
    writer.add_causal_attention(False)
    if (pooling := _pooling(model_dir)) is not None:
        writer.add_pooling_type(pooling)


def _pooling(model_dir: Path) -> gguf.PoolingType | None:
    """The pooling of a sentence-transformers model (its Pooling module's config), if it has one."""
    if not (model_dir / "modules.json").is_file():
        return None
    path = next((m["path"] for m in _read_json(model_dir, "modules.json") if m["type"].endswith("Pooling")), None)
    if path is None:
        return None
    pooling = _read_json(model_dir, f"{path}/config.json")
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if pooling.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    if (mode := pooling.get("pooling_mode")) in _POOLING:
        return _POOLING[mode]
    raise ConversionError(f"{path}/config.json: only mean, cls and last-token pooling are supported")


def _add_vocab(writer: gguf.GGUFWriter, model_dir: Path, config: dict) -> None:
    tokenizer = _read_json(model_dir, "tokenizer.json")
    if tokenizer.get("model", {}).get("type") != "WordPiece":
        raise ConversionError("tokenizer.json: not a WordPiece tokenizer")
    tokens, types = _vocab(tokenizer, config.get("vocab_size"))
    writer.add_token_type_count(config.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    # llama.cpp ignores the pre-tokenizer of WordPiece ("bert") vocabularies.
    writer.add_tokenizer_pre("default")
    writer.add_token_list([_phantom(t, k) for t, k in zip(tokens, types)])
    writer.add_token_types(types)
    _add_normalizer(writer, tokenizer.get("normalizer") or {})
    # BERT's CLS is its BOS; llama.cpp reads no cls_token_id (and gguf has no writer for it).
    special = gguf.SpecialVocab(model_dir, n_vocab=len(tokens), special_token_types=_SPECIAL_TOKENS)
    special.add_to_gguf(writer, quiet=True)


def _vocab(tokenizer: dict, vocab_size: int | None) -> tuple[list[str], list[int]]:
    """Tokens by id with llama.cpp's token types; ids the vocabulary skips become unused [PADn]."""
    by_id = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    added = {a["id"]: a for a in tokenizer.get("added_tokens", [])}
    by_id.update((i, a["content"]) for i, a in added.items())
    size = vocab_size or max(by_id) + 1
    if max(by_id) >= size:
        raise ConversionError(f"tokenizer.json: token id {max(by_id)} is beyond config.json's vocab_size {size}")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _phantom(token: str, token_type: int) -> str:
    """llama.cpp's WordPiece marks a word start with "▁" where HF marks a continuation with "##"."""
    if token_type == gguf.TokenType.CONTROL:
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def _add_normalizer(writer: gguf.GGUFWriter, normalizer: dict) -> None:
    """Say whether to lowercase and strip accents: llama.cpp does both unless told otherwise.

    llama.cpp's own copy of gguf-py writes these keys from SpecialVocab; gguf
    0.19.0 on PyPI does not yet, and without them a cased model gets lowercased.
    """
    if normalizer.get("type") != "BertNormalizer":
        return
    if (lowercase := normalizer.get("lowercase")) is not None:
        writer.add_bool("tokenizer.ggml.normalizer.lowercase", lowercase)
    if (strip_accents := normalizer.get("strip_accents")) is not None:  # None: as lowercase, in llama.cpp too
        writer.add_bool("tokenizer.ggml.normalizer.strip_accents", strip_accents)


def _add_tensors(writer: gguf.GGUFWriter, model_dir: Path, n_blocks: int) -> None:
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_blocks)
    for hf_name, data in load_file(model_dir / "model.safetensors").items():
        name = _hf_name(hf_name)
        if name.startswith(_UNUSED):
            continue
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ConversionError(f"model.safetensors: unexpected tensor {hf_name!r}")
        writer.add_tensor(new_name, data.astype(_dtype(new_name, data)))


def _hf_name(name: str) -> str:
    """Names as BertModel has them: no "bert." prefix (BertForMaskedLM), old LayerNorm names."""
    name = name.removeprefix("bert.")
    if name.endswith(".gamma"):
        return name.removesuffix(".gamma") + ".weight"
    if name.endswith(".beta"):
        return name.removesuffix(".beta") + ".bias"
    return name


def _dtype(name: str, data: np.ndarray) -> type:
    if data.ndim <= 1 or name.endswith("_norm.weight") or name in _ALWAYS_F32:
        return np.float32
    return np.float16
