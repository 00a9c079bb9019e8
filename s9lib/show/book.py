"""Helpers for the book's chapters: the Colab bootstrap cell, provenance, re-executing chapters.

Why here and not in each notebook: every chapter starts with the same bootstrap cell and
prints where its numbers came from; a test checks the cells against :data:`BOOTSTRAP_CELL`,
and ``python -m s9lib.show.book`` re-executes the chapters so that
their stored outputs come from a real run rather than from an edit by hand.

The repository URL is defined twice, here and in ``book/_config.yml`` (``repository: url``);
``tests/test_book.py`` checks they agree. A fork changes both.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

from ..files import FileKind, atomic_write, read_small_json

__all__ = [
    "REPOSITORY_URL",
    "DEFAULT_REPOSITORY_URL",
    "repository_url",
    "write_bootstrap_cells",
    "write_notebook",
    "NOTEBOOK",
    "bootstrap_cell",
    "DEFAULT_INSTALL_SPEC",
    "BOOTSTRAP_CELL",
    "BOOK_DIR",
    "chapters",
    "reading_minutes",
    "run_info",
    "run_file",
    "execute_chapter",
    "main",
]

#: ``book/`` of a source checkout (the chapters live there; an installed wheel has none).
BOOK_DIR = Path(__file__).resolve().parents[2] / "book"  # s9lib/show/book.py -> book/

#: Where the book's source lives when no checkout says otherwise.
DEFAULT_REPOSITORY_URL = "https://github.com/s9-book/s9-book"


def repository_url(book_dir: str | os.PathLike = BOOK_DIR) -> str:
    """The ``repository: url:`` of ``book/_config.yml``: the one line a fork changes.

    Read with a regular expression, not YAML, so that importing this module stays cheap.
    Without a checkout (an installed wheel, Colab): :data:`DEFAULT_REPOSITORY_URL`.
    """
    config = Path(book_dir) / "_config.yml"
    if config.is_file():
        found = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)",
                          config.read_text(encoding="utf-8"), re.M)
        if found:
            return found.group(1)
    return DEFAULT_REPOSITORY_URL


#: Where the book's source lives. Colab installs s9lib from here (see ``BOOTSTRAP_CELL``).
REPOSITORY_URL = repository_url()

def bootstrap_cell(url: str) -> str:
    """The Colab bootstrap cell that installs s9lib from the repository at ``url``.

    It cannot call into s9lib (in Colab s9lib is not installed yet), so it is
    self-contained. ``S9LIB_INSTALL_SPEC`` replaces the pip arguments (shell-split), e.g.
    ``"--no-deps /path/to/checkout"``; the tests use that.
    """
    return f'''\
# Colab bootstrap: in Google Colab, install s9lib (this book's library) first.
import importlib, os, shlex, subprocess, sys
try:
    import google.colab  # noqa: F401  (exists only in Colab)
    IN_COLAB = True
except ImportError:
    IN_COLAB = False
if IN_COLAB:
    spec = os.environ.get("S9LIB_INSTALL_SPEC")
    args = shlex.split(spec) if spec else [
        "s9lib[book] @ git+{url}"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args],
                   check=True)
    importlib.invalidate_caches()
import s9lib'''


#: What the bootstrap cell installs in Colab unless ``S9LIB_INSTALL_SPEC`` says otherwise.
DEFAULT_INSTALL_SPEC = f"s9lib[book] @ git+{REPOSITORY_URL}"

#: The first code cell of every chapter, verbatim (for this checkout's repository URL).
BOOTSTRAP_CELL = bootstrap_cell(REPOSITORY_URL)


def chapters(book_dir: str | os.PathLike = BOOK_DIR) -> list[Path]:
    """The chapter notebooks listed in ``_toc.yml``, in reading order, appendix included.

    The toc is a flat ``chapters:`` list or ``parts:`` with captions (the chapters, then the
    appendix, ``a1_*``); either way every notebook in it counts as a chapter here, so the
    appendix is re-executed and checked like the chapters.
    """
    import yaml

    book_dir = Path(book_dir)
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts") or toc.get("chapters") or [])
    out = []
    for name in files:
        path = book_dir / name
        if path.suffix == "":
            path = path.with_suffix(".ipynb")
        if path.suffix == ".ipynb":
            out.append(path)
    return out


WORDS_PER_MINUTE = 200  # a technical text read with care; the instructor page's rule


def reading_minutes(path: str | os.PathLike) -> int:
    """Minutes to read a chapter: its prose words at 200 a minute plus one minute per figure.

    Why a function: the instructor page (``book/instructors.md``) quotes these figures, and
    ``tests/test_book.py`` recomputes them, so the page stays true when a chapter changes.
    Prose is the markdown cells without fenced code; a figure is a stored PNG or widget output.
    """
    import json

    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    words = figures = 0
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text = re.sub(r"```.*?```", "", "".join(cell["source"]), flags=re.S)
            words += len(text.split())
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            figures += "image/png" in data or "application/vnd.jupyter.widget-view+json" in data
    return round(words / WORDS_PER_MINUTE + figures)


def model_info(meta: dict) -> str:
    """One line on a model's provenance for a chapter's header, from its weights' ``meta``:
    the recipe and epochs it was trained with, on what, and its measured test accuracy.

    A second training cycle (``train --init``) names the run it continued, so "8 epochs" is
    not read as the model's whole training.
    """
    text = f"model:    the {meta['recipe']['name']} recipe, {meta['epochs']} epochs"
    start = meta.get("init")
    if start:
        text += f", continuing the run {Path(start['file']).parent.name}"
    text += f", on {meta['device']}"
    if meta.get("test_acc") is not None:
        text += (f"; test accuracy {meta['test_acc']:.1%} ({meta.get('test_images', '?'):,} "
                 f"images{', flip TTA' if meta.get('tta_flip') else ''})")
    return text


def run_file(relative: str, book_dir: str | os.PathLike = BOOK_DIR) -> Path:
    """A committed run's file, e.g. ``"runs/planted-shortcut/results.json"``.

    In a checkout (the book's build, CI, a clone) it is the file beside ``book/``. Without one
    (Colab installs only the library) it is downloaded once from the repository's raw files
    into ``cache_dir()/runs`` and read from there, so a chapter that reads a committed run
    works in both places and shows the same numbers.
    """
    local = Path(book_dir).parent / relative
    if local.is_file():
        return local
    from urllib.request import urlopen

    from ..runtime import cache_dir

    target = cache_dir() / relative
    if not target.is_file():
        url = f"{repository_url(book_dir)}/raw/main/{relative}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with urlopen(url, timeout=60) as response:  # noqa: S310 (the repository's own URL)
            payload = response.read()
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(payload)
        partial.replace(target)
    return target


def run_info(data=None) -> str:
    """A few lines saying where a chapter's numbers come from: mode, device, data, software.

    ``data``: the :class:`s9lib.data.Cifar10` the chapter uses (its sizes and source are
    reported). Chapters print this near the top, so stored outputs carry their provenance.
    """
    import torch

    from ..runtime import fast_mode, get_device

    device = get_device()
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        name += f" ({platform.machine()}, {os.cpu_count()} cores)"
    lines = [
        f"mode:     {'FAST (S9LIB_FAST=1)' if fast_mode() else 'full'}",
        f"device:   {name}",
    ]
    if data is not None:
        lines.append(f"data:     {len(data.train):,} train / {len(data.test):,} test images "
                     f"from {Path(str(data.source)).name}")
    lines.append(f"software: s9lib {_version()}, torch {torch.__version__}, "
                 f"python {platform.python_version()}")
    lines.append(f"run on:   {time.strftime('%Y-%m-%d')}")
    return "\n".join(lines)


def _version() -> str:
    from .. import __version__

    return __version__


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Temporarily set (or, with None, remove) environment variables; the kernel inherits them."""
    old = {k: os.environ.get(k) for k in values}
    try:
        _set_environ(values)
        yield
    finally:
        _set_environ(old)


def _set_environ(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def execute_chapter(path: str | os.PathLike, fast: bool, *, timeout: int = 3600,
                    write: bool = True):
    """Run a chapter top to bottom in a fresh ``python3`` kernel and store its outputs.

    ``fast``: run in FAST mode (``S9LIB_FAST=1``) or on the full data. The kernel's working
    directory is the notebook's folder (``book/``), as for nbval and Colab. Widget state is
    stored in the notebook, so sliders work in the static HTML. Returns the executed
    notebook; with ``write=True`` (default) it also replaces the file on disk.
    """
    import nbformat
    from nbclient import NotebookClient

    from ..runtime import absolute_path_variables

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
        store_widget_state=True,
        record_timing=False,
    )
    # The kernel runs in book/: a relative data or cache path must not change meaning there.
    with _environ(S9LIB_FAST="1" if fast else None, **absolute_path_variables()):
        client.execute()
    # Only kernelspec/language_info are useful; drop anything volatile the kernel added.
    nb.metadata.pop("papermill", None)
    nb.metadata.kernelspec = {"display_name": "Python 3", "language": "python",
                              "name": "python3"}
    # Widgets the kernel created but no cell displays (a library's progress bar, say) are
    # not part of the page: storing their state would make the static site load the widget
    # manager for nothing, and the book test requires state only where a widget is shown.
    if not any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
               for cell in nb.cells for output in cell.get("outputs", [])):
        nb.metadata.pop("widgets", None)
    if write:
        write_notebook(nb, path)
    return nb


def _is_notebook(path: Path) -> bool:
    value = read_small_json(path)
    return isinstance(value, dict) and "cells" in value and "nbformat" in value


#: A chapter is rewritten in place (its outputs are the runner's to replace), but only a
#: file that is a Jupyter notebook, and atomically: a killed run never leaves half a chapter.
NOTEBOOK = FileKind("a Jupyter notebook", _is_notebook)


def write_notebook(nb, path: str | os.PathLike) -> Path:
    """``nbformat.write(nb, path)`` through :func:`s9lib.files.atomic_write`."""
    import nbformat

    text = nbformat.writes(nb)
    text += "" if text.endswith("\n") else "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), kind=NOTEBOOK)


def write_bootstrap_cells(paths: Sequence[Path], url: str = REPOSITORY_URL) -> list[Path]:
    """Make the first code cell of each chapter ``bootstrap_cell(url)``, outputs untouched.

    After a fork changes ``repository: url:`` in ``_config.yml``, this carries the new URL
    into every chapter's Colab bootstrap cell; no chapter needs re-executing. Returns the
    notebooks it changed.
    """
    import nbformat

    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        if first.source != bootstrap_cell(url):
            first.source = bootstrap_cell(url)
            write_notebook(nb, path)
            changed.append(Path(path))
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m s9lib.show.book [--fast] [CHAPTER ...]``: refresh the chapters' stored outputs."""
    parser = argparse.ArgumentParser(
        prog="python -m s9lib.show.book",
        description="Re-execute the book's chapters (full data unless --fast) and store "
                    "their outputs and widget state in the notebooks.")
    parser.add_argument("chapters", nargs="*",
                        help="notebooks to run (default: every chapter in book/_toc.yml)")
    parser.add_argument("--fast", action="store_true", help="FAST mode (a quick smoke run)")
    parser.add_argument("--book", default=str(BOOK_DIR), help="the book folder (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--bootstrap-only", action="store_true",
                        help="only rewrite each chapter's Colab bootstrap cell (after a fork "
                        "changed repository: url: in book/_config.yml); executes nothing")
    args = parser.parse_args(argv)
    try:
        paths = [Path(p) for p in args.chapters] or chapters(args.book)
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:  # checked before the first chapter runs (each can take minutes)
            raise FileNotFoundError(f"No chapter notebook at {', '.join(missing)}; pass "
                                    "paths such as book/01_augmentation.ipynb, or none for all.")
        from ..runtime import env_flag

        env_flag("S9LIB_FAST")  # a misspelt switch fails now, not inside a kernel
    except (ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.bootstrap_only:
        url = repository_url(args.book)
        changed = write_bootstrap_cells(paths, url)
        print(f"bootstrap cells now install from {url}: {len(changed)} of "
              f"{len(paths)} chapters changed", file=sys.stderr)
        return 0
    for path in paths:
        start = time.perf_counter()
        execute_chapter(path, fast=args.fast, timeout=args.timeout)
        print(f"{path}: executed ({'FAST' if args.fast else 'full'}) in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
