"""The package's shape: no import cycles (lazy imports inside functions included), one home per concept."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mentor"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the mentor modules it imports anywhere in its body (a lazy import is still a dependency; an
    import for type annotations only is not)."""

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    def runtime_nodes(tree: ast.AST):
        """Every node but those under ``if TYPE_CHECKING:`` (annotations only: no import at run time)."""
        todo = [tree]
        while todo:
            node = todo.pop()
            yield node
            if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
                todo.extend(node.orelse)
            else:
                todo.extend(ast.iter_child_nodes(node))

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {resolve(f"{node.module}.{alias.name}") for alias in node.names}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert _cycles(_import_graph(_modules())) == []


def _reached(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_layers_point_down():
    """The config reads the divergence registry, not the algorithms; the teachers never reach into the update."""
    graph = _import_graph(_modules())

    def under(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    assert sorted(t for t in _reached(graph, "mentor.config") if under(t, "mentor.algorithms")) == []
    score = [m for m in graph if under(m, "mentor.score")]
    assert len(score) > 3
    assert sorted({f"{m} -> {t}" for m in score for t in _reached(graph, m) if under(t, "mentor.update")}) == []


def test_every_builtin_task_is_known_without_importing_a_task_module():
    code = (
        "import sys; from mentor.tasks.registry import task_names; names = task_names(); "
        "print(len(names), any(m in sys.modules for m in ('mentor.tasks.arithmetic', 'mentor.tasks.coe_tasks')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=PACKAGE.parent
    )
    assert result.returncode == 0, result.stderr.splitlines()[-1:]
    count, imported = result.stdout.split()
    assert int(count) >= 5 and imported == "False"


def test_grader_type_is_defined_once():
    definitions = [
        path.name
        for path in PACKAGE.rglob("*.py")
        if any(
            isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "Grader" for t in node.targets)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    ]
    assert definitions == ["graders.py"]


def test_the_library_reaches_the_experiments_only_through_mentor_bench():
    """experiments/ lives beside mentor/ and is not in the wheel: only the CLI's ``mentor bench`` imports it."""

    def imports_experiments(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(name == "experiments" or name.startswith("experiments.") for name in names):
                return True
        return False

    assert sorted(name for name, path in _modules().items() if imports_experiments(path)) == ["mentor.cli"]
    assert not (PACKAGE / "bench").exists()
