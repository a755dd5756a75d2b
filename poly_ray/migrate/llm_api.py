"""``poly-ray import llm-api config.yaml``: llm-api's config as poly-ray's.

llm-api's file is ``models_dir``, ``model_family``, ``setup_params`` (where the model
comes from) and ``model_params`` (llama-cpp-python's ``Llama()`` arguments for the
``llama`` family). poly-ray runs GGUF files with llama.cpp, so only the ``llama`` family
maps; ``repo_id`` and ``filename`` become an ``hf`` source, the ``Llama()`` arguments
the model's and its task's keys. Each key without an equivalent is named with why.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import yaml

from .imported import Imported, NotThatFormat
from .run import model_name

TOP_KEYS = ("models_dir", "model_family", "setup_params", "model_params")
TASK = "default"

# Llama() arguments that poly-ray sets itself or that llama.cpp no longer has.
UNMAPPED_PARAMS = {
    "n_parts": "llama.cpp dropped split model parts; a GGUF file is one file (or GGUF's own splits)",
    "use_mmap": "llama.cpp maps the file by default here",
    "use_mlock": "not exposed; memory is locked by the system's limits",
    "low_vram": "llama.cpp dropped it",
    "tensor_split": "one GPU per replica here: Ray places replicas on GPUs (models.NAME.gpus)",
    "main_gpu": "one GPU per replica here: Ray places replicas on GPUs (models.NAME.gpus)",
    "rope_freq_base": "the GGUF file carries the model's RoPE settings",
    "rope_freq_scale": "the GGUF file carries the model's RoPE settings",
    "lora_base": "llama.cpp dropped lora_base: a GGUF LoRA adapter applies to the model as loaded",
    "verbose": "logging is the server's (llama.cpp's own log goes to the replica's log)",
    "vocab_only": "a model here is loaded whole",
    "logits_all": "logprobs are asked per request (/v1/completions logprobs)",
    "embedding": "embeddings are on by default (models.NAME.embeddings)",
    "f16_kv": "llama.cpp's KV cache is f16 already",
}
# Other families run other engines (transformers, GPTQ, AWQ), not GGUF files.
OTHER_FAMILIES = {"huggingface", "gptq_llama", "autoawq"}


def parse(text: str, source: str) -> dict[str, Any]:
    """The YAML as llm-api's config, else NotThatFormat naming what is missing."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where else ""
        raise NotThatFormat(f"{source} is not YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise NotThatFormat(f"{source} is not an llm-api config.yaml: not a mapping of keys ({', '.join(TOP_KEYS)})")
    missing = [k for k in ("model_family", "setup_params") if k not in data]
    unknown = [k for k in data if k not in TOP_KEYS]
    if missing or unknown:
        why = f"no {' or '.join(missing)}" if missing else f"unknown key {unknown[0]!r}"
        raise NotThatFormat(f"{source} is not an llm-api config.yaml: {why} (llm-api's has {', '.join(TOP_KEYS)})")
    for key in ("setup_params", "model_params"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise NotThatFormat(f"{source} is not an llm-api config.yaml: {key} is not a mapping")
    return data


def convert(data: dict[str, Any]) -> Imported:
    family = data["model_family"]
    if family in OTHER_FAMILIES:
        raise NotThatFormat(
            f"model_family: {family!r} runs {'transformers' if family == 'huggingface' else family} weights, not GGUF: "
            "convert the model with llama.cpp's convert_hf_to_gguf.py (or use a GGUF file of it), then import a "
            "config with model_family: llama")
    if family != "llama":
        raise NotThatFormat(f"model_family: {family!r} is not one of llm-api's (llama, huggingface, gptq_llama, autoawq)")
    setup, params = dict(data.get("setup_params") or {}), dict(data.get("model_params") or {})
    out = Imported({})
    model: dict[str, Any] = {}
    repo, filename = setup.pop("repo_id", None), setup.pop("filename", None)
    if not repo or not filename:
        raise NotThatFormat("setup_params: llm-api's llama family needs repo_id and filename (the file to download)")
    # Three parts are author/repo/file; a file in a folder needs the revision spelled out.
    model["hf"] = f"{repo}/{filename}" if "/" not in filename else f"hf:{repo}/main/{filename}"
    name = model_name(PurePosixPath(filename))
    if not filename.endswith(".gguf"):
        out.notes.append(f"setup_params.filename: {filename!r} does not end in .gguf: llm-api's older images ran GGML "
                         ".bin files, which llama.cpp no longer loads; name the repository's GGUF file instead")
    for key, why in (("tokenizer_repo_id", "a GGUF file carries its tokenizer"),
                     ("trust_remote_code", "no Python code is loaded from a model's repository"),
                     ("config_params", "a GGUF file carries the model's configuration")):
        if key in setup:
            setup.pop(key)
            out.unmapped.append(f"setup_params.{key}: {why}")
    out.unmapped += [f"setup_params.{k}: not one of llm-api's setup_params known here" for k in setup]
    if data.get("models_dir") is not None:
        out.config["cache_path"] = str(data["models_dir"])
        out.notes.append(f"models_dir: {data['models_dir']} is cache_path, where url and package models are kept; an hf "
                         f"source goes to the huggingface_hub cache: set HF_HOME={data['models_dir']}/huggingface "
                         "to keep it there too")
    task: dict[str, Any] = {"model": name}
    _llama_params(params, model, task, out)
    task.setdefault("max_tokens", model.get("context_size", 512))  # llm-api's only limit was the context
    out.config.update({"default_task": TASK, "models": {name: model}, "tasks": {TASK: task}})
    return out


def _llama_params(params: dict[str, Any], model: dict[str, Any], task: dict[str, Any], out: Imported) -> None:
    """llama-cpp-python's Llama() arguments as the model's and the task's keys."""
    # llama-cpp-python's Llama() default n_ctx was 512 in llm-api's days.
    model["context_size"] = params.pop("n_ctx", None) or 512
    for key, target, where in (("n_threads", "threads_per_session", model), ("n_batch", "batch_size", model),
                               ("last_n_tokens_size", "repetition_penalty_last_n", task)):
        if params.get(key) is not None:
            where[target] = params.pop(key)
        else:
            params.pop(key, None)
    if (layers := params.pop("n_gpu_layers", None)) not in (None, 0):
        model["use_gpu"] = True
        if layers > 0:
            model["gpu_layers"] = layers
    if (seed := params.pop("seed", None)) is not None and seed >= 0:  # -1: a new seed each time, as here
        task["seed"] = seed
    if (lora := params.pop("lora_path", None)) is not None:
        model["lora_adapters"] = [{"path": str(lora)}]
        out.notes.append("model_params.lora_path: a LoRA adapter must be GGUF here (llama.cpp's "
                         "convert_lora_to_gguf.py converts a PEFT adapter)")
    for key, value in params.items():
        if value is None:
            continue  # llm-api's null: the default, nothing to carry
        why = UNMAPPED_PARAMS.get(key, "not a llama-cpp-python Llama() argument known here")
        out.unmapped.append(f"model_params.{key}: {why}")

