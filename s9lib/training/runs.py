"""A run folder (``--out``): claimed, checked and trained in, in that order.

Why a module: "does this folder already hold a run?" and "is another training writing
there?" are one question. Asked apart (check, load the data, then lock), two trainings
started together on one empty folder both pass the check, and the slower one replaces the
other's finished run. Here the lock is taken first, the folder is checked under it, and only
then is the data loaded: of two trainings started together exactly one trains, and the
other refuses in one sentence.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..checkpoints import CHECKPOINT, checkpoint_file, load
from ..data.cifar import load_cifar10
from ..files import FolderLock, check_writable_folder, remove_stale_temps
from ..models import ResNet18
from ..runtime import seed_everything
from .history import HISTORY, History
from .loop import fit, portable_path
from .recipes import Recipe

__all__ = ["claim", "check_run_folder", "describe_run", "train"]


def claim(out: str | os.PathLike, *, resume: bool = False,
          force: bool = False) -> FolderLock | None:
    """Lock ``out``, delete a killed writer's temporary files, then check the folder
    (:func:`check_run_folder`); returns the held lock (release it when done).

    Under ``torchrun`` only rank 0 locks (and returns the lock; the other ranks None): it
    alone writes there, and a refusal on rank 0 ends the job.
    """
    out = Path(out)
    if resume and force:
        raise ValueError("--resume and --force contradict each other; pass one of them.")
    if resume and not (out / CHECKPOINT).is_file():  # before the folder is created
        check_run_folder(out, resume=True)
    if os.environ.get("RANK", "0") != "0":
        return None
    check_writable_folder(out, "--out")
    lock = FolderLock(out).acquire()
    try:
        for name in (CHECKPOINT, HISTORY):
            remove_stale_temps(out, name)
        check_run_folder(out, resume=resume, force=force)
    except BaseException:
        lock.release()
        raise
    return lock


def check_run_folder(out: str | os.PathLike, *, resume: bool = False,
                     force: bool = False) -> None:
    """With ``resume``, ``out`` must hold a checkpoint; without ``resume`` or ``force`` it
    must hold no run. Call it holding the folder's lock (:func:`claim` does)."""
    out = Path(out)
    if resume and not (out / CHECKPOINT).is_file():
        raise ValueError(f"Nothing to resume: no {CHECKPOINT} in {out}. Drop --resume to "
                         "start a fresh run there, or pass the --out of the run to continue.")
    found = [n for n in (CHECKPOINT, HISTORY) if (out / n).is_file()]
    if found and not (resume or force):
        raise ValueError(f"{out} already holds a run ({describe_run(out, found)}); pass "
                         "--resume to continue it, or another --out (or --force to replace "
                         "it).")


def describe_run(out: Path, found: list[str]) -> str:
    """'history.json: 3 of 60 epochs, recipe course' (or just the files) for a refusal."""
    try:
        h = History.load(out / HISTORY)
        planned = h.info.get("epochs_planned", "?")
        return (f"{', '.join(found)}: {len(h)} of {planned} epochs, recipe "
                f"{(h.recipe or {}).get('name', '?')}")
    except (OSError, ValueError, KeyError, TypeError):
        return ", ".join(found)


def train(recipe: Recipe, out: str | os.PathLike, *, data: str | os.PathLike | None = None,
          epochs: int | None = None, resume: bool = False, force: bool = False,
          device: str | None = None, num_workers: int | None = None,
          progress: bool = True, init: str | os.PathLike | None = None) -> History:
    """What ``python -m s9lib train`` does: :func:`claim` ``out`` (lock, then check), load
    the data (``data``: any source ``load_cifar10`` takes), seed, and :func:`fit` a fresh
    ``ResNet18`` there (or continue the run in it, ``resume``); returns the history.

    ``init``: start from the weights of a trained model (a run's checkpoint or a weights
    file, anything ``--checkpoint`` takes) instead of random ones, with a fresh optimizer
    and schedule: a second training cycle. The history records the file and its sha256.
    """
    if init is not None:  # a wrong path fails here, before the data are loaded
        checkpoint_file(init, alternative="pass a weights file")
    lock = claim(out, resume=resume, force=force)
    try:
        cifar = load_cifar10(data)
        seed_everything(recipe.seed)
        model = ResNet18(num_classes=len(cifar.classes))
        info = None
        if init is not None:
            info = {"init": initialize_from(model, init)}
        return fit(model, cifar, recipe, epochs=epochs, out=out, resume=resume, device=device,
                   num_workers=num_workers, progress=progress, info=info)
    finally:
        if lock is not None:
            lock.release()


def initialize_from(model: ResNet18, source: str | os.PathLike) -> dict:
    """Copy the weights of ``source`` (a run's checkpoint or folder, or a weights file) into
    ``model``; return what a history records of it: the file (as a portable path) and its
    sha256, so a continued run names exactly what it continued."""
    path = checkpoint_file(source, alternative="pass a weights file")
    trained = load(path)
    if trained.linear.out_features != model.linear.out_features:
        raise ValueError(f"{path} predicts {trained.linear.out_features} classes; the data has "
                         f"{model.linear.out_features}.")
    model.load_state_dict(trained.state_dict())
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"file": portable_path(str(path)), "sha256": digest}
