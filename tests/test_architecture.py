"""The layer picture of docs/architecture.md, checked on the source.

Every import counts, at module top or inside a function: a cycle hidden in a
function body is still a cycle. Layers, bottom first; a module may import its own
layer or any layer below it, never one above.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS = (
    "maedaw.core",
    "maedaw.dsp",
    "maedaw.models",
    "maedaw.corpus",
    "maedaw.bridge",
    "maedaw.benchmarks",
    "maedaw.bridge.cli",
    "maedaw.reaper_scripts",  # package data (the Lua scripts); imports nothing
    "maedaw.ardour_scripts",
)


def package_dirs(repo: Path) -> dict[str, Path]:
    """The package -> folder map that pyproject.toml installs."""
    config = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
    return {
        name: repo / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()
    }


def modules(dirs: dict[str, Path]) -> dict[str, Path]:
    """Every module name -> its file (a package is named by its ``__init__``)."""
    found: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The known modules that ``name`` imports anywhere in its file."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for candidate in candidates:
            # "from maedaw.dsp import repair" names a module; "from x import f" names x.
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def import_graph(repo: Path) -> dict[str, set[str]]:
    found = modules(package_dirs(repo))
    return {name: imports_of(name, path, found) for name, path in found.items()}


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest layer name that contains ``module``."""
    best = -1
    for index, layer in enumerate(LAYERS):
        if (module == layer or module.startswith(layer + ".")) and (
            best < 0 or len(layer) > len(LAYERS[best])
        ):
            best = index
    if best < 0:
        raise AssertionError(f"{module} is in no layer of docs/architecture.md")
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(source)
    )


def test_no_import_cycle() -> None:
    assert cycles(import_graph(REPO)) == []


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    assert upward_imports(import_graph(REPO)) == []


def test_every_package_is_in_a_layer() -> None:
    for package in package_dirs(REPO):
        layer_of(package)


@pytest.fixture
def toy_repo(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "maedaw.dsp" = "dsp", "maedaw.models" = "models" }\n'
    )
    for folder in ("dsp", "models"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    return tmp_path


def test_the_checker_sees_a_cycle_inside_a_function(toy_repo: Path) -> None:
    (toy_repo / "dsp" / "a.py").write_text("from . import b\n")
    (toy_repo / "dsp" / "b.py").write_text("def f():\n    from maedaw.dsp.a import x\n")
    assert cycles(import_graph(toy_repo)) == [["maedaw.dsp.a", "maedaw.dsp.b"]]


def test_the_checker_sees_an_upward_import(toy_repo: Path) -> None:
    (toy_repo / "models" / "m.py").write_text("from maedaw.dsp import a\n")
    (toy_repo / "dsp" / "a.py").write_text("def f():\n    from maedaw.models.m import g\n")
    assert upward_imports(import_graph(toy_repo)) == ["maedaw.dsp.a -> maedaw.models.m"]


def test_the_command_line_builds_its_parser_without_torch():
    """The REAPER and Ardour scripts start ``maedaw send`` for every request and wait for the
    daemon's answer within the ping timeout (2 s by default): importing torch (~2 s here) with
    the parser made the helper miss it on a loaded machine."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from maedaw.bridge.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in ('torch', 'torchaudio', 'numpy.linalg') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch" not in out.stdout, out.stdout
