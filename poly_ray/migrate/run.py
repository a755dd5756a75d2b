"""``poly-ray run -m MODEL [flags]``: the Rust ``/stream`` server's quick start.

That server took one model file and flags, no config file. ``run`` takes the same flags
with the same defaults and writes the config they stand for: the model, one task named
``default`` (no prelude, prefix or postfix: the raw prompt, the flags' sampling as its
defaults, the model's context as its limit) that ``/stream`` and the other simple routes
run, on ``127.0.0.1:PORT``, public as that server was (it had no credentials). Every API
is served, not only ``/stream``: the task and the model are both names for clients.

``-R FILE`` restores a prompt that a ``/stream`` request with a ``cache`` id saved (its
answer's ``X-Poly-Prompt-File`` header names the file): the task's prelude is that
prompt, so each request continues it, and its KV state is kept like any prelude's.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from poly_ray.config import Config, validate
from poly_ray.config.ggml import ggml_advice, ggml_variant
from poly_ray.config.loading import is_gguf
from poly_ray.errors import ConfigError

TASK = "default"
PROMPT_LIMIT = 1 << 20  # characters of a restored prompt: a prompt, not a corpus


def _within(lo: float, hi: float, kind=int):
    """An argparse type: a number in [lo, hi], else an error that names the range."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is not between {lo} and {hi}")
        return value
    return parse


def add_flags(p: argparse.ArgumentParser) -> None:
    """The Rust server's flags, its defaults and its short names; ``-P`` is the port."""
    p.add_argument("-m", "--model", required=True, metavar="PATH", help="the GGUF model file")
    p.add_argument("-P", "--port", type=_within(1, 65535), default=8080,
                   help="the port to listen on (default 8080). The Rust server's docs give -P to --top-p too; "
                        "here -P is the port and top-p is --top-p only")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    p.add_argument("-f", "--float16", action="store_true",
                   help="16-bit floats for the KV cache: llama.cpp's KV cache is f16 already, so this changes nothing")
    p.add_argument("-t", "--num-threads", type=_within(1, 1024), default=None, metavar="N",
                   help="threads per generation (default: the node's CPUs, at most 8)")
    p.add_argument("-n", "--num-ctx-tokens", type=_within(16, 1 << 20), default=2048, metavar="N",
                   help="tokens of context (default 2048): the longest prompt plus its answer")
    p.add_argument("-b", "--batch-size", type=_within(1, 1 << 16), default=8, metavar="N",
                   help="prompt tokens fed to the model at a time (default 8); a request's n_batch is accepted and not used")
    p.add_argument("-r", "--repeat-last-n", type=_within(0, 1 << 20), default=64, metavar="N",
                   help="tokens the repeat penalty looks back at (default 64)")
    p.add_argument("-p", "--repeat-penalty", type=_within(0.01, 100, float), default=1.30, metavar="X",
                   help="penalty on repeated tokens (default 1.30; a request's repeat_penalty overrides it)")
    p.add_argument("-T", "--temp", type=_within(0, 100, float), default=0.80, metavar="X",
                   help="temperature (default 0.80; a request's temp overrides it)")
    p.add_argument("-k", "--top-k", type=_within(0, 1 << 20), default=40, metavar="N",
                   help="top-k sampling (default 40; a request's top_k overrides it)")
    p.add_argument("--top-p", type=_within(0.01, 1, float), default=0.95, metavar="X",
                   help="top-p sampling (default 0.95; a request's top_p overrides it)")
    p.add_argument("-R", "--restore-prompt", metavar="PATH",
                   help="continue a prompt saved earlier: the file a /stream request with a cache id wrote (its "
                        "answer's X-Poly-Prompt-File header names it)")


def model_name(path: Path) -> str:
    """A config name for the file: its stem, with what a URL cannot hold replaced."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem).lstrip("._-")
    return name if name and name != TASK else "model"


def run_config(args: argparse.Namespace, env: dict[str, str] | None = None) -> Config:
    """The config the flags stand for; a ConfigError names the flag at fault."""
    path = Path(args.model).expanduser()
    if not path.is_file():
        raise ConfigError(f"-m/--model: no such file: {path}")
    if not is_gguf(path):
        variant = ggml_variant(path)
        raise ConfigError(f"-m/--model: {ggml_advice(path, variant) if variant else f'not a GGUF file: {path}'}")
    prelude = ""
    if args.restore_prompt:
        saved = Path(args.restore_prompt).expanduser()
        try:
            prelude = saved.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"-R/--restore-prompt: no such file: {saved}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"-R/--restore-prompt: cannot read {saved} as UTF-8 text: {e}") from None
        if len(prelude) > PROMPT_LIMIT:
            raise ConfigError(f"-R/--restore-prompt: {saved} is over {PROMPT_LIMIT} characters: not a saved prompt")
    name = model_name(path)
    model = {"model_path": str(path.resolve()), "context_size": args.num_ctx_tokens, "batch_size": args.batch_size}
    if args.num_threads is not None:
        model["threads_per_session"] = args.num_threads
    task = {"model": name, "prelude": prelude, "max_tokens": args.num_ctx_tokens, "temperature": args.temp,
            "top_k": args.top_k, "top_p": args.top_p, "min_p": 0.0, "repeat_penalty": args.repeat_penalty,
            "repetition_penalty_last_n": args.repeat_last_n}
    data = {"bind_address": f"{args.host}:{args.port}", "public": True, "models": {name: model},
            "tasks": {TASK: task}, "default_task": TASK, "stream_task": TASK}
    return validate(data, env=os.environ if env is None else env)
