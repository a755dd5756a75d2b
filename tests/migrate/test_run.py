"""`poly-ray run -m MODEL [flags]`: the Rust /stream server's flags, defaults and
errors. The flags' config without Ray; bad input through the CLI as a subprocess
(one line, exit code 2, no traceback)."""

import socket
import subprocess
import sys

import pytest

from poly_ray.cli import _Parser
from poly_ray.migrate.run import add_flags, run_config


def flags(*argv):
    parser = _Parser(prog="poly-ray run")
    add_flags(parser)
    return parser.parse_args(list(argv))


def test_the_flags_defaults_are_the_rust_servers(gemma_path):
    cfg = run_config(flags("-m", str(gemma_path)), env={})
    (name, model), = cfg.models.items()
    task = cfg.tasks["default"]
    assert cfg.bind_address == "127.0.0.1:8080" and cfg.public
    assert (model.context_size, model.batch_size) == (2048, 8)
    assert (task.repetition_penalty_last_n, task.repeat_penalty, task.temperature, task.top_k, task.top_p) == (
        64, 1.30, 0.80, 40, 0.95)
    assert task.model == name and task.prelude == "" and task.max_tokens == 2048
    assert cfg.default_task == cfg.stream_task == "default"


def test_each_flag_sets_its_key(gemma_path, tmp_path):
    saved = tmp_path / "42.txt"
    saved.write_text("Once upon a time")
    cfg = run_config(flags("-m", str(gemma_path), "-f", "-P", "8081", "-t", "3", "-n", "512", "-b", "16", "-r", "32",
                           "-p", "1.5", "-T", "0.7", "-k", "50", "--top-p", "0.9", "-R", str(saved)), env={})
    model, task = next(iter(cfg.models.values())), cfg.tasks["default"]
    assert cfg.port == 8081 and model.threads_per_session == 3
    assert (model.context_size, model.batch_size, task.max_tokens) == (512, 16, 512)
    assert (task.repetition_penalty_last_n, task.repeat_penalty, task.temperature, task.top_k, task.top_p) == (
        32, 1.5, 0.7, 50, 0.9)
    assert task.prelude == "Once upon a time"  # the restored prompt: each request continues it


def cli(*argv, cwd=None):
    return subprocess.run([sys.executable, "-m", "poly_ray.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def one_line(r, *needles):
    assert r.returncode == 2, r
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, gemma_path):
    one_line(cli("run", "-m", str(gemma_path), "--num-predict", "3"), "unrecognized arguments: --num-predict")
    one_line(cli("run"), "-m/--model")
    one_line(cli("run", "-m", str(tmp_path / "missing.gguf")), "-m/--model: no such file", "missing.gguf")
    one_line(cli("run", "-m", str(gemma_path), "-P", "0"), "-P/--port")
    one_line(cli("run", "-m", str(gemma_path), "-T", "hot"), "-T/--temp", "'hot' is not a number")
    one_line(cli("run", "-m", str(gemma_path), "-R", str(tmp_path / "none.txt")), "-R/--restore-prompt: no such file")
    (tmp_path / "notes.txt").write_text("not a model")
    one_line(cli("run", "-m", str(tmp_path / "notes.txt")), "not a GGUF file")


def test_a_port_in_use_is_refused_before_ray_starts(gemma_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line(cli("run", "-m", str(gemma_path), "-P", str(port)), f"port {port} on 127.0.0.1 is in use")


@pytest.mark.parametrize("text", ["", 'bind_address = "x"\n[models.a]\nmodel_path = 3\n'])
def test_a_config_that_is_not_a_config_is_one_line(tmp_path, text):
    (tmp_path / "config.yaml").write_text("models_dir: /models\nmodel_family: llama\n")
    one_line(cli("serve", "-c", str(tmp_path / "config.yaml")), "is YAML, not a poly-ray TOML config", "import llm-api")
    (tmp_path / "bad.toml").write_text(text or "this is = = not toml")
    one_line(cli("check", "-c", str(tmp_path / "bad.toml")), "invalid config", "bad.toml")
