"""The training loop: ``fit`` and the one ``train_step`` it repeats.

Why it looks like this: a reader should see the whole loop on one screen (``fit`` calls
``_train_epoch``, which calls ``train_step``), while every number that shapes a run lives in a
:class:`~s9lib.training.recipes.Recipe`. ``benchmarks/train_speed.py`` times the same ``train_step``.

A run writes ``checkpoint.pt`` (model, optimizer, scheduler, epoch, history, recipe) after
every epoch, atomically, and ``history.json`` beside it. ``fit(..., resume=True)`` continues
the same run from there and, on CPU, gives exactly the history of an uninterrupted run.

Under ``torchrun`` (see :mod:`s9lib.training.distributed`) the same ``fit`` trains with one process per
device: each rank steps through its slice of every global batch, gradients are averaged by
``DistributedDataParallel``, evaluation is sharded and summed, and rank 0 alone writes files.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import astuple
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import augment as aug
from . import distributed
from ..inference import predict_logits
from .batches import DeviceBatches, LoaderBatches
from ..checkpoints import CHECKPOINT, load_resumable, save_checkpoint, with_input_stats
from ..data.cifar import Cifar10, Split
from ..files import FolderLock, remove_stale_temps
from .history import HISTORY, EpochRecord, History
from .recipes import Recipe, get_recipe, lr_factor
from ..runtime import FAST_SIZES, amp_dtype, autocast, fast_mode, get_device

__all__ = ["fit", "train_step", "prepare_model", "make_optimizer", "make_scheduler",
           "train_batches"]


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to ``device`` in channels_last (2-3x faster convolutions on CPU and CUDA)."""
    return model.to(device, memory_format=torch.channels_last)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               opt: torch.optim.Optimizer, *, dtype: torch.dtype | None = None,
               label_smoothing: float = 0.0,
               scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on the batch ``(x, y)``: forward (under ``dtype`` autocast),
    loss, backward, optimizer step. Returns the (detached) loss and the logits.

    ``scaler`` is needed with fp16 only, whose small gradients underflow without loss
    scaling; bf16 has float32's exponent range and needs none.
    """
    with autocast(x.device, dtype):
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return loss.detach(), logits.detach()


def make_optimizer(model: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    """Adam, or SGD with weight decay on weights only (not on BatchNorm and biases)."""
    if r.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": r.weight_decay},
                            {"params": rest, "weight_decay": 0.0}],
                           lr=r.lr, momentum=r.momentum, nesterov=r.nesterov)


def make_scheduler(opt: torch.optim.Optimizer, recipe: Recipe, epochs: int,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step lr scheduler ``fit`` uses: :func:`s9lib.training.recipes.lr_factor` of each step."""
    total = epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(recipe, step, total))


def train_batches(split: Split, r: Recipe, device: torch.device, num_workers: int | None = None,
                  rank: int = 0, world_size: int = 1):
    """The recipe's batch path over ``split``: device-resident or the albumentations loader.

    ``r.batch_size`` is the *global* batch: with ``world_size`` processes each rank gets its
    ``tensor_split`` share (``batch_size / world_size`` images when it divides evenly), so the
    learning rate and schedule of the recipe hold unchanged.
    """
    shard = {"rank": rank, "world_size": world_size}
    if r.data_path == "device":
        return DeviceBatches(split, r.batch_size, device, shuffle=True, seed=r.seed,
                             augment=r.device_augment, cutout=r.cutout,
                             drop_last=len(split) >= r.drop_last_min_batches * r.batch_size,
                             **shard)
    return LoaderBatches(split, aug.build(r.augment), r.batch_size, device, shuffle=True,
                         seed=r.seed, num_workers=num_workers, drop_last=False, **shard)


def _train_epoch(model, batches, opt, sched, r: Recipe, dtype, scaler,
                 bar) -> tuple[float, int, int, float, float]:
    """One pass over this process's training batches.

    Returns (summed loss, correct predictions, images, seconds, last lr).
    """
    model.train()
    total_loss, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    first_bad = torch.zeros((), dtype=torch.long)  # step of the first non-finite loss, or 0
    for step, (x, y) in enumerate(batches, 1):
        lr = opt.param_groups[0]["lr"]
        loss, logits = train_step(model, x, y, opt, dtype=dtype,
                                  label_smoothing=r.label_smoothing, scaler=scaler)
        first_bad = _first_nonfinite(first_bad.to(loss.device), loss, step)
        if step % 10 == 0 or seen + len(y) == batches.num_images:  # syncs anyway (the bar)
            _stop_if_nonfinite(first_bad, lr)
        sched.step()
        total_loss = total_loss + loss * len(y)  # tensors on the device: no sync per step
        correct = correct + (logits.argmax(1) == y).sum()
        seen += len(y)
        bar.update(len(y))
        if step % 10 == 0 or seen == batches.num_images:
            rate = seen / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{float(total_loss) / seen:.3f}",
                            acc=f"{int(correct) / seen:.3f}", img_s=f"{rate:.0f}")
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    _stop_if_nonfinite(first_bad, lr)
    return float(total_loss), int(correct), seen, time.perf_counter() - start, lr


class Diverged(ValueError):
    """Training produced a non-finite loss; ``step`` (1-based, within the epoch) says where."""

    def __init__(self, step: int, lr: float) -> None:
        super().__init__(step, lr)
        self.step, self.lr = step, lr


def _first_nonfinite(first_bad: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
    """``first_bad``, or ``step`` if it is still 0 and ``loss`` is NaN or infinite; on the
    device, so the check costs no synchronisation per step."""
    return torch.where((first_bad == 0) & ~torch.isfinite(loss), step, first_bad)


def _stop_if_nonfinite(first_bad: torch.Tensor, lr: float) -> None:
    if int(first_bad):
        raise Diverged(int(first_bad), lr)


def fit(model: nn.Module, data: Cifar10, recipe: Recipe | str = "course", *,
        epochs: int | None = None, out: str | os.PathLike | None = None, resume: bool = False,
        device: torch.device | str | None = None, num_workers: int | None = None,
        progress: bool = True, on_epoch_end: Callable[[History], None] | None = None,
        info: dict | None = None) -> History:
    """Train ``model`` on ``data.train`` with ``recipe``, evaluating on ``data.test`` each epoch.

    The forward pass runs under the autocast dtype of ``runtime.amp_dtype`` (``recipe.amp``;
    with ``"auto"``, ``$S9LIB_AMP`` may override it), recorded in ``history.info["autocast"]``.
    ``epochs`` overrides the recipe's (FAST mode: ``FAST_SIZES.epochs``). With ``out``, a
    checkpoint and ``history.json`` are written there after every epoch; ``resume=True``
    continues from ``out/checkpoint.pt`` when it exists (same recipe and data required).
    While it runs, ``out/.lock`` keeps a second training out of the folder (a killed run's
    lock is taken over) and the temporary files of a killed checkpoint write are deleted.
    ``on_epoch_end`` is called with the history after each epoch (for live plots); ``info``
    adds entries to ``history.info`` (``train --init`` records the weights it started from). Sets
    the model's input statistics (its buffers) to the recipe's, so every inference path
    normalises as trained and the checkpoint records it.
    Started by ``torchrun``, it trains distributed (module docstring); ``model`` itself is
    never wrapped, so it is ready for CAMs afterwards.
    """
    r = get_recipe(recipe) if isinstance(recipe, str) else recipe
    epochs = epochs if epochs is not None else FAST_SIZES.epochs if fast_mode() else r.epochs
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    if resume and out is None:
        raise ValueError("resume=True needs out= (the folder holding checkpoint.pt).")
    job = distributed.from_environment(device)
    dev = job.device() if job else get_device(device)
    lock = _claim(Path(out), job, dev) if out is not None else None
    try:
        run = _Run(r, epochs, dev, job, prepare_model(model, dev), data, num_workers)
        history = _new_history(r, data, dev, epochs, run.dtype, job)
        history.info.update(info or {})
        if resume:
            history = _resume(Path(out), r, epochs, run, data) or history
        for epoch in range(len(history), epochs):
            history.epochs.append(run.epoch(epoch, progress))
            if out is not None and run.is_main:
                save_checkpoint(Path(out) / CHECKPOINT, model, optimizer=run.opt,
                                scheduler=run.sched, scaler=run.scaler, epoch=epoch + 1,
                                history=history, recipe=r)
                history.save(Path(out) / HISTORY)
            if on_epoch_end is not None and run.is_main:
                on_epoch_end(history)
        run.close()
    finally:
        if lock is not None:
            lock.release()
    return history


def _claim(out: Path, job, dev: torch.device) -> FolderLock | None:
    """Rank 0 (or the only process) locks ``out`` against a second training writing there at
    the same time and deletes the temporary files a killed run's checkpoint write left;
    under torchrun every rank learns whether it could, so all of them stop together."""
    lock, error = None, None
    if job is None or job.is_main:
        try:
            lock = FolderLock(out).acquire()
            for name in (CHECKPOINT, HISTORY):
                remove_stale_temps(out, name)
        except (ValueError, OSError) as exc:
            error = exc
    if job is not None and distributed.all_sum([float(error is not None)], dev)[0]:
        if error is None:  # another rank's (rank 0's) failure: it reports the reason
            raise ValueError(f"rank 0 could not take {out} for this run; see its error.")
    if error is not None:
        raise ValueError(f"{out}: {error}") if isinstance(error, OSError) else error
    return lock


class _Run:
    """What ``fit`` sets up once: the model to step (maybe DDP-wrapped and compiled), batches,
    optimizer, scheduler, autocast dtype and loss scaler; :meth:`epoch` runs one epoch."""

    def __init__(self, r: Recipe, epochs: int, dev: torch.device, job, model: nn.Module,
                 data: Cifar10, num_workers: int | None) -> None:
        self.r, self.epochs, self.dev, self.job, self.model, self.data = r, epochs, dev, job, model, data
        self.is_main = job is None or job.is_main
        model.set_normalization(*r.normalization)
        self.dtype = amp_dtype(dev, r.amp if r.amp != "auto" else None)  # $S9LIB_AMP: auto
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.dtype == torch.float16)
        step_model = model
        if job is not None:
            if r.sync_bn:
                distributed.sync_batchnorm(model, dev)
            step_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.step_model = torch.compile(step_model) if (r.compile and dev.type == "cuda") else step_model
        shard = {"rank": job.rank, "world_size": job.world_size} if job else {}
        self.batches = train_batches(data.train, r, dev, num_workers, **shard)
        self.opt = make_optimizer(model, r)
        self.sched = make_scheduler(self.opt, r, epochs, len(self.batches))

    def epoch(self, epoch: int, progress: bool) -> EpochRecord:
        """Train one epoch and evaluate; figures summed over all ranks."""
        self.batches.set_epoch(epoch)
        with tqdm(total=self.batches.num_images, desc=f"epoch {epoch + 1}/{self.epochs}",
                  unit="img", disable=not (progress and self.is_main), leave=True) as bar:
            try:
                loss, correct, seen, secs, lr = _train_epoch(
                    self.step_model, self.batches, self.opt, self.sched, self.r, self.dtype,
                    self.scaler, bar)
            except Diverged as exc:
                raise ValueError(
                    f"Training diverged: the loss is not finite at epoch {epoch + 1}, step "
                    f"{exc.step} (lr {exc.lr:.3g}); stopped, and nothing of epoch {epoch + 1} "
                    "was saved (a run folder keeps the checkpoint of its last finished epoch, "
                    "if any). Lower the recipe's lr.") from None
            test_loss, test_correct, test_seen = _evaluate(self.model, self.data.test, self.r,
                                                           self.dev, self.dtype, self.job)
            if self.job is not None:
                loss, correct, seen, test_loss, test_correct, test_seen = distributed.all_sum(
                    [loss, correct, seen, test_loss, test_correct, test_seen], self.dev)
            bar.set_postfix(loss=f"{loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                            test_acc=f"{test_correct / test_seen:.3f}",
                            img_s=f"{seen / secs:.0f}")
        record = EpochRecord(epoch + 1, loss / seen, correct / seen, test_loss / test_seen,
                             test_correct / test_seen, lr, secs, seen / secs)
        if not all(math.isfinite(v) for v in astuple(record)):
            raise ValueError(f"Training diverged: epoch {epoch + 1} ended with non-finite "
                             f"figures ({record}); nothing of it was saved. Lower the lr.")
        return record

    def close(self) -> None:
        """Leave the process group (after every rank is done with the epoch's files)."""
        if self.job is not None:
            distributed.finish()


def _evaluate(model: nn.Module, split: Split, r: Recipe, dev: torch.device,
              dtype: torch.dtype | None, job) -> tuple[float, int, int]:
    """(summed loss, correct, images) on this rank's share of ``split`` (all of it alone)."""
    idx = np.arange(len(split))
    if job is not None:
        idx = np.array_split(idx, job.world_size)[job.rank]
    logits = torch.from_numpy(predict_logits(model, split.images[idx], device=dev,
                                             tta_flip=r.tta_flip, batch_size=r.eval_batch_size,
                                             dtype=dtype))
    labels = torch.from_numpy(split.labels[idx])
    loss = F.cross_entropy(logits, labels, reduction="sum").item() if len(idx) else 0.0
    return loss, int((logits.argmax(1) == labels).sum()), len(idx)


def _new_history(r: Recipe, data: Cifar10, dev: torch.device, epochs: int,
                 dtype: torch.dtype | None, job) -> History:
    return History(recipe=r.to_dict(), device=_describe(dev),
                   info={"data": portable_path(data.source), "fast": data.is_fast,
                         "data_sha256": data.fingerprint(), "classes": list(data.classes),
                         "train_images": len(data.train),
                         "test_images": len(data.test), "epochs_planned": epochs,
                         "torch": str(torch.__version__),
                         "autocast": str(dtype or torch.float32).removeprefix("torch."),
                         "world_size": job.world_size if job else 1,
                         "backend": job.backend if job else None})


def portable_path(source: str) -> str:
    """``source`` as a history records it, for people: a local path relative to the working
    directory (``../shared/data/...`` from a checkout), so a committed history names no one's
    machine. ``--resume`` compares the data by content (``data_sha256``), not by this path."""
    if os.path.isabs(source) and os.path.exists(source):
        return os.path.relpath(source)
    return source


def _resume(out: Path, r: Recipe, epochs: int, run: _Run, data: Cifar10) -> History | None:
    """Restore model, optimizer, scheduler and scaler from ``out/checkpoint.pt`` and return
    its history; None when there is no checkpoint yet (a fresh run)."""
    if not (out / CHECKPOINT).exists():
        return None
    state = load_resumable(out / CHECKPOINT, len(data.classes))
    saved = state.get("recipe")
    if saved is None or Recipe.from_dict(saved) != r:  # fields added since: defaults
        raise ValueError(f"{out / CHECKPOINT} was trained with a different recipe; "
                         "use another --out folder or the same recipe to resume.")
    info = state["history"]["info"]
    planned = info.get("epochs_planned")
    if planned != epochs:
        raise ValueError(f"{out / CHECKPOINT} was planned for {planned} epochs, not {epochs}; "
                         "pass the same --epochs to resume.")
    _check_same_data(out / CHECKPOINT, info, data)
    # a checkpoint written before the model carried its input statistics: from its record
    run.model.load_state_dict(with_input_stats(state["model"], state.get("normalization")))
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    return History.from_dict(state["history"])


def _check_same_data(path: Path, info: dict, data: Cifar10) -> None:
    """Refuse to resume on other data than the checkpoint's: other images or labels (their
    SHA-256, wherever the data was loaded from), another class list, or other split sizes
    (FAST vs full). Histories from before the hash compare the source path instead."""
    classes = info.get("classes")
    if classes is not None and tuple(classes) != tuple(data.classes):
        raise ValueError(f"{path} was trained on the classes {', '.join(classes)}, not "
                         f"{', '.join(data.classes)}; resume with the same data.")
    sizes = (info.get("train_images"), info.get("test_images"))
    if None not in sizes and sizes != (len(data.train), len(data.test)):
        raise ValueError(f"{path} was trained on {sizes[0]} training and {sizes[1]} test "
                         f"images, this data has {len(data.train)} and {len(data.test)}; "
                         "resume with the same data and FAST setting.")
    described = f"{info.get('data')}{' (FAST subset)' if info.get('fast') else ''}"
    if "data_sha256" in info and info["data_sha256"] != data.fingerprint():
        raise ValueError(f"{path} was trained on other data ({described}) than {data.source}"
                         f"{' (FAST subset)' if data.is_fast else ''}: other images or labels; "
                         "pass the same --data (and FAST setting) to resume, or another --out.")
    if "data_sha256" not in info and info.get("data") is not None:
        _check_same_source(path, info["data"], data)


def _check_same_source(path: Path, saved: str, data: Cifar10) -> None:
    """Histories written before ``data_sha256``: their ``data`` is the source path relative
    to the working directory then, with the suffix " (FAST subset)" in FAST mode."""
    base, fast, _ = saved.partition(" (FAST subset)")
    if not base.startswith("torchvision:"):
        base = os.path.realpath(base)
    source = data.source if data.source.startswith("torchvision:") else os.path.realpath(data.source)
    if (base, bool(fast)) != (source, data.is_fast):
        raise ValueError(f"{path} was trained on {saved}, not {data.source}; pass the same "
                         "--data (and FAST setting) to resume, or another --out.")


def _describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    threads = torch.get_num_threads()
    return f"{dev.type} ({threads} thread{'s' if threads != 1 else ''})"
