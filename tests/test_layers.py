"""Layers point one way: which of nnunet-mtl's packages may import which (read from the source)."""

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "nnunet_mtl"
FOUNDATION = {"config", "environment", "errors", "io", "paths", "console", "precision"}
# what each layer may import besides the foundation; cli is the top, imported by nobody but __main__
ALLOWED = {
    "data": set(),
    "model": set(),
    "inference": {"data", "model", "postprocessing"},
    "evaluation": {"data"},
    "postprocessing": {"data", "evaluation"},
    "training": {"data", "model", "inference", "evaluation", "postprocessing"},
    "nnunet_ext": {"training"},
    "benchmark": {"data", "model", "inference", "evaluation"},
    "report": {"data", "model", "inference", "evaluation", "postprocessing", "training", "benchmark"},
    "demo": {"data", "inference", "evaluation", "training", "report"},
    "cli": {"data", "model", "inference", "evaluation", "training", "benchmark", "report", "demo"},
    "__main__": {"cli"},
}


def imports_by_layer() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        layer = parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                names = module.split(".")
                if names[0] == "nnunet_mtl" and len(names) > 1 and names[1] != layer:
                    found.setdefault(layer, set()).add(names[1])
    return found


def test_every_package_imports_only_the_layers_below_it():
    found = imports_by_layer()
    assert set(found) <= set(ALLOWED) | FOUNDATION
    wrong = {layer: sorted(imported - ALLOWED.get(layer, set()) - FOUNDATION) for layer, imported in found.items()}
    assert {layer: names for layer, names in wrong.items() if names} == {}


def test_the_foundation_imports_no_layer():
    found = imports_by_layer()
    assert {name: sorted(found.get(name, set()) - FOUNDATION) for name in FOUNDATION} == {n: [] for n in FOUNDATION}
