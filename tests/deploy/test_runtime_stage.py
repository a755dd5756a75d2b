"""docker/runtime-stage.sh, run for real on this machine (a Debian with build-essential, as
`make setup` needs): what `strip` would purge from the image (listed, not purged), the check
that no build tool is left on PATH, and the check that every library llama.cpp's libraries
link is found, on the wheel `make setup` built and on libraries made here to lack one."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docker" / "runtime-stage.sh"


def stage(command: str, **env: str) -> subprocess.CompletedProcess[str]:
    # `python` is the test's own, as in the image it is the one pip installed into.
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(["/bin/sh", str(SCRIPT), command], capture_output=True, text=True,
                          env={**os.environ, "PATH": path, **env})


def test_strip_purges_the_compilers_and_keeps_the_runtime_libraries():
    listed = stage("packages")
    assert listed.returncode == 0, listed.stderr
    packages = set(listed.stdout.split())
    assert {"build-essential", "cmake", "make", "gcc", "g++", "cpp"} <= packages
    assert any(re.fullmatch(r"gcc-\d+", p) for p in packages)  # the versioned compiler gcc depends on
    # libgcc-s1 and libstdc++6 depend on gcc-N-base: purging it would take every C extension with it.
    assert not {p for p in packages if p.endswith("-base") or p.startswith("lib")}, packages


def test_strip_runs_only_when_told_it_is_in_an_image():
    refused = stage("strip")
    assert refused.returncode == 2 and "strip --image" in refused.stderr


def test_tools_fails_on_any_build_tool_on_path(tmp_path):
    assert stage("tools", PATH=str(tmp_path)).returncode == 0
    fake = tmp_path / "cmake"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    failed = stage("tools", PATH=str(tmp_path))
    assert failed.returncode == 1 and str(fake) in failed.stderr
    assert stage("tools").returncode == 1  # this machine has the compilers `make setup` needs


def _llama_cpp_lib() -> Path:
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "lib"


def test_libs_finds_every_library_of_the_installed_wheel():
    checked = stage("libs")
    assert checked.returncode == 0, checked.stderr
    assert list(_llama_cpp_lib().glob("libggml-cpu-*.so"))  # the runtime-dispatch build: the check saw them


def _fake_llama_cpp(tmp_path: Path) -> Path:
    """A llama_cpp package on PYTHONPATH whose lib/ the test fills."""
    lib = tmp_path / "site" / "llama_cpp" / "lib"
    lib.mkdir(parents=True)
    (lib.parent / "__init__.py").write_text("")
    return lib


def test_libs_names_a_missing_library(tmp_path):
    lib = _fake_llama_cpp(tmp_path)
    # A CPU backend without the libggml-base it links (found beside it in the real wheel).
    shutil.copy(next(_llama_cpp_lib().glob("libggml-cpu-*.so")), lib)
    failed = stage("libs", PYTHONPATH=str(lib.parents[1]))
    assert failed.returncode == 1 and "libggml-base.so.0" in failed.stderr


def _linked_against(tmp_path: Path, lib: Path, soname: str) -> None:
    """lib/libggml-cuda.so needing `soname`, which is then removed (as no driver is mounted at build time)."""
    stub = tmp_path / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "s.c").write_text("void f(void) {}\n")
    subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", stub / soname, stub / "s.c"], check=True)
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,--no-as-needed", "-o", lib / "libggml-cuda.so", stub / "s.c",
                    stub / soname], check=True)
    (stub / soname).unlink()


def test_libs_accepts_only_the_drivers_libcuda_missing(tmp_path):
    lib = _fake_llama_cpp(tmp_path)
    _linked_against(tmp_path, lib, "libcuda.so.1")  # the NVIDIA container runtime mounts it at run time
    assert stage("libs", PYTHONPATH=str(lib.parents[1])).returncode == 0
    _linked_against(tmp_path, lib, "libcublas.so.12")  # the image must carry CUDA's runtime libraries
    failed = stage("libs", PYTHONPATH=str(lib.parents[1]))
    assert failed.returncode == 1 and "libcublas.so.12" in failed.stderr
