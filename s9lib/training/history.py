"""What a run did, epoch by epoch: ``History`` saves to and loads from ``history.json``.

Why a type of its own: the book plots and tabulates runs from three sources (a run in the
notebook, a run's ``history.json`` on disk, the course assignment's published CSV log), and
they should all be the same object with the same columns.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import MARK, FileKind, read_small_json, write_json
from .recipes import Recipe, get_recipe

__all__ = ["EpochRecord", "History", "HISTORY", "HISTORY_FILE"]

HISTORY = "history.json"


def _is_history(path: Path) -> bool:
    """Written by :meth:`History.save`: marked ``"s9lib": "history"``, or (before the mark)
    an object with exactly a history's four keys."""
    value = read_small_json(path)
    return isinstance(value, dict) and (value.get(MARK) == "history" or
                                        set(value) == {"epochs", "recipe", "device", "info"})


#: How s9lib recognises a history it wrote (``s9lib.files``: only such a file is replaced).
HISTORY_FILE = FileKind("an s9lib history (JSON)", _is_history)


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    lr: float  # the lr of the epoch's last training step
    seconds: float  # wall time of the training part of the epoch
    images_per_second: float


@dataclass
class History:
    """Per-epoch figures of a run, plus what it ran on. Saves to and loads from JSON."""

    epochs: list[EpochRecord] = field(default_factory=list)
    recipe: dict = field(default_factory=dict)
    device: str = ""
    info: dict = field(default_factory=dict)  # data source, sizes, library versions

    def __len__(self) -> int:
        return len(self.epochs)

    def column(self, name: str) -> list[float]:
        return [getattr(r, name) for r in self.epochs]

    @property
    def final_test_acc(self) -> float:
        return self.epochs[-1].test_acc if self.epochs else float("nan")

    @property
    def train_seconds(self) -> float:
        return sum(r.seconds for r in self.epochs)

    def to_dict(self) -> dict:
        return {"epochs": [asdict(r) for r in self.epochs], "recipe": self.recipe,
                "device": self.device, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls([EpochRecord(**r) for r in d.get("epochs", [])], d.get("recipe", {}),
                   d.get("device", ""), d.get("info", {}))

    @classmethod
    def from_epoch_csv(cls, path: str | os.PathLike, *, recipe: str | Recipe,
                       device: str, train_images: int = 50_000, **info) -> "History":
        """A run logged elsewhere, as a ``History``: a CSV with one row per epoch and the
        columns ``epoch`` (0-based, as such logs count), ``train_loss``, ``train_acc``,
        ``test_loss``, ``test_acc`` (fractions) and ``train_seconds``.

        Why: the course assignment's published 60-epoch log is the run this book compares
        against; read into the same type, it plots and tabulates like our own runs. Its
        lr column is the recipe's (constant) lr, which is all such logs imply.
        """
        r = get_recipe(recipe) if isinstance(recipe, str) else recipe
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        needed = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "train_seconds"}
        if not rows or not needed <= set(rows[0]):
            raise ValueError(f"{path} is not an epoch log: it needs the columns "
                             f"{', '.join(sorted(needed))}.")
        epochs = [EpochRecord(int(row["epoch"]) + 1, float(row["train_loss"]),
                              float(row["train_acc"]), float(row["test_loss"]),
                              float(row["test_acc"]), r.lr, float(row["train_seconds"]),
                              train_images / float(row["train_seconds"])) for row in rows]
        return cls(epochs, r.to_dict(), device,
                   {"train_images": train_images, "epochs_planned": len(epochs), **info})

    def save(self, path: str | os.PathLike) -> None:
        """Write ``history.json`` atomically; always valid JSON (a NaN is refused, not
        written as the ``NaN`` token no JSON parser accepts)."""
        write_json(path, self.to_dict(), HISTORY_FILE, "history")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"No history at {path}; train first "
                                    "(python -m s9lib train --out DIR).")
        return cls.from_dict(json.loads(path.read_text()))
