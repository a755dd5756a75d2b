#!/bin/sh
# The image's CMD: `docker run -v $PWD/models:/models -p 8000:8000 poly-ray` serves
# /models/config.toml when one is mounted there (POLY_CONFIG names another), else the
# embedded default config, on 0.0.0.0:8000 inside the container. Downloads (hf models)
# and durable state go under /models too, so the one mount keeps them.
set -e
models="${MODELS_DIR:-/models}"
if [ -z "${POLY_CONFIG:-}" ] && [ -f "$models/config.toml" ]; then
    export POLY_CONFIG="$models/config.toml"
fi
export POLY_BIND_ADDRESS="${POLY_BIND_ADDRESS:-0.0.0.0:8000}"
export POLY_STATE_DIR="${POLY_STATE_DIR:-$models/.poly-ray/state}"
export HF_HOME="${HF_HOME:-$models/.poly-ray/huggingface}"
exec poly-ray serve "$@"
