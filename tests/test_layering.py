"""The package's layering: each layer imports only from the layers below it, and no modules import each other.

Layers, bottom up: the shared basics (``cnnlab.errors``, ``cnnlab.environment``, ``cnnlab.untrusted``,
``cnnlab.extras``, ``cnnlab.console``); ``nn``
(activations, blocks, feature extractors); ``models`` (networks built from ``nn``); ``data`` (datasets, caches,
augmentation: no models); ``training`` (the LightningModule and what it trains with); ``inference`` (a trained
model loaded and run); ``evaluation`` (metrics, plots, reports of predictions); and the commands at the top
(``cnnlab/*.py``: train, evaluate, predict, export, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cnnlab"
BASICS = {"cnnlab.errors", "cnnlab.environment", "cnnlab.untrusted", "cnnlab.extras", "cnnlab.console"}
# what each subpackage may import besides itself and the basics
ALLOWED = {
    "nn": set(),
    "models": {"nn"},
    "data": set(),
    "training": {"nn", "models", "data"},
    "inference": {"nn", "models", "data", "training"},
    "evaluation": {"nn", "models", "data", "training", "inference"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def cnnlab_imports(path: Path) -> set[str]:
    """Every cnnlab module ``path`` imports, at any depth of the file (functions and TYPE_CHECKING blocks too)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("cnnlab"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("cnnlab"):
            imported.add(node.module)  # `from cnnlab.evaluation import plots` imports a module too:
            imported.update(
                f"{node.module}.{alias.name}" for alias in node.names
            )  # names that are none are dropped below
    return imported


_PATHS = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
MODULES = {name: {i for i in cnnlab_imports(path) if i in _PATHS} for name, path in _PATHS.items()}


def layer(module: str) -> str:
    """The subpackage a module belongs to, ``basics`` or ``commands`` for the top-level modules."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ALLOWED:
        return parts[1]
    return "basics" if module in BASICS or module == "cnnlab" else "commands"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in ALLOWED))
def test_subpackages_import_only_from_layers_below(module):
    own = layer(module)
    wrong = sorted(name for name in MODULES[module] if layer(name) not in ALLOWED[own] | {own, "basics"})
    assert not wrong, f"{module} ({own}) imports {wrong}; allowed: {sorted(ALLOWED[own])} and the basics"


def test_basics_import_only_basics():
    assert {m: MODULES[m] - BASICS for m in BASICS if MODULES[m] - BASICS} == {}


def test_no_modules_import_each_other():
    """No cycles in the import graph, counting imports inside functions: two modules that need each other
    are one concept split in two, or a layer upside down."""
    graph = {m: imports - {m} for m, imports in MODULES.items()}
    cycles = []
    state: dict[str, str] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
