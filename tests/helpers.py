"""Shared test helpers: where the real data is, and small real subsets of it."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def archive_path() -> Path:
    """The offline CIFAR-10 archive: ``S9LIB_DATA`` if it is an archive, else ../shared/data."""
    env = os.environ.get("S9LIB_DATA")
    if env and Path(env).exists():
        return Path(env)
    return REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@lru_cache(maxsize=None)
def cifar(train_per_class: int = 10, test_per_class: int = 5):
    """A small stratified subset of the real data set (decoded once, then cached)."""
    from s9lib.data import load_cifar10

    return load_cifar10(archive_path(), fast=False).fast(train_per_class, test_per_class)


def random_model():
    """A fresh ResNet18 with seed-0 weights, in eval mode (the untrained reference model)."""
    import torch

    from s9lib.models import ResNet18

    torch.manual_seed(0)
    return ResNet18().eval()


def step_recipe():
    """The fast recipe for one exact step: a global batch of the 80 images of ``cifar(8, 2)``,
    BatchNorm statistics over the global batch, float32 (bf16 rounding would hide small
    differences)."""
    from s9lib.training.recipes import get_recipe

    return get_recipe("fast", batch_size=80, sync_bn=True, amp="off", tta_flip=False)


def small_tree(tmp_path, per_class=3, classes=None, splits=("train", "test")):
    """A real image-folder tree (``tmp_path/tree/cifar10-jpeg/SPLIT/CLASS/*.jpg``): the first
    ``per_class`` JPEG files of each class in ``classes`` (default: the first three), taken
    from the archive. Returns ``tmp_path/tree``."""
    import tarfile

    from s9lib.data import CLASSES

    classes = CLASSES[:3] if classes is None else classes
    root = tmp_path / "tree" / "cifar10-jpeg"
    with tarfile.open(archive_path()) as tar:
        wanted = {f"{split}/{c}/{i:04d}.jpg" for split in splits for c in classes
                  for i in range(per_class)}
        for m in tar:
            rel = m.name.split("/", 1)[-1]
            if m.isfile() and rel in wanted:
                dest = root / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(m).read())
    return root.parent


def cli_env(**extra):
    """The environment of a CLI subprocess: the real archive, FAST mode; ``NAME=None``
    removes NAME."""
    env = {**os.environ, "S9LIB_DATA": str(archive_path()), "S9LIB_FAST": "1", **extra}
    return {k: v for k, v in env.items() if v is not None}


def one_line_error(proc, *needles, rc=2, alone=True):
    """Exit ``rc`` and one 'error: ...' line holding every needle, no traceback; the only line
    on stderr (``alone``), or the last one after progress bars."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == rc, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
    assert len(lines) == 1 or not alone, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def kill_mid_write(target, kind="s9lib.files.FIGURE", lock=False):
    """A real process that starts writing ``target`` with ``s9lib.files.atomic_write``
    (``kind``: the dotted name of a FileKind), taking the folder's lock first with ``lock``,
    and is SIGKILLed once its temporary file exists. Returns (its pid, the files it left)."""
    import signal
    import subprocess
    import sys
    import time

    folder, (module, _, name) = Path(target).parent, kind.rpartition(".")
    code = (f"import sys, time; from s9lib.files import FolderLock, atomic_write; "
            f"from {module} import {name} as kind; "
            + ("FolderLock(sys.argv[2]).acquire(); " if lock else "")
            + "atomic_write(sys.argv[1], lambda f: (f.write(b'half'), f.flush(), "
              "time.sleep(600)), kind=kind)")
    victim = subprocess.Popen([sys.executable, "-c", code, str(target), str(folder)],
                              cwd=REPO, env=cli_env())
    deadline = time.time() + 120
    while not list(folder.glob(".s9tmp-*")) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    return victim.pid, list(folder.glob(".s9tmp-*"))
