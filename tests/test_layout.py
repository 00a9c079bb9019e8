"""The library's shape, as the refactor left it: checked so that it stays that way."""

from __future__ import annotations

import pytest

import ast
import subprocess
import sys

from helpers import REPO

pytestmark = pytest.mark.unit


def test_import_s9lib_stays_light():
    """``import s9lib`` (and ``s9lib.pretrained``) must not pay for albumentations, OpenCV or
    torchvision: they load with the modules that use them."""
    code = ("import sys, s9lib; heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'albumentations', 'cv2', 'torchvision'}); print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == ""


def _sources():
    for folder in ("s9lib", "tests", "benchmarks"):
        yield from sorted((REPO / folder).rglob("*.py"))


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("s9lib"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.endswith("__"):
                        offenders.append(f"{path.name}: from {node.module} import {alias.name}")
            if isinstance(node, ast.ImportFrom) and node.level and "s9lib" in path.parts:
                offenders += [f"{path.name}: from .{node.module} import {a.name}"
                              for a in node.names
                              if a.name.startswith("_") and not a.name.endswith("__")]
    assert offenders == []


def test_every_library_function_fits_on_a_screen():
    long = []
    for path in sorted((REPO / "s9lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 50:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


# DESIGN.md: imports run one way, runtime/files -> data -> models -> training -> explain ->
# evaluate -> show -> __main__. A module may import its own rank or a lower one, never higher.
RANKS = {"runtime": 0, "files": 0, "data": 1, "models": 2, "inference": 2, "checkpoints": 3,
         "training": 4, "explain": 5, "evaluate": 6, "show": 7, "__main__": 8}
# Pairs DESIGN.md forbids although the ranks would allow them.
FORBIDDEN = {("explain", "training")}


def _area(module: str) -> str:
    """'s9lib.training.loop' -> 'training' (the top-level module or subpackage)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path, base=REPO) -> str:
    rel = path.relative_to(base).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__") if rel.name == "__init__" \
        else ".".join(rel.parts)


def _imported_modules(path, base=REPO):
    """Every s9lib module ``path`` imports (top level or inside a function), resolved."""
    name = _module_name(path, base)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("s9lib"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("s9lib"):
                continue
            if node.module is None or module.count(".") == 0:  # from . import x: x is a module
                yield from (f"{module}.{a.name}" for a in node.names)
            else:
                yield module


def import_violations(root=REPO / "s9lib"):
    """'a -> b' for each import from a lower area to a higher one (or a forbidden pair)."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        src = _area(_module_name(path, root.parent))
        if src == "__init__":  # the face: re-exports what a user starts with
            continue
        for target in _imported_modules(path, root.parent):
            dst = _area(target)
            if dst in ("__init__", "__version__") or dst not in RANKS:
                continue
            if RANKS[dst] > RANKS[src] or (src, dst) in FORBIDDEN:
                bad.append(f"{_module_name(path, root.parent)} -> {target}")
    return bad


def test_every_area_has_a_rank():
    areas = {_area(_module_name(p)) for p in (REPO / "s9lib").rglob("*.py")}
    assert areas - {"__init__"} <= set(RANKS), areas - set(RANKS)


def test_imports_run_one_way():
    assert import_violations() == []


def test_the_direction_check_catches_an_upward_import(tmp_path):
    """A planted upward import (data -> training) and a forbidden one (explain -> training)
    are both reported: the check above cannot pass by looking at nothing."""
    import shutil
    copy = tmp_path / "s9lib"
    shutil.copytree(REPO / "s9lib", copy, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    (copy / "data" / "planted.py").write_text("from ..training.recipes import RECIPES\n")
    (copy / "explain" / "planted.py").write_text("def f():\n    from s9lib.training import fit\n")
    found = import_violations(copy)
    assert found == ["s9lib.data.planted -> s9lib.training.recipes",
                     "s9lib.explain.planted -> s9lib.training"]


def test_cam_imports_nothing_else_from_s9lib():
    assert list(_imported_modules(REPO / "s9lib" / "explain" / "cam.py")) == []
