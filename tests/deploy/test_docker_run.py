"""What `docker run -v $PWD/models:/models -p 8000:8000 poly-ray` and `docker compose up`
rely on, read from the Dockerfile's last stage and compose.yaml: a CMD that serves a mounted or the
default config on the published port, EXPOSE, a health check on /ready, a non-root user
without sudo; compose's CPU service and GPU profile. The CMD's script runs for real, with
a stand-in for the server it execs. No test builds or runs the image: these machines reach
no image registry (rayproject/ray cannot be pulled), and Debian's podman, installed here as
root, builds with chroot isolation but cannot start a container (crun's setrlimit is
refused: the machine lacks CAP_SYS_RESOURCE)."""

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path

import yaml
from test_dockerfile import instructions, runtime

REPO = Path(__file__).resolve().parents[2]


def last(word: str) -> str:
    return [rest for w, rest in runtime() if w == word][-1]


def test_the_image_runs_the_server_as_a_user_without_sudo():
    assert last("USER") == "ray"
    purge = [r for w, r in runtime() if w == "RUN" and "purge" in r]
    assert len(purge) == 1 and "SUDO_FORCE_REMOVE=yes apt-get purge -y sudo" in purge[0]
    assert "rm -rf /etc/sudoers /etc/sudoers.d" in purge[0] and "gpasswd -d ray sudo" in purge[0]
    # Nothing after the purge installs sudo again or runs as root.
    after = runtime()[[r for _, r in runtime()].index(purge[0]) + 1:]
    assert ("USER", "root") not in after and not any("sudo" in r for w, r in after if w == "RUN")


def test_cmd_exposes_and_checks_the_port_docker_run_publishes():
    assert last("EXPOSE") == "8000"
    cmd = json.loads(last("CMD"))
    assert cmd == ["/home/ray/poly-ray/docker/serve.sh"]
    copied = [shlex.split(r) for w, r in runtime() if w == "COPY"]
    assert ["--chown=ray:users", "docker/serve.sh", "/home/ray/poly-ray/docker/serve.sh"] in copied
    assert os.stat(REPO / "docker" / "serve.sh").st_mode & stat.S_IXUSR
    check = last("HEALTHCHECK")
    assert "--start-period=600s" in check and "http://127.0.0.1:8000/ready" in check
    from poly_ray.api.poly.routes import router

    assert "/ready" in {route.path for route in router.routes}


def serve_sh(tmp_path, **env) -> dict:
    """docker/serve.sh's environment and arguments, as the `poly-ray` it execs sees them."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    stub = tmp_path / "bin" / "poly-ray"
    stub.write_text('#!/bin/sh\nprintf \'{"args": "%s", "config": "%s", "bind": "%s", "state": "%s", "hf": "%s"}\' '
                    '"$*" "$POLY_CONFIG" "$POLY_BIND_ADDRESS" "$POLY_STATE_DIR" "$HF_HOME"\n')
    stub.chmod(0o755)
    keep = {k: v for k, v in os.environ.items() if not k.startswith("POLY_") and k != "HF_HOME"}
    r = subprocess.run([str(REPO / "docker" / "serve.sh")], capture_output=True, text=True, check=True,
                       env={**keep, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", **env})
    return json.loads(r.stdout)


def test_cmd_serves_the_mounted_config_else_the_default_on_all_addresses(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    default = serve_sh(tmp_path, MODELS_DIR=str(models))
    assert default == {"args": "serve", "config": "", "bind": "0.0.0.0:8000", "state": f"{models}/.poly-ray/state",
                       "hf": f"{models}/.poly-ray/huggingface"}  # no config: poly-ray's embedded default
    (models / "config.toml").write_text("")
    assert serve_sh(tmp_path, MODELS_DIR=str(models))["config"] == f"{models}/config.toml"
    named = serve_sh(tmp_path, MODELS_DIR=str(models), POLY_CONFIG="/etc/other.toml", POLY_BIND_ADDRESS="0.0.0.0:9000")
    assert (named["config"], named["bind"]) == ("/etc/other.toml", "0.0.0.0:9000")


def test_compose_has_a_cpu_service_and_a_gpu_profile():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    cpu, gpu = compose["services"]["poly-ray"], compose["services"]["poly-ray-gpu"]
    assert "profiles" not in cpu and gpu["profiles"] == ["gpu"]
    for service in (cpu, gpu):
        assert service["volumes"] == ["./models:/models"]
        assert [p.rpartition(":")[2] for p in service["ports"]] == ["8000"] and service["shm_size"]
    assert cpu["build"] == "." and gpu["build"] == {"context": ".", "args": {"BACKEND": "cuda"}}
    assert "BACKEND" in {rest.partition("=")[0] for w, rest in instructions() if w == "ARG"}
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
