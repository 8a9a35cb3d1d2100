"""ARCHITECTURE.md stays true: no import circle, and no module imports one of a higher layer.

The layer table is read from ARCHITECTURE.md itself, so the document and this test cannot drift apart.
Every import counts, also one inside a function: a circle held together by a late import is still a
circle for a reader.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lora", "baselines", "experiments", "analysis", "benchmarks")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages and run.py."""
    found = {}
    for package in PACKAGES:
        for file in sorted((root / package).rglob("*.py")):
            parts = file.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    if (root / "run.py").exists():
        found["run"] = root / "run.py"
    return found


def imports_of(name: str, file: Path, modules: set[str]) -> set[str]:
    """The project modules `file` imports, anywhere in it (relative imports resolved)."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` where only a.b is ours, e.g.
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imports_of(name, file, set(files)) for name, file in files.items()}


def read_layers(doc: Path) -> list[tuple[str, list[str]]]:
    """(layer, module patterns) from the table between the `<!-- layers -->` markers, lowest layer first."""
    text = doc.read_text()
    table = text.split("<!-- layers -->")[1].split("<!-- /layers -->")[0]
    layers = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] and not set(cells[0]) <= set("-:") and cells[0] != "layer":
            layers.append((cells[0], re.findall(r"`([^`]+)`", cells[1])))
    return layers


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    for rank, (_, patterns) in enumerate(layers):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return rank
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_imports(graph: dict[str, set[str]], layers) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module, layers)
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(f"{module} ({layers[mine][0]}) imports {target} ({layers[theirs][0]}), a higher layer")
    return problems


# --- the project --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


@pytest.fixture(scope="module")
def layers():
    return read_layers(ROOT / "ARCHITECTURE.md")


def test_every_module_is_in_exactly_one_layer(graph, layers):
    for module in graph:
        ranks = [r for r, (_, patterns) in enumerate(layers) if any(fnmatch.fnmatchcase(module, p) for p in patterns)]
        assert len(ranks) == 1, f"{module} is in {len(ranks)} layers of ARCHITECTURE.md; give it exactly one"


def test_no_import_circle(graph):
    assert cycles(graph) == []


def test_no_module_imports_a_higher_layer(graph, layers):
    assert upward_imports(graph, layers) == []


def test_the_library_never_reaches_into_the_runner(graph):
    """`lora` works without the rest of the repository: PEFT-style, a model in, a model out."""
    outside = {t for m, ts in graph.items() if m == "lora" or m.startswith("lora.") for t in ts}
    assert all(t == "lora" or t.startswith("lora.") for t in outside), sorted(outside)


# --- the checker itself can fail -----------------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_circle_through_a_late_import_is_found(tmp_path):
    _write(tmp_path, {
        "lora/__init__.py": "",
        "lora/a.py": "from .b import x\n",
        "lora/b.py": "def f():\n    from lora.a import y\n",
        "lora/c.py": "from . import a\n",
    })  # fmt: skip
    assert cycles(import_graph(tmp_path)) == [["lora.a", "lora.b"]]


def test_an_upward_import_is_found(tmp_path):
    _write(tmp_path, {
        "lora/__init__.py": "",
        "lora/serve.py": "def build():\n    from experiments.models import build\n",
        "experiments/__init__.py": "",
        "experiments/models.py": "import lora.serve\n",
        "ARCHITECTURE.md": "<!-- layers -->\n| layer | modules |\n|---|---|\n| library | `lora`, `lora.*` |\n"
                           "| runner | `experiments`, `experiments.*` |\n<!-- /layers -->\n",
    })  # fmt: skip
    problems = upward_imports(import_graph(tmp_path), read_layers(tmp_path / "ARCHITECTURE.md"))
    assert problems == ["lora.serve (library) imports experiments.models (runner), a higher layer"]
