"""Shipped weights and model loading: ``s9lib.pretrained()`` returns a trained ResNet18.

Why ship them: the CAM chapters need a model that has learned something, and neither CI nor
a reader on a CPU can train one in minutes. The weights are stored in fp16 (about 22 MB, half
of fp32; the accuracy change is measured and recorded with them) inside the package, so a
``pip install`` of s9lib (locally or in Colab) brings them along with no download.

Each weights file holds the fp16 state dict and a ``meta`` dict: the recipe, the device and
time of the run, the normalisation the model expects, and measured accuracies.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .augment import CIFAR10_MEAN, CIFAR10_STD
from .models import ResNet18
from .runtime import get_device
from .train import (_atomic_write, checkpoint_file, load_checkpoint, load_model,
                    resnet18_from_state)

__all__ = ["WEIGHTS_DIR", "DEFAULT_WEIGHTS", "available", "pretrained", "export_weights",
           "weights_meta", "load"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The file ``pretrained()`` loads by default: the best run shipped so far.
DEFAULT_WEIGHTS = "resnet18_cifar10.pt"


def available() -> list[str]:
    """Names of the weight files shipped with this installation."""
    return sorted(p.name for p in WEIGHTS_DIR.glob("*.pt"))


def _path(name: str | os.PathLike | None) -> Path:
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


def weights_meta(name: str | os.PathLike | None = None) -> dict:
    """The ``meta`` dict of a weights file (recipe, device, accuracies, provenance)."""
    return torch.load(_path(name), map_location="cpu", weights_only=True)["meta"]


def pretrained(name: str | os.PathLike | None = None,
               device: torch.device | str | None = None) -> ResNet18:
    """The shipped ResNet18, in float32 and eval mode, on ``device`` (default: the best one).

    ``model.normalization`` holds the (mean, std) its inputs must be normalised with and
    ``model.meta`` where the weights came from.
    """
    path = _path(name)
    blob = _read(path)
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise ValueError(f"{path} is not an s9lib weights file (made by export_weights).")
    arch = blob.get("meta", {}).get("arch", "ResNet18")
    if arch != "ResNet18":
        raise ValueError(f"{path} holds a {arch}, not the CIFAR ResNet18 s9lib uses.")
    model = resnet18_from_state(blob["state_dict"], path)
    norm = blob["meta"].get("normalization") or {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
    model.normalization = (tuple(norm["mean"]), tuple(norm["std"]))
    model.meta = blob["meta"]
    dev = device if isinstance(device, torch.device) else get_device(device)
    return model.to(dev).eval()


def _read(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path} is not a file torch can read ({reason}); pass the "
                         "checkpoint.pt of an s9lib run or an s9lib weights file.") from exc


def load(checkpoint: str | os.PathLike | None = None,
         device: torch.device | str | None = None) -> ResNet18:
    """The model behind a ``--checkpoint`` argument, whatever it points at.

    None: the shipped weights (:func:`pretrained`); a run folder or its ``checkpoint.pt``
    (:func:`s9lib.train.load_model`); a weights file (:func:`export_weights`). Anything else,
    including a checkpoint of another architecture, is refused with one clear sentence.
    """
    if checkpoint is None:
        if not available() and not os.environ.get("S9LIB_WEIGHTS"):
            raise FileNotFoundError(
                "No shipped weights in this installation of s9lib (s9lib/weights/ is empty); "
                "pass --checkpoint runs/DIR/checkpoint.pt from `python -m s9lib train --out "
                "runs/DIR`, or a weights file.")
        return pretrained(device=device)
    path = checkpoint_file(checkpoint, alternative="pass a weights file")
    blob = _read(path)
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict) and "meta" in blob:
        return pretrained(path, device=device)
    if isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        return load_model(path, device)
    raise ValueError(f"{path} is neither an s9lib training checkpoint (written by "
                     "s9lib.train.save_checkpoint) nor an s9lib weights file (written by "
                     "s9lib.checkpoints.export_weights).")


def export_weights(checkpoint: str | os.PathLike, dest: str | os.PathLike, **meta) -> Path:
    """Write the model of ``checkpoint`` as an fp16 weights file with ``meta`` added.

    Floating-point tensors are halved; integer buffers (BatchNorm's batch counter) are kept.
    """
    state = load_checkpoint(checkpoint)
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()}
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
    info.update(meta)
    dest = Path(dest)
    _atomic_write(dest, lambda f: torch.save({"state_dict": sd, "meta": info}, f))
    return dest
