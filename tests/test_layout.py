"""The library's shape, as the refactor left it: checked so that it stays that way."""

from __future__ import annotations

import ast
import subprocess
import sys

from helpers import REPO


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
        yield from sorted((REPO / folder).glob("*.py"))


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("s9lib"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.endswith("__"):
                        offenders.append(f"{path.name}: from {node.module} import {alias.name}")
            if isinstance(node, ast.ImportFrom) and node.level and path.parent.name == "s9lib":
                offenders += [f"{path.name}: from .{node.module} import {a.name}"
                              for a in node.names
                              if a.name.startswith("_") and not a.name.endswith("__")]
    assert offenders == []


def test_every_library_function_fits_on_a_screen():
    long = []
    for path in sorted((REPO / "s9lib").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 50:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
