"""Training recipes: every number that shapes a run, as plain data, and its lr schedule.

Why a frozen dataclass: a reader sees a whole run's settings in one place (like airbench's
``hyp`` or nanoGPT's config), each field carries its unit, a checkpoint stores the recipe
and ``--resume`` refuses a different one. The schedule is one function,
:func:`lr_factor`, read both by the scheduler ``fit`` steps and by the plotted schedule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from ..data import augment as aug
from ..data.inputs import CIFAR10_MEAN, CIFAR10_STD
from ..runtime import AMP_SETTINGS

__all__ = ["Recipe", "RECIPES", "RENAMED", "get_recipe", "lr_factor", "lr_schedule"]

#: Names used before the course assignment's recipes and presets were renamed ("seed" also
#: meant a random seed: ``augment.build("seed", seed=0)``). Files that recorded them still
#: load (:meth:`Recipe.from_dict`), and the CLI takes them with a notice.
RENAMED = {"seed": "course", "seed-fixed": "course-fixed"}


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run, as plain data."""

    name: str
    epochs: int  # passes over the training split
    batch_size: int  # images per optimisation step
    optimizer: str  # "adam" or "sgd"
    lr: float  # the constant lr, or the peak of the one-cycle schedule
    weight_decay: float = 0.0  # L2 factor (SGD: on weights only, not BN or biases)
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    schedule: str = "constant"  # "constant" or "onecycle" (stepped after every batch)
    pct_start: float = 0.25  # one-cycle: fraction of all steps spent warming up
    div_factor: float = 8.0  # one-cycle: the first step's lr is lr / div_factor
    final_div_factor: float = 200.0  # one-cycle: the last step's lr is lr / div / final_div
    label_smoothing: float = 0.0  # probability mass spread over the other classes
    augment: str = "course"  # an s9lib.data.augment preset (loader path)
    data_path: str = "loader"  # "loader" (albumentations DataLoader) or "device"
    device_augment: tuple[str, ...] = ("crop", "flip", "cutout")  # device path only
    cutout: int = 12  # device path: cutout square side, pixels
    drop_last_min_batches: int = 4  # device path: drop the ragged last batch (BatchNorm
    #   dislikes tiny batches) when the split holds at least this many full batches
    eval_batch_size: int = 512  # images per evaluation forward pass (no effect on results)
    tta_flip: bool = False  # evaluate on image + its mirror image
    compile: bool = False  # torch.compile the model (CUDA only)
    sync_bn: bool = False  # distributed only: BatchNorm statistics of the global batch (see
    #   s9lib.training.distributed); off by default: per-rank batches of 64+ images estimate them
    #   well, and syncing costs an all-reduce per BatchNorm layer (20 in ResNet18) per step
    amp: str = "auto"  # autocast: auto (per device, runtime.amp_dtype), off, bf16, fp16
    seed: int = 0  # shuffles, augmentations and initial weights

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; use 'adam' or 'sgd'.")
        if self.schedule not in ("constant", "onecycle"):
            raise ValueError(f"Unknown schedule {self.schedule!r}; use 'constant' or 'onecycle'.")
        if self.data_path not in ("loader", "device"):
            raise ValueError(f"Unknown data_path {self.data_path!r}; use 'loader' or 'device'.")
        if self.amp not in AMP_SETTINGS:
            raise ValueError(f"Unknown amp setting {self.amp!r}; use one of {AMP_SETTINGS}.")
        if self.augment not in aug.PRESETS:
            raise ValueError(f"Unknown augmentation preset {self.augment!r}; "
                             f"choose one of {sorted(aug.PRESETS)}.")

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the model sees its inputs normalised with: evaluation must match."""
        if self.data_path == "device":
            return CIFAR10_MEAN, CIFAR10_STD
        return aug.PRESET_STATS[self.augment]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["device_augment"] = list(self.device_augment)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        """The recipe a checkpoint recorded; fields added since it was written take defaults."""
        known = {f.name for f in fields(cls)}
        d = {k: RENAMED.get(v, v) if k in ("name", "augment") else v
             for k, v in d.items() if k in known}
        if "device_augment" in d:
            d["device_augment"] = tuple(d["device_augment"])
        return cls(**d)


RECIPES: dict[str, Recipe] = {
    # The course assignment as it was: Adam 1e-3, batch 128, 60 epochs, its augmentation.
    "course": Recipe("course", epochs=60, batch_size=128, optimizer="adam", lr=1e-3,
                   augment="course", eval_batch_size=256),
    # The same with the course's augmentation bugs fixed (augment.py, "course-fixed"): what the
    # bugs cost, measured under the same optimiser and budget.
    "course-fixed": Recipe("course-fixed", epochs=60, batch_size=128, optimizer="adam", lr=1e-3,
                         augment="course-fixed", eval_batch_size=256),
    # A modern recipe: SGD + Nesterov, one-cycle lr, label smoothing, GPU-resident crop +
    # flip + cutout, flip test-time augmentation. Aimed at >= 94 % in <= 30 epochs on a GPU.
    "fast": Recipe("fast", epochs=20, batch_size=512, optimizer="sgd", lr=0.4,
                   weight_decay=5e-4, nesterov=True, schedule="onecycle", pct_start=0.25,
                   label_smoothing=0.1, augment="standard", data_path="device",
                   device_augment=("crop", "flip", "cutout"), cutout=12, tta_flip=True),
    # The fast recipe cut for a CPU: a CPU step is no faster per image at batch 512 than at
    # 128 (BENCHMARKS.md), so batch 128 buys four times the optimiser steps per minute; the
    # peak lr scales with the batch (0.4 * 128/512); a smaller cutout (8) for a schedule of
    # 12 epochs, which has less time to fit the harder images. 12 epochs fit about 90 minutes
    # of a 2-core CPU in bf16.
    "cpu": Recipe("cpu", epochs=12, batch_size=128, optimizer="sgd", lr=0.1,
                  weight_decay=5e-4, nesterov=True, schedule="onecycle", pct_start=0.25,
                  label_smoothing=0.1, augment="standard", data_path="device",
                  device_augment=("crop", "flip", "cutout"), cutout=8, tta_flip=True),
}
# A second one-cycle for a model that has already been trained (``train --init CKPT``): the
# cpu recipe at half its peak lr, so the restart reshuffles the weights less than a fresh
# start would, for 8 epochs (71 minutes of a 2-core EPYC in bf16). Twelve epochs from scratch
# left the cpu recipe at 89 % and still rising (runs/cpu-bf16-12ep); 8 more epochs on the fast
# run's 14 reached 90.2 % (runs/cpu-continue-8ep, the shipped model).
RECIPES["cpu-continue"] = replace(RECIPES["cpu"], name="cpu-continue", epochs=8, lr=0.05)


def get_recipe(name: str, **overrides) -> Recipe:
    """A recipe by name, with fields replaced by ``overrides`` (e.g. ``epochs=5``)."""
    if name in RENAMED:
        raise ValueError(f"The recipe {name!r} is now called {RENAMED[name]!r}.")
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose one of {sorted(RECIPES)}.")
    return replace(RECIPES[name], **overrides) if overrides else RECIPES[name]


def lr_factor(recipe: Recipe, step: int, total_steps: int) -> float:
    """The lr of training step ``step`` (0-based) as a fraction of ``recipe.lr``.

    One-cycle: a linear warm-up from ``1/div_factor`` to 1 over the first ``pct_start`` of
    the steps, then a linear decay to ``1/(div_factor * final_div_factor)`` at the last step.
    Written out (rather than ``torch.optim.lr_scheduler.OneCycleLR``) because that one
    divides by zero when the warm-up is a single step (FAST mode) and extrapolates to a
    negative lr when stepped once past its end; this one is defined for every step and never
    leaves the range.
    """
    if recipe.schedule == "constant":
        return 1.0
    start = 1.0 / recipe.div_factor
    end = start / recipe.final_div_factor
    warm = max(1, round(recipe.pct_start * total_steps))
    if step < warm:
        return start + (1.0 - start) * step / warm
    decay = max(1, total_steps - 1 - warm)
    return 1.0 + (end - 1.0) * min(1.0, (step - warm) / decay)


def lr_schedule(recipe: Recipe | str, steps_per_epoch: int,
                epochs: int | None = None) -> np.ndarray:
    """The lr each training step of ``recipe`` uses, as an array (for plotting)."""
    r = get_recipe(recipe) if isinstance(recipe, str) else recipe
    total = (r.epochs if epochs is None else epochs) * steps_per_epoch
    return np.array([r.lr * lr_factor(r, i, total) for i in range(total)])
