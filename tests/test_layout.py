"""The package's shape: no import circle, and dependencies that point one way,
api → tasks → engine | memory → config → the leaf modules. Read from the source
with ``ast`` (function-level imports count too), so no module is imported."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "poly_ray"

# Lower layers never import higher ones; two groups of one layer never import each other.
LAYERS = [
    {"errors", "web"},
    {"generation", "grammars"},
    {"chat_template", "tools"},
    {"config"},
    {"engine", "memory", "state"},
    {"tasks"},
    {"api"},
    {"serve"},
    {"deploy", "client", "migrate"},
    {"app", "cli", "__init__"},
]
RANK = {group: rank for rank, groups in enumerate(LAYERS) for group in groups}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["poly_ray", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The poly_ray modules that ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source not in MODULES:
                continue
            submodules = {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES}
            # `from . import sse` inside poly_ray.api needs only the module: its package is already there.
            if not (submodules and name.startswith(source + ".")):
                found.add(source)
            found |= submodules
    found.discard(name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Depth-first search; a node met again while it is still on the path closes a circle."""
    state: dict[str, str] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle():
    cycles = find_cycles(GRAPH)
    assert not cycles, "import circles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_dependencies_point_one_way():
    wrong = []
    for module, targets in GRAPH.items():
        group = _group(module)
        for target in targets:
            other = _group(target)
            if other == group or other == "__init__":
                continue
            if RANK[other] >= RANK[group]:
                wrong.append(f"{module} → {target}")
    assert not wrong, "imports against the layers " + " → ".join("|".join(sorted(g)) for g in reversed(LAYERS)) + ":\n" + "\n".join(sorted(wrong))


def test_every_group_has_a_layer():
    assert {_group(m) for m in MODULES} <= set(RANK)


def test_the_checker_sees_a_circle_through_a_function_level_import(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from poly_ray import x_b\n")
    b.write_text("def f():\n    from .x_a import thing\n")
    MODULES["poly_ray.x_a"], MODULES["poly_ray.x_b"] = a, b
    try:
        graph = {"poly_ray.x_a": _imports("poly_ray.x_a", a), "poly_ray.x_b": _imports("poly_ray.x_b", b)}
    finally:
        del MODULES["poly_ray.x_a"], MODULES["poly_ray.x_b"]
    assert find_cycles(graph) == [["poly_ray.x_a", "poly_ray.x_b", "poly_ray.x_a"]]


def test_no_module_is_too_long():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
