"""The Colab bootstrap cell: in Colab it really pip-installs s9lib, then imports it.

Colab is simulated: a fake ``google.colab`` package on PYTHONPATH, and a fresh virtual
environment (with the system site-packages, so torch and friends need no install) in which
the cell runs. ``S9LIB_INSTALL_SPEC`` points pip at a copy of this checkout with
``--no-deps --no-build-isolation --no-index``, so the install is real but offline and fast
(a few seconds). The test then checks that ``import s9lib`` found the copy pip installed in
the venv, not the developer's editable install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest

from s9lib.show.book import BOOTSTRAP_CELL, chapters

pytestmark = pytest.mark.book


ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = chapters(ROOT / "book")
PROBE = "\nprint('IN_COLAB', IN_COLAB)\nprint('S9LIB_FILE', s9lib.__file__)\n"


def _first_code_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


def _cells() -> dict[str, list[str]]:
    """Distinct bootstrap cells -> the chapters that use them (one pip install per text)."""
    by_text: dict[str, list[str]] = {}
    for path in CHAPTERS:
        by_text.setdefault(_first_code_cell(path), []).append(path.stem)
    return by_text


CELLS = _cells()


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """(python, env, venv_dir, cwd): a venv whose python sees a fake google.colab."""
    tmp = tmp_path_factory.mktemp("colab")
    fake = tmp / "fake"
    (fake / "google" / "colab").mkdir(parents=True)  # google/ stays a namespace package
    (fake / "google" / "colab" / "__init__.py").write_text('"""Stands in for Colab."""\n')
    # pip builds in the source tree; build from a copy so the checkout stays untouched.
    src = tmp / "src"
    src.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", src)
    for extra in ("README.md", "LICENSE", "MANIFEST.in"):
        if (ROOT / extra).exists():
            shutil.copy2(ROOT / extra, src)
    shutil.copytree(ROOT / "s9lib", src / "s9lib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_USER")}
    env.update(
        PYTHONPATH=str(fake),
        S9LIB_INSTALL_SPEC=f"--no-deps --no-build-isolation --no-index "
                           f"--disable-pip-version-check {src}",
        PIP_NO_INPUT="1",
    )
    return python, env, env_dir, tmp


@pytest.mark.parametrize("cell", list(CELLS), ids=["+".join(v) for v in CELLS.values()])
def test_bootstrap_installs_s9lib_in_colab(colab, cell):
    assert cell == BOOTSTRAP_CELL
    python, env, env_dir, cwd = colab
    # cwd: not the checkout, whose s9lib/ would shadow the installed one (Colab: /content).
    proc = subprocess.run([str(python), "-c", cell + PROBE], env=env, capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, f"bootstrap failed:\n{proc.stdout}\n{proc.stderr}"
    assert "IN_COLAB True" in proc.stdout
    installed = proc.stdout.split("S9LIB_FILE ")[1].strip()
    assert Path(installed).resolve().is_relative_to(env_dir.resolve()), (
        f"s9lib was imported from {installed}, not from the copy pip installed in {env_dir}")


def test_bootstrap_outside_colab_only_imports(tmp_path):
    # No google.colab: no pip at all (an install spec that cannot work proves it), and
    # `import s9lib` finds the installed library.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["S9LIB_INSTALL_SPEC"] = "--no-index /nonexistent/s9lib"
    proc = subprocess.run([sys.executable, "-c", BOOTSTRAP_CELL + PROBE], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "IN_COLAB False" in proc.stdout
