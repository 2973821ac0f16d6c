"""The packages of ray_gait form layers: none imports one above it, so none imports one that imports it back.

Read from the source with `ast` (nothing is imported): every `import ray_gait.X...` / `from ray_gait.X... import`
of a module, at its top or inside a function, names the package X it depends on.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ray_gait"

# bottom to top; a package may import those of lower layers only (one layer: packages that import none of each other)
LAYERS = [
    {"heap", "console", "stderr_filter", "io"},
    {"yaml_config"},
    {"registry"},
    {"pose"},
    {"heatmap"},
    {"config", "pairing", "synth", "ingest", "models"},
    {"data"},
    {"evaluation"},
    {"training"},
    {"tuning"},
    {"ray_layer"},
    {"cli"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}
MAX_DEFERRED = 3     # imports of another package inside functions, outside cli.py (lazy loading, not cycles)


def _unit(path: Path, root: Path = PACKAGE) -> str:
    """The package (or top-level module) a source file belongs to."""
    return path.relative_to(root).parts[0].removesuffix(".py")


def _imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, int, bool]]:
    """(package imported, line, inside a function) of each ray_gait import of another package in `path`."""
    tree = ast.parse(path.read_text())
    unit = _unit(path, root)
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "ray_gait" and len(parts) > 1 and parts[1] != unit:
                    found.append((parts[1], child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def _graph() -> dict[Path, list[tuple[str, int, bool]]]:
    return {path: _imports(path) for path in sorted(PACKAGE.rglob("*.py")) if path.name != "__init__.py"
            or path.parent != PACKAGE}


def test_every_package_has_a_layer():
    units = {_unit(p) for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py"}
    assert units - set(LAYER_OF) == set(), "a new package: give it a layer in LAYERS"


def test_no_package_imports_one_above_it():
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line} imports ray_gait.{target}"
              for path, imports in _graph().items() for target, line, _ in imports
              if LAYER_OF[target] >= LAYER_OF[_unit(path)]]
    assert upward == []


def test_few_imports_are_deferred_into_functions():
    deferred = [f"{path.relative_to(PACKAGE.parent)}:{line}" for path, imports in _graph().items()
                for _, line, inside in imports if inside and _unit(path) != "cli"]
    assert len(deferred) <= MAX_DEFERRED, deferred


def test_the_checks_see_an_upward_import(tmp_path):
    """The reader finds imports at the top and inside functions (a module of `data` importing upwards)."""
    probe = tmp_path / "ray_gait" / "data" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("import os\nfrom ray_gait.training.loop import train_step\nfrom ray_gait.data import split\n\n"
                     "def f():\n    import ray_gait.ray_layer.trainer\n")
    assert _imports(probe, tmp_path / "ray_gait") == [("training", 2, False), ("ray_layer", 6, True)]
