"""The installed llama.cpp: built with runtime CPU dispatch, it carries several CPU
variants, and poly-ray loads the best one this CPU runs, never the AMX one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from poly_ray.engine import backends

HASWELL = {"avx", "avx2", "fma", "f16c", "bmi2", "sse4_2"}
AVX512 = {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_pick_takes_the_best_score_and_never_amx():
    scores = {"x64": 1, "haswell": 61, "skylakex": 189, "zen4": 1981, "sapphirerapids": 4029, "alderlake": 0}
    assert backends.pick(scores) == "zen4"
    assert backends.pick({"x64": 1, "haswell": 0}) == "x64"
    assert backends.pick({"haswell": 0, "sapphirerapids": 4029}) is None


def test_a_named_variant_is_checked_against_the_build_and_the_cpu():
    scores = {"x64": 1, "haswell": 61, "zen4": 0, "sapphirerapids": 4029}
    assert backends.forced_variant(scores, "haswell") == "haswell"
    with pytest.raises(RuntimeError, match="no such CPU variant"):
        backends.forced_variant(scores, "avx9")
    with pytest.raises(RuntimeError, match="cannot run"):
        backends.forced_variant(scores, "zen4")
    with pytest.raises(RuntimeError, match="AMX"):
        backends.forced_variant(scores, "sapphirerapids")


def test_the_installed_build_carries_several_cpu_variants():
    variants = sorted(p.name for p in backends.lib_dir().glob("libggml-cpu-*.so"))
    # x64, sse42, ..., haswell, skylakex, icelake, zen4, ...: a build without
    # GGML_CPU_ALL_VARIANTS has none (its CPU code is linked into libggml).
    assert len(variants) >= 5, variants
    assert "libggml-cpu-x64.so" in variants and "libggml-cpu-haswell.so" in variants


def test_the_loaded_variant_is_the_best_this_cpu_runs():
    cpu = backends.load()
    print(f"\nllama.cpp CPU backend: {cpu.variant} ({cpu.path})\nscores: {cpu.scores}\nfeatures: {cpu.features}")
    assert backends.load() is cpu and backends.chosen() is cpu  # once per process
    if cpu.forced:  # POLY_RAY_CPU_VARIANT names it: the rest holds for the best variant only
        assert cpu.variant == os.environ[backends.ENV_VARIANT] and cpu.variant not in backends.EXCLUDED
        return
    assert cpu.variant == backends.pick(cpu.scores) and cpu.variant not in backends.EXCLUDED
    assert Path(cpu.path).name == f"libggml-cpu-{cpu.variant}.so"
    assert cpu.scores["x64"] > 0  # the baseline runs anywhere
    flags = cpu_flags()
    # What the loaded library was compiled for, the CPU has; and it uses what the CPU has.
    assert (cpu.features.get("AVX2") == "1") == (HASWELL <= flags)
    assert (cpu.features.get("AVX512") == "1") == ((HASWELL | AVX512) <= flags)
    assert "AMX_INT8" not in cpu.features


def test_the_environment_can_name_the_avx2_variant():
    # What an AVX2-only machine loads, loaded here instead of the best variant.
    if backends.load().scores.get("haswell", 0) <= 0:
        pytest.skip("this CPU cannot run the haswell variant")
    code = ("from poly_ray.engine import backends; c = backends.load(); "
            "print(c.variant, c.forced, c.features.get('AVX2'), c.features.get('AVX512', '0'))")
    env = {**os.environ, backends.ENV_VARIANT: "haswell"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["haswell", "True", "1", "0"]
    env[backends.ENV_VARIANT] = "avx9"
    bad = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "no such CPU variant" in bad.stderr


@pytest.mark.model
def test_a_model_decodes_on_the_loaded_variant(gemma_path):
    import llama_cpp

    backends.load()
    llm = llama_cpp.Llama(model_path=str(gemma_path), n_ctx=256, n_threads=2, verbose=False)
    try:
        out = llm.create_completion("The capital of France is", max_tokens=4, temperature=0)
        assert out["usage"]["completion_tokens"] == 4 and out["choices"][0]["text"]
    finally:
        llm.close()


@pytest.mark.model
def test_the_engine_reports_the_variant_it_runs_on(gemma_path):
    from poly_ray.engine.llama_engine import Engine

    engine = Engine(gemma_path, context_size=256, slots=1, threads=2, name="g")
    try:
        # What /v1/stats shows per model: the variant this process loaded, not a guess.
        assert engine.stats()["cpu_backend"] == backends.chosen().variant
        if not backends.chosen().forced:
            assert engine.stats()["cpu_backend"] == backends.pick(backends.chosen().scores)
    finally:
        engine.close()
