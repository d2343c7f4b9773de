"""The house rules, read from the source: imports point one way, down the layers of docs/architecture.md.

The module map in ``docs/architecture.md`` is the one place that says which layer a module belongs to; these
tests read it, check it lists exactly the modules in the tree, and check every import statement (at module
level, inside functions and under ``TYPE_CHECKING`` alike) against it.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lensa_for_all.moved import MOVED, SPLIT

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lensa_for_all"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
OLD_PATHS = set(MOVED) | set(SPLIT)
# the issue's coarse rule: nothing in the first group may import anything in the second
LOWER = ("errors", "atomic", "config", "photos", "prompts", "training")
HIGHER = ("backends", "generation", "pipeline", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_module(dotted: str) -> bool:
    base = PACKAGE.parent / dotted.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every lensa_for_all module ``path`` imports, wherever the statement is (functions, TYPE_CHECKING)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "lensa_for_all")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lensa_for_all":
                continue
            for alias in node.names:  # ``from .. import errors`` imports the module lensa_for_all.errors
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub) else target)
    return found


def module_map() -> tuple[dict[str, tuple[int, str]], dict[str, str]]:
    """(module -> (layer number, layer name)) and (old path -> new home), as docs/architecture.md writes them."""
    layers: dict[str, tuple[int, str]] = {}
    old: dict[str, str] = {}
    layer: tuple[int, str] | None = None
    in_old = False
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"### Layer (\d+): (\w+)", line)
        if heading:
            layer, in_old = (int(heading.group(1)), heading.group(2)), False
            continue
        if line.startswith("## "):
            layer, in_old = None, line.startswith("## Old paths")
            continue
        row = re.match(r"\|\s*`([\w/.]+\.py)`\s*\|\s*(?:`([\w.]+)`)?", line)
        if not row:
            continue
        dotted = module_name(PACKAGE / row.group(1))
        if in_old:
            old[dotted] = row.group(2) or ""
        elif layer is not None:
            assert dotted not in layers, f"{row.group(1)} is listed twice in {ARCHITECTURE.name}"
            layers[dotted] = layer
    return layers, old


def test_the_module_map_lists_exactly_the_modules_in_the_tree() -> None:
    layers, old = module_map()
    tree = set(all_modules())
    current = tree - OLD_PATHS
    assert sorted(current - set(layers)) == [], f"modules missing from {ARCHITECTURE.name}'s module map"
    assert sorted(set(layers) - current) == [], f"{ARCHITECTURE.name} lists modules that are not in the tree"
    assert old == {**MOVED, **{k: v[0] for k, v in SPLIT.items()}}, "the old paths table must match lensa_for_all.moved"
    assert tree >= OLD_PATHS


def test_imports_point_down_the_layers_only() -> None:
    layers, _ = module_map()
    arrows = []
    for name, path in all_modules().items():
        if name in OLD_PATHS:
            continue
        for dep in sorted(imports_of(path)):
            if dep in OLD_PATHS:
                arrows.append(f"{name} imports the deprecated path {dep}; import {MOVED.get(dep, SPLIT.get(dep))}")
            elif dep in layers and layers[dep][0] > layers[name][0]:
                arrows.append(f"{name} (layer {layers[name][0]} {layers[name][1]}) -> {dep} "
                              f"(layer {layers[dep][0]} {layers[dep][1]})")
    assert arrows == [], "imports that point up the layers:\n" + "\n".join(arrows)


def test_the_issue_rule_lower_packages_never_import_higher_ones() -> None:
    def top(module: str) -> str:
        return module.split(".")[1] if "." in module else ""

    offending = [(name, dep) for name, path in all_modules().items() if top(name) in LOWER and name not in OLD_PATHS
                 for dep in imports_of(path) if top(dep) in HIGHER]
    assert offending == []


def test_the_reader_sees_real_imports() -> None:
    """The import reader must see what it checks: a known arrow and a function-level, relative import."""
    trainer = imports_of(PACKAGE / "training" / "trainer.py")
    assert {"lensa_for_all.training.local", "lensa_for_all.training.source_dir", "lensa_for_all.config"} <= trainer
    assert "lensa_for_all.errors" in imports_of(PACKAGE / "training" / "local.py")  # ``from .. import errors``
    assert "lensa_for_all.training.backend" in imports_of(PACKAGE / "backends" / "sagemaker.py")


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_warn_and_are_the_new_module(old: str) -> None:
    code = ("import importlib, warnings\n"
            "warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    importlib.import_module({old!r})\nexcept DeprecationWarning as w:\n    print(w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"{old} moved to {MOVED[old]}" in out.stdout and "0.3.0" in out.stdout, out.stdout + out.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert importlib.import_module(old) is importlib.import_module(MOVED[old])
    text = (PACKAGE.parent / (old.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    last = ast.parse(text).body[-1]  # the old file does nothing but alias itself
    assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and ast.unparse(last.value) == "alias(__name__)"


def test_split_old_paths_warn_and_re_export_every_name() -> None:
    for old, homes in SPLIT.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=re.escape(f"{old} moved to")):
            module = importlib.import_module(old)
        for name in module.__all__:
            assert any(getattr(importlib.import_module(h), name, None) is getattr(module, name) for h in homes), name
