#!/bin/sh
# The Dockerfile's runtime stage runs this (bind-mounted, so it is not left in the image):
#   runtime-stage.sh strip --image  as root: purge every compiler and build tool the base image has
#                                   (Ray's -gpu image keeps g++ and CUDA's nvcc), then `tools`;
#                                   --image, as it purges them from whatever system runs it
#   runtime-stage.sh tools          fail if a build tool is still on PATH
#   runtime-stage.sh libs           fail if a library that llama.cpp's libraries link is missing
#                                   (the purge must not take a runtime library with it)
#   runtime-stage.sh packages       the installed packages `strip` purges, one a line
# tests/deploy/test_runtime_stage.py runs `packages`, `tools` and `libs` on the test machine.
set -eu

# What `command -v` must not find in the image (docs/operations/security.md shows the same check).
TOOLS="cc c++ gcc g++ cpp cmake make nvcc"
# dpkg names: the compilers, CMake, make and CUDA's compiler driver. gcc-N-base is left
# out: it is a dependency of libgcc-s1 and libstdc++6, which every C extension needs.
PATTERNS="build-essential cmake cmake-data make gcc gcc-* g++ g++-* cpp cpp-* cuda-nvcc-* cuda-compiler-* cuda-minimal-build-*"

packages() {
    # shellcheck disable=SC2086  # the patterns are globs for dpkg-query, not for the shell
    set -f
    dpkg-query -W -f '${db:Status-Abbrev}${Package}\n' $PATTERNS 2>/dev/null | awk '/^ii/ && $2 !~ /-base$/ { print $2 }' | sort -u
    set +f
}

tools() {
    found=""
    for tool in $TOOLS; do
        if path=$(command -v "$tool"); then found="$found $path"; fi
    done
    if [ -n "$found" ]; then
        echo "runtime-stage.sh: build tools left in the image:$found" >&2
        return 1
    fi
}

libs() {
    # llama_cpp/lib holds libllama, libggml and its backends (CPU variants; CUDA with BACKEND=cuda).
    lib=$(python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent / "lib")')
    # The backends find libggml-base by soname, loaded before them (no RUNPATH): so look beside them.
    # libcuda.so.1 is the driver's: the NVIDIA container runtime mounts it when the container starts.
    missing=$(for so in "$lib"/*.so*; do LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$so"; done | awk '/not found/ && $1 != "libcuda.so.1" { print $1 }' | sort -u)
    if [ -n "$missing" ]; then
        echo "runtime-stage.sh: libraries llama.cpp needs are missing:" $missing >&2
        return 1
    fi
}

case "${1:-}" in
    packages) packages ;;
    tools) tools ;;
    libs) libs ;;
    strip)
        if [ "${2:-}" != --image ]; then
            echo "runtime-stage.sh: strip purges this system's compilers; the Dockerfile runs it as 'strip --image'" >&2
            exit 2
        fi
        purge=$(packages)
        if [ -n "$purge" ]; then
            # shellcheck disable=SC2086
            DEBIAN_FRONTEND=noninteractive apt-get purge -y --auto-remove $purge
        fi
        rm -rf /var/lib/apt/lists/*
        tools
        ;;
    *) echo "usage: runtime-stage.sh strip --image|tools|libs|packages" >&2; exit 2 ;;
esac
