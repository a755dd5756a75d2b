"""Loading llama.cpp's compute backends: the best CPU variant for the CPU we run on.

llama-cpp-python is built with ``GGML_BACKEND_DL`` and ``GGML_CPU_ALL_VARIANTS``
(see the Makefile): ggml's CPU code is then a set of shared libraries next to
``libggml.so``, one per instruction-set level (``libggml-cpu-haswell.so``,
``-skylakex``, ``-zen4``, ...), and no backend at all is registered until one is
loaded; llama-cpp-python never loads them, so a model load would fail with
"no backends are loaded". ggml's own ``ggml_backend_load_all`` looks beside the
Python executable, not beside the library, and would pick the AMX variant
(``sapphirerapids``) wherever the CPU reports AMX: ggml's AMX kernel crashed on
the Xeons this was first built on (DESIGN.md). So poly-ray picks itself: it asks
every variant for ggml's score of this CPU (0: it cannot run here), leaves the
AMX variants out, and loads the best one. Other backends found there (CUDA,
Vulkan: one library each) are loaded as they are.

``POLY_RAY_CPU_VARIANT`` names the variant to load instead (``haswell``: what an
AVX2-only machine runs), so that another kind of machine's floating-point paths
can be checked on this one; it must be one this CPU can run, never an AMX one.
It is read once, at the first ``load`` of the process (a Ray replica inherits
it from the environment its node was started in).

A build without ``GGML_BACKEND_DL`` has its CPU backend linked in: then nothing
is loaded and ``chosen()`` says ``built-in``.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

# Variants that use ggml's AMX kernel (ggml_backend_amx_mul_mat).
EXCLUDED = frozenset({"sapphirerapids"})
# Names the CPU variant to load instead of the best one (e.g. "haswell").
ENV_VARIANT = "POLY_RAY_CPU_VARIANT"
_CPU_PREFIX = "libggml-cpu-"
_NOT_BACKENDS = {"libggml.so", "libggml-base.so", "libggml-cpu.so", "libllama.so", "libmtmd.so"}


@dataclass(frozen=True)
class CpuBackend:
    variant: str  # e.g. "zen4"; "built-in" for a build without GGML_BACKEND_DL
    path: str | None  # the library loaded (None when built in)
    scores: dict[str, int]  # every variant found and ggml's score of this CPU for it (0: cannot run here)
    features: dict[str, str]  # what the loaded CPU backend reports (ggml_backend_get_features)
    forced: bool = False  # named by POLY_RAY_CPU_VARIANT rather than picked


_lock = threading.Lock()
_loaded: CpuBackend | None = None


def _libllama() -> str:
    from llama_cpp import llama_cpp

    return llama_cpp._lib._name


def lib_dir() -> Path:
    """Where llama-cpp-python's libraries are (llama_cpp/lib, or LLAMA_CPP_LIB_PATH)."""
    return Path(_libllama()).parent


def _libs():
    # ggml's functions as libllama sees them: a wheel holds libggml.so and
    # libggml.so.0 as two copies of one file, and loading the other copy would
    # register the backend in a registry libllama never reads.
    base = ggml = ctypes.CDLL(_libllama())
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    ggml.ggml_backend_reg_get.restype = ctypes.c_void_p
    base.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_name.restype = ctypes.c_char_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    return base, ggml


def score(path: Path) -> int:
    """ggml's score of this CPU for one variant library (0: it cannot run here)."""
    import _ctypes

    lib = ctypes.CDLL(str(path))
    try:
        fn = getattr(lib, "ggml_backend_score", None)
        if fn is None:
            return 0
        fn.restype = ctypes.c_int
        return int(fn())
    finally:
        _ctypes.dlclose(lib._handle)


class _Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


def _features(base, reg) -> dict[str, str]:
    address = base.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    if not address:
        return {}
    get = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)(address)
    out, items = {}, get(reg)
    i = 0
    while items[i].name:
        out[items[i].name.decode()] = items[i].value.decode()
        i += 1
    return out


def pick(scores: dict[str, int]) -> str | None:
    """The variant to load: ggml's best score for this CPU, the AMX ones left out."""
    usable = {name: s for name, s in scores.items() if s > 0 and name not in EXCLUDED}
    return max(usable, key=lambda name: usable[name]) if usable else None


def forced_variant(scores: dict[str, int], wanted: str) -> str:
    """The variant ``POLY_RAY_CPU_VARIANT`` names, checked against what this build and CPU offer."""
    if wanted not in scores:
        raise RuntimeError(f"{ENV_VARIANT}={wanted}: this llama.cpp build has no such CPU variant: {sorted(scores)}")
    if wanted in EXCLUDED:
        raise RuntimeError(f"{ENV_VARIANT}={wanted}: the AMX variants are never loaded (ggml's AMX kernel crashed)")
    if scores[wanted] <= 0:
        raise RuntimeError(f"{ENV_VARIANT}={wanted}: this CPU cannot run that variant (ggml's score is 0)")
    return wanted


def _cpu_reg(base, ggml):
    for i in range(ggml.ggml_backend_reg_count()):
        reg = ggml.ggml_backend_reg_get(i)
        if base.ggml_backend_reg_name(reg) == b"CPU":
            return reg
    return None


def load() -> CpuBackend:
    """Load the backends once per process; returns the CPU variant in use."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        base, ggml = _libs()
        folder = lib_dir()
        variants = sorted(folder.glob(f"{_CPU_PREFIX}*.so"))
        wanted = os.environ.get(ENV_VARIANT, "").strip()
        if not variants or _cpu_reg(base, ggml) is not None:
            if wanted:
                raise RuntimeError(f"{ENV_VARIANT}={wanted}: this llama.cpp build has its CPU backend built in")
            reg = _cpu_reg(base, ggml)
            _loaded = CpuBackend("built-in", None, {}, _features(base, reg) if reg else {})
            return _loaded
        scores = {p.name[len(_CPU_PREFIX) : -3]: score(p) for p in variants}
        best = forced_variant(scores, wanted) if wanted else pick(scores)
        if best is None:
            raise RuntimeError(f"none of llama.cpp's CPU variants in {folder} runs on this CPU: {scores}")
        path = folder / f"{_CPU_PREFIX}{best}.so"
        if not ggml.ggml_backend_load(str(path).encode()):
            raise RuntimeError(f"llama.cpp could not load its CPU backend {path}")
        for other in sorted(folder.glob("libggml-*.so")):  # GPU backends: one library each
            if other.name not in _NOT_BACKENDS and not other.name.startswith(_CPU_PREFIX):
                ggml.ggml_backend_load(str(other).encode())
        _loaded = CpuBackend(best, str(path), scores, _features(base, _cpu_reg(base, ggml)), forced=bool(wanted))
        return _loaded


def chosen() -> CpuBackend | None:
    """The CPU backend loaded in this process, if ``load`` ran."""
    return _loaded
