"""Every file that holds a model: training checkpoints and the shipped weights.

Why one module: both kinds are read with the same ``torch.load`` call and turned into a model
by the same helper (architecture check, float32, normalisation, device), so a rule about
either (what torch may unpickle, what counts as "another architecture") is written once.

* A **training checkpoint** (``checkpoint.pt`` in a run folder, :func:`save_checkpoint`)
  holds model, optimizer, scheduler, epoch, history and recipe: everything ``--resume``
  needs. It is rewritten atomically after every epoch.
* A **weights file** (:func:`export_weights`) holds the fp16 state dict and a ``meta`` dict:
  the recipe, the device and time of the run, the normalisation the model expects, and
  measured accuracies. The shipped one lives inside the package (about 22 MB, half of fp32),
  so a ``pip install`` of s9lib (locally or in Colab) brings a trained model with no download:
  the CAM chapters need a model that has learned something, and neither CI nor a reader on
  a CPU can train one in minutes.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from .files import FileKind, atomic_write, check_destination, check_writable_file
from .data.inputs import CIFAR10_MEAN, CIFAR10_STD
from .models import INPUT_STATS, ResNet18
from .runtime import get_device

__all__ = ["CHECKPOINT", "WEIGHTS_DIR", "DEFAULT_WEIGHTS", "save_checkpoint", "checkpoint_file",
           "load_checkpoint", "load_model", "resnet18_from_state", "available", "pretrained",
           "weights_meta", "export_weights", "load", "weights_blob", "model_from_weights",
           "check_weights_dest", "with_input_stats", "CHECKPOINT_FILE", "WEIGHTS_FILE",
           "nonfinite_tensors", "read_exact", "measure_export", "export", "load_resumable"]

CHECKPOINT = "checkpoint.pt"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The file ``pretrained()`` loads by default: the best run shipped so far.
DEFAULT_WEIGHTS = "resnet18_cifar10.pt"


# --------------------------------------------------------------------------- reading


def _torch_load(path: Path) -> object:
    """``torch.load`` with weights only (no code runs), or one sentence saying why not."""
    if not zipfile.is_zipfile(path):  # what torch.save writes; torch's own error would
        # suggest weights_only=False, i.e. running the file's code, which is no advice here
        raise ValueError(f"{path} is not a readable s9lib checkpoint or weights file (not "
                         "a file written by torch.save).")
    try:
        # TorchVersion: early checkpoints stored torch.__version__ itself (a str subclass)
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable s9lib checkpoint or weights file "
                         f"({_load_failure(exc)}).") from exc


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load`` failed, in a few words; never torch's advice to pass
    ``weights_only=False``, which would run whatever code the file carries."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, pickle.UnpicklingError):
        what = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line),
                    "objects other than tensors")
        return (f"it holds Python objects s9lib does not load, since loading them could run "
                f"code: {what[:160]}; use a file made by s9lib")
    lines = [line for line in lines if "weights_only" not in line] or [type(exc).__name__]
    return lines[0][:200]


def _peek(path: Path) -> object:
    """What a torch file holds, its tensors memory-mapped rather than read; None when it is
    not a file torch can load with weights only."""
    if not zipfile.is_zipfile(path):
        return None
    for mmap in (True, False):  # files of torch's legacy format cannot be mapped
        try:
            with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:
            continue
    return None


def _is_checkpoint(blob: object) -> bool:
    return isinstance(blob, dict) and isinstance(blob.get("model"), dict)


def _is_weights(blob: object) -> bool:
    return isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict) and "meta" in blob


#: How s9lib recognises the files this module writes (``s9lib.files``: only a file of the
#: same kind is replaced): by their contents, a dict with a ``model`` state (checkpoint) or
#: a ``state_dict`` and ``meta`` (weights), loaded with weights only.
CHECKPOINT_FILE = FileKind("an s9lib training checkpoint", lambda p: _is_checkpoint(_peek(p)))
WEIGHTS_FILE = FileKind("an s9lib weights file", lambda p: _is_weights(_peek(p)))


def nonfinite_tensors(state: dict) -> list[str]:
    """The names of the floating-point tensors in ``state`` holding a NaN or an infinity."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]


def _tensors(names: list[str]) -> str:
    """'1 tensor, e.g. linear.weight' / '62 tensors, e.g. conv1.weight'."""
    return f"{len(names)} tensor{'s' if len(names) != 1 else ''}, e.g. {names[0]}"


def with_input_stats(state: dict, normalization: dict | None) -> dict:
    """``state`` with the model's input statistics, for files written before the model
    carried them as buffers: taken from the file's recorded ``normalization``, and for files
    older still (which recorded none, and were all trained on CIFAR-10 statistics) those."""
    if all(k in state for k in INPUT_STATS):
        return state
    mean, std = ((normalization["mean"], normalization["std"]) if normalization
                 else (CIFAR10_MEAN, CIFAR10_STD))
    return {**state, "input_mean": torch.tensor(mean, dtype=torch.float32),
            "input_std": torch.tensor(std, dtype=torch.float32)}


def resnet18_from_state(state: dict, path: str | os.PathLike = "the state dict") -> ResNet18:
    """A float32 ``ResNet18`` holding ``state``; refuses another architecture in one sentence.

    torch's own error lists every missing key (thousands of characters); this one says how
    many tensors are missing, unknown or of another shape, with an example of each.
    """
    head = state.get("linear.weight")
    model = ResNet18(num_classes=head.shape[0] if torch.is_tensor(head) and head.ndim == 2 else 10)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} instead of {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or extra or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} of ResNet18's {len(expected)} tensors missing "
                           f"(e.g. {', '.join(missing[:3])})")
        if extra:
            details.append(f"{len(extra)} unknown (e.g. {', '.join(extra[:3])})")
        if wrong:
            details.append(f"{len(wrong)} of another shape (e.g. {wrong[0]})")
        raise ValueError(f"{path} does not hold the CIFAR ResNet18 (another architecture?): "
                         + "; ".join(details) + ". Pass a checkpoint of s9lib.models.ResNet18.")
    bad = nonfinite_tensors(state)
    if bad:
        raise ValueError(f"{path} holds non-finite weights (NaN or inf in {_tensors(bad)}): "
                         "the run that made it diverged. Use an earlier checkpoint, or train "
                         "again with a lower lr.")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model


def _model(state_dict: dict, arch: str, normalization: dict | None, path: Path,
           device) -> ResNet18:
    """The model behind a checkpoint's or a weights file's state dict, ready to use:
    float32, eval mode, on ``device``, its input statistics from the file."""
    if arch != "ResNet18":
        raise ValueError(f"{path} holds a {arch}, not the CIFAR ResNet18 s9lib uses.")
    model = resnet18_from_state(with_input_stats(state_dict, normalization), path)
    return model.to(get_device(device)).eval()


# --------------------------------------------------------------------------- checkpoints


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the module


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, optimizer=None, scheduler=None,
                    scaler=None, epoch: int = 0, history=None, recipe=None) -> None:
    """Atomically save everything needed to resume (``history``: a ``History``, ``recipe``:
    a ``Recipe``) or to use the model."""
    net = _unwrap(model)
    state = {
        "format": 1,
        "arch": type(net).__name__,
        "num_classes": net.linear.out_features,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": epoch,
        "history": history.to_dict() if history is not None else None,
        "recipe": recipe.to_dict() if recipe is not None else None,
        "normalization": {"mean": list(net.normalization[0]), "std": list(net.normalization[1])},
    }
    bad = nonfinite_tensors(state["model"])
    if bad:  # the file there keeps the last finite state
        raise ValueError(f"{path} was not written: the model holds non-finite weights (NaN or "
                         f"inf in {_tensors(bad)}); training diverged.")
    atomic_write(path, lambda f: torch.save(state, f), kind=CHECKPOINT_FILE)


def checkpoint_file(path: str | os.PathLike,
                    alternative: str = "use s9lib.pretrained()") -> Path:
    """``path`` or, for a run folder, its ``checkpoint.pt``; a clear error when it is missing."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}; train one with "
                                f"`python -m s9lib train --out DIR` or {alternative}.")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict; a clear error when the file is missing or not a checkpoint."""
    path = checkpoint_file(path)
    state = _torch_load(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path} is not an s9lib training checkpoint (no 'model' entry).")
    return state


def load_model(path: str | os.PathLike, device: torch.device | str | None = None) -> ResNet18:
    """A ``ResNet18`` in eval mode with the weights of the checkpoint at ``path``."""
    state = load_checkpoint(path)
    return _model(state["model"], state.get("arch", "ResNet18"), state.get("normalization"),
                  checkpoint_file(path), device)


# --------------------------------------------------------------------------- shipped weights


def available() -> list[str]:
    """Names of the weight files shipped with this installation."""
    return sorted(p.name for p in WEIGHTS_DIR.glob("*.pt"))


def _weights_path(name: str | os.PathLike | None) -> Path:
    if name is None:
        name = os.environ.get("S9LIB_WEIGHTS") or DEFAULT_WEIGHTS
    p = Path(name)
    if not p.is_absolute() and not p.exists():
        p = WEIGHTS_DIR / p
    if not p.exists():
        raise FileNotFoundError(
            f"No weights at {p}. Shipped: {available() or 'none'}. Train a model with "
            "`python -m s9lib train --recipe fast --out runs/fast` and pass its checkpoint.")
    return p


def _read_weights(path: Path) -> dict:
    blob = _torch_load(path)
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict) \
            or "meta" not in blob:
        raise ValueError(f"{path} is not an s9lib weights file (made by export_weights).")
    return blob


def weights_meta(name: str | os.PathLike | None = None) -> dict:
    """The ``meta`` dict of a weights file (recipe, device, accuracies, provenance)."""
    return _read_weights(_weights_path(name))["meta"]


def pretrained(name: str | os.PathLike | None = None,
               device: torch.device | str | None = None) -> ResNet18:
    """The shipped ResNet18, in float32 and eval mode, on ``device`` (default: the best one).

    ``model.normalization`` holds the (mean, std) its inputs must be normalised with (its
    buffers) and ``model.meta`` where the weights came from.
    """
    path = _weights_path(name)
    return model_from_weights(_read_weights(path), path, device)


def load(checkpoint: str | os.PathLike | None = None,
         device: torch.device | str | None = None) -> ResNet18:
    """The model behind a ``--checkpoint`` argument, whatever it points at.

    None: the shipped weights (:func:`pretrained`); a run folder or its ``checkpoint.pt``
    (:func:`load_model`); a weights file (:func:`export_weights`). Anything else, including
    a checkpoint of another architecture, is refused with one clear sentence.
    """
    if checkpoint is None:
        if not available() and not os.environ.get("S9LIB_WEIGHTS"):
            raise FileNotFoundError(
                "No shipped weights in this installation of s9lib (s9lib/weights/ is empty); "
                "pass --checkpoint runs/DIR/checkpoint.pt from `python -m s9lib train --out "
                "runs/DIR`, or a weights file.")
        return pretrained(device=device)
    path = checkpoint_file(checkpoint, alternative="pass a weights file")
    blob = _torch_load(path)
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict) and "meta" in blob:
        return pretrained(path, device=device)
    if isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        return load_model(path, device)
    raise ValueError(f"{path} is neither an s9lib training checkpoint (written by "
                     "s9lib.checkpoints.save_checkpoint) nor an s9lib weights file (written by "
                     "s9lib.checkpoints.export_weights).")


def weights_blob(checkpoint: str | os.PathLike, **meta) -> dict:
    """What :func:`export_weights` writes, in memory: ``{"state_dict": fp16, "meta": ...}``.

    Floating-point tensors are halved, except the input statistics; integer buffers
    (BatchNorm's batch counter) are kept.
    The architecture is checked here, before anything is written.
    """
    state = load_checkpoint(checkpoint)
    if state.get("arch", "ResNet18") != "ResNet18":
        raise ValueError(f"{checkpoint} holds a {state['arch']}, not the CIFAR ResNet18.")
    model_state = with_input_stats(state["model"], state.get("normalization"))
    resnet18_from_state(model_state, checkpoint_file(checkpoint))  # refuses other shapes
    # fp16 halves the file; the input statistics stay float32 (fp16 would round 0.2470 to
    # 0.24707 and shift every input a little)
    sd = {k: (v.half() if v.is_floating_point() and k not in INPUT_STATS else v)
          for k, v in model_state.items()}
    history = state.get("history") or {}
    info = {
        "num_classes": state.get("num_classes", 10),
        "arch": state.get("arch", "ResNet18"),
        "normalization": state.get("normalization"),
        "recipe": state.get("recipe"),
        "epochs": state.get("epoch"),
        "device": history.get("device"),
        "train_seconds": round(sum(e["seconds"] for e in history.get("epochs", [])), 1),
        "test_acc_checkpoint": (history["epochs"][-1]["test_acc"]
                                if history.get("epochs") else None),
    }
    if (history.get("info") or {}).get("init"):  # a second cycle (train --init): its start
        info["init"] = history["info"]["init"]
    info.update(meta)
    return {"state_dict": sd, "meta": info}


def model_from_weights(blob: dict, where: str | os.PathLike = "the weights",
                       device: torch.device | str | None = None) -> ResNet18:
    """The model a weights file holding ``blob`` would load as (see :func:`pretrained`)."""
    meta = blob["meta"]
    model = _model(blob["state_dict"], meta.get("arch", "ResNet18"), meta.get("normalization"),
                   Path(where), device)
    model.meta = meta
    return model


def check_weights_dest(checkpoint: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Refuse a ``dest`` that export must not replace; return it as a ``Path``.

    Why: an export overwrites the shipped weights by default, and ``export CKPT CKPT`` once
    turned a resumable checkpoint into fp16 weights. Only a missing file or an existing
    s9lib weights file may be (re)written, never the checkpoint itself or a folder.
    """
    dest, source = Path(dest), checkpoint_file(checkpoint)
    if dest.exists() and dest.resolve() == source.resolve():
        raise ValueError(f"The destination {dest} is the checkpoint being exported; pass "
                         "another file name (e.g. s9lib/weights/resnet18_cifar10.pt).")
    check_writable_file(dest, "the weights file")
    if dest.is_file() and CHECKPOINT_FILE.recognise(dest):
        raise ValueError(f"{dest} is a training checkpoint; export must not replace it "
                         "(it could no longer be resumed). Pass another file name.")
    return check_destination(dest, WEIGHTS_FILE)


def export_weights(checkpoint: str | os.PathLike, dest: str | os.PathLike, **meta) -> Path:
    """Write the model of ``checkpoint`` as an fp16 weights file with ``meta`` added.

    ``dest`` is checked first (:func:`check_weights_dest`) and written atomically, last.
    """
    dest = check_weights_dest(checkpoint, dest)
    blob = weights_blob(checkpoint, **meta)
    return atomic_write(dest, lambda f: torch.save(blob, f), kind=WEIGHTS_FILE)


# --------------------------------------------------------------------------- export and resume


def read_exact(path: str | os.PathLike) -> tuple:
    """(images, labels) of an ``--exact`` .npz, or one sentence saying what is wrong with it."""
    import numpy as np

    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as exc:  # missing, a folder, not an .npz
        why = getattr(exc, "strerror", None) or "numpy cannot read it as an .npz archive"
        raise ValueError(f"--exact {path} is not a readable .npz file ({why}); pass one with "
                         "images and labels arrays.") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"--exact {path} is a single .npy array; pass an .npz with images "
                         "and labels arrays.")
    with npz:
        missing = [k for k in ("images", "labels") if k not in npz.files]
        if missing:
            raise ValueError(f"--exact {path} has no {' or '.join(missing)} array (it has "
                             f"{', '.join(npz.files) or 'none'}); pass an .npz with images "
                             "(N, 32, 32, 3) uint8 and labels (N,).")
        images, labels = npz["images"], npz["labels"]
    if images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8 or len(labels) != len(images):
        raise ValueError(f"--exact {path}: images {images.shape} {images.dtype} and labels "
                         f"{labels.shape}; expected (N, 32, 32, 3) uint8 and (N,).")
    return images, labels


def measure_export(model: ResNet18, data: str | os.PathLike | None = None,
                   exact: tuple | None = None) -> dict:
    """The accuracies an export records: CIFAR-10's test split (all of it, also in FAST
    mode) and, optionally, ``exact`` = (images, labels); in float32 on the CPU, so the
    same on every machine, with flip test-time augmentation when the run evaluated so."""
    from .data.cifar import load_cifar10
    from .inference import predict_logits

    tta = bool((model.meta.get("recipe") or {}).get("tta_flip"))

    def accuracy(images, labels) -> float:
        logits = predict_logits(model, images, device=torch.device("cpu"), tta_flip=tta,
                                dtype=None)
        return round(float((logits.argmax(1) == labels).mean()), 4)

    test = load_cifar10(data, fast=False).test
    measured = {"test_acc": accuracy(test.images, test.labels), "test_images": len(test),
                "tta_flip": tta, "eval_dtype": "float32"}
    if exact is not None:
        measured["exact_test_acc"] = accuracy(*exact)
        measured["exact_test_images"] = int(len(exact[1]))
    return measured


def export(checkpoint: str | os.PathLike, dest: str | os.PathLike, *,
           data: str | os.PathLike | None = None, exact: str | os.PathLike | None = None,
           note: str = "") -> dict:
    """What ``python -m s9lib export`` does: the model of ``checkpoint`` as an fp16 weights
    file at ``dest`` with its measured accuracies (:func:`measure_export`; ``exact``: an
    .npz read by :func:`read_exact`) and ``note``; returns the ``meta`` written.

    Everything is read, checked and measured first (a model with non-finite weights is
    refused); ``dest`` is written last, once, atomically: a failing export leaves the old
    file as it was.
    """
    dest = check_weights_dest(checkpoint, dest)
    blob = weights_blob(checkpoint, note=note)
    model = model_from_weights(blob, checkpoint, device="cpu")  # fp16 values, as shipped
    images = read_exact(exact) if exact is not None else None
    blob["meta"].update(measure_export(model, data, images))
    atomic_write(dest, lambda f: torch.save(blob, f), kind=WEIGHTS_FILE)
    return blob["meta"]


def load_resumable(path: str | os.PathLike, num_classes: int) -> dict:
    """The checkpoint at ``path`` if training can continue from it, its model state with the
    input statistics; else one sentence why not: another architecture or number of classes,
    non-finite weights or optimizer state, or no training state at all (a model saved by
    ``save_checkpoint(path, model)`` alone)."""
    state, path = load_checkpoint(path), checkpoint_file(path)
    model = _model(state["model"], state.get("arch", "ResNet18"), state.get("normalization"),
                   path, "cpu")  # refuses other architectures and non-finite weights
    if model.linear.out_features != num_classes:
        raise ValueError(f"{path} was trained for {model.linear.out_features} classes, this "
                         f"data has {num_classes}; resume with the same data, or start a "
                         "fresh run in another --out.")
    missing = [k for k in ("optimizer", "scheduler", "history", "recipe") if not state.get(k)]
    if missing:
        raise ValueError(f"{path} holds no {', '.join(missing)} (a model saved without its "
                         "training state, e.g. by save_checkpoint(path, model)), so it cannot "
                         "be resumed; use it with --checkpoint, or start a fresh run in "
                         "another --out.")
    moments = {f"optimizer state {i}.{k}": v for i, group in
               state["optimizer"].get("state", {}).items() for k, v in group.items()}
    bad = nonfinite_tensors(moments)
    if bad:
        raise ValueError(f"{path} holds a non-finite {bad[0]}: the run diverged; resume "
                         "from an earlier checkpoint or start afresh with a lower lr.")
    return {**state, "model": model.state_dict()}
