"""The project's style rules, checked on the source tree.

- ``ruff check`` (``[tool.ruff]`` in pyproject.toml): the pyflakes rules (``F``) and the
  line limit (``E501``, 100 characters) everywhere;
- no file in ``evoopt/`` or ``rl/`` longer than :data:`MAX_FILE_LINES` lines and no
  function longer than :data:`MAX_FUNCTION_LINES`, except what :data:`ALLOWED` names with
  the reason;
- no import cycle among the modules of ``evoopt`` and ``rl`` (module-level imports; an
  import inside a function is lazy and allowed);
- ``rl`` uses only public names of ``evoopt`` (``evoopt.checks``, not ``evoopt._validation``).
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("evoopt", "rl")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


#: rl files that still import a private name of evoopt -> why (until they are switched).
PRIVATE_IMPORTS_ALLOWED: dict[str, str] = {}

#: ``path`` (the whole file: its length and its functions) or ``path::qualified.name``
#: (one function) -> why it is longer than the limits.
ALLOWED: dict[str, str] = {
    "evoopt/algorithms/cmaes.py": "565 lines, 115 of them the module docstring (pycma's "
    "termination, plateaus, bounds, restarts, dtypes: the behaviour users ask about); the "
    "pycma codec, options and restart schedule are in algorithms/_pycma.py, what a stopped "
    "optimizer does in algorithms/_stopping.py",
    "evoopt/evaluation.py": "509 lines: the three public entry points (vmap_objective, "
    "loop_objective, batched_forward) and the PopulationObjective whose chunking, "
    "randomness and failure naming they share",
}


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ------------------------------------------------------------------------- ruff
def _ruff() -> list[str] | None:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    exe = shutil.which("ruff")
    return [exe] if exe else None


@pytest.mark.parametrize("select, paths", [
    ("F,E501", ["evoopt", "rl", "tests", "bench", "examples"]),
], ids=["F,E501"])
def test_ruff_check_passes(select, paths):
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install 'evoopt[test]')")
    out = subprocess.run([*ruff, "check", "--no-cache", "--output-format", "concise",
                          "--select", select, *paths],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"ruff check --select {select}:\n{out.stdout}{out.stderr}"


# ---------------------------------------------------------------- long things
def _functions(tree: ast.AST):
    """``(qualified name, number of lines)`` of every function and method, nested too."""
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield name, child.end_lineno - child.lineno + 1
                yield from walk(child, name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _too_long() -> dict[str, str]:
    """Every file and function over the limits, less :data:`ALLOWED`."""
    found = {}
    for path in _sources(*PACKAGES):
        rel = _rel(path)
        if rel in ALLOWED:
            continue
        text = path.read_text()
        n = len(text.splitlines())
        if n > MAX_FILE_LINES:
            found[rel] = f"{n} lines (limit {MAX_FILE_LINES})"
        for name, length in _functions(ast.parse(text)):
            key = f"{rel}::{name}"
            if length > MAX_FUNCTION_LINES and key not in ALLOWED:
                found[key] = f"{length} lines (limit {MAX_FUNCTION_LINES})"
    return found


def test_no_file_or_function_is_longer_than_the_limits():
    found = _too_long()
    assert not found, ("split these by job (or add them to ALLOWED with the reason):\n"
                       + "\n".join(f"  {k}: {v}" for k, v in sorted(found.items())))


def test_every_allowed_entry_names_a_file_or_function_that_exists():
    wrong = []
    for key in ALLOWED:
        rel, _, func = key.partition("::")
        path = ROOT / rel
        if not path.exists():
            wrong.append(f"{key}: no such file")
        elif func and func not in dict(_functions(ast.parse(path.read_text()))):
            wrong.append(f"{key}: no such function")
    assert not wrong, "fix or remove these entries of ALLOWED:\n" + "\n".join(wrong)


# ---------------------------------------------------------------- import cycles
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module):
    """The import statements that run when the module is imported: everywhere but inside
    function bodies and ``if TYPE_CHECKING:`` blocks (class bodies and other ``if``/``try``
    blocks at module level count)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # annotations only: never imported at run time
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_graph() -> dict[str, set[str]]:
    """module -> the modules of evoopt/rl it imports at module level. ``from pkg import
    name`` depends on ``pkg.name`` when that is a module, else on ``pkg``."""
    paths = {_module_name(p): p for p in _sources(*PACKAGES)}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for mod, path in paths.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _module_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                           for a in node.names]
            graph[mod].update(t for t in targets if t in paths and t != mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_sees_relative_and_absolute_imports():
    graph = _import_graph()
    assert "evoopt.checks" in graph["rl.config"]  # absolute
    assert "rl.gym_envs" in graph["rl.policies"]  # relative, a name from a module
    assert "evoopt.population" in graph["evoopt.compare.specs"]  # two levels up
    assert "rl.rollout" not in graph["rl.cli"]  # imported inside a function only


def test_no_import_cycles():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles (module-level imports):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


# ---------------------------------------------------------------- public names
def _private_evoopt_imports(path: Path) -> list[str]:
    """``module:name`` of every import (lazy ones too) of a private module or name of
    evoopt."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            pairs = [(a.name, "") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            pairs = [(node.module or "", a.name) for a in node.names]
        else:
            continue
        for module, name in pairs:
            parts = module.split(".")
            if parts[0] == "evoopt" and (any(p.startswith("_") for p in parts)
                                         or name.startswith("_")):
                found.append(f"{module}:{name}" if name else module)
    return found


def test_rl_imports_only_public_names_of_evoopt():
    found = {}
    for path in _sources("rl"):
        rel = _rel(path)
        names = _private_evoopt_imports(path)
        if names and rel not in PRIVATE_IMPORTS_ALLOWED:
            found[rel] = names
    assert not found, f"rl imports private names of evoopt (use the public ones): {found}"


def test_the_private_import_finder_finds_them(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from evoopt._validation import check_int\nfrom evoopt.cli import _split\n"
                   "from evoopt.checks import check_int\nimport evoopt._state\n"
                   "def f():\n    from evoopt.compare import _x\n")
    assert _private_evoopt_imports(src) == ["evoopt._validation:check_int",
                                            "evoopt.cli:_split", "evoopt._state",
                                            "evoopt.compare:_x"]
