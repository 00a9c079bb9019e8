"""The one inference path: a model's outputs on a batch, in eval mode, and what follows from
them (accuracy, per-class accuracy, mistakes).

Why one module: the batched eval-mode forward with its mode restore, and "the probability of
a class", are needed by training (each epoch's test accuracy), the CLI (``export``), the
evaluation package (faithfulness, removal, sanity) and the chapters. Written once here, a rule
about them (eval mode and back, float32 softmax, batches on the model's device) cannot drift.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.cifar import Split
from .data.inputs import preprocess
from .runtime import amp_dtype, autocast, get_device

__all__ = ["eval_mode", "predict_logits", "logits_of", "softmax_of", "class_probability", "evaluate",
           "probabilities", "per_class_accuracy", "Mistakes", "misclassified"]


@contextmanager
def eval_mode(model: nn.Module):
    """``with eval_mode(model):`` runs the block in eval mode (BatchNorm's running statistics,
    no dropout) and restores the model's mode afterwards, even after an error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray | Split, *, device=None,
                   batch_size: int = 512, tta_flip: bool = False,
                   dtype: torch.dtype | None | str = "auto") -> np.ndarray:
    """Logits (N, num_classes) float32 for uint8 (N, 32, 32, 3) images (or a ``Split``).

    Normalises with the model's own statistics (its buffers). ``tta_flip`` averages the
    logits of each image and its mirror image. ``dtype`` is the autocast dtype (None:
    float32); ``"auto"`` asks :func:`s9lib.runtime.amp_dtype`.
    """
    if isinstance(images, Split):
        images = images.images
    dev = get_device(device)
    if dtype == "auto":
        dtype = amp_dtype(dev)
    outs = []
    with eval_mode(model):
        for i in range(0, len(images), batch_size):
            x = preprocess(images[i:i + batch_size], model, device=dev)
            with autocast(dev, dtype):
                logits = model(x).float()
                if tta_flip:
                    logits = (logits + model(x.flip(3)).float()) / 2
            outs.append(logits.cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 10), np.float32)


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """float32 logits (N, C) on the CPU for already normalised images ``x`` (N, 3, H, W),
    in eval mode and in batches on the model's device; the model's mode is restored.

    :func:`predict_logits` starts from uint8 pixels; the explanation metrics (``sanity``,
    ``removal``) hold normalised, edited images and come here.
    """
    device = next(model.parameters()).device
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, len(x), batch_size)])


def softmax_of(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """float32 class probabilities (N, C) on the CPU for normalised images ``x``."""
    return torch.softmax(logits_of(model, x, batch_size), dim=1)


def class_probability(model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
                      batch_size: int = 256) -> torch.Tensor:
    """p(``classes[i]`` | ``x[i]``) for normalised images ``x`` (N, 3, H, W), on the CPU:
    what every explanation metric (drop, deletion, insertion, ROAD) measures."""
    probs = softmax_of(model, x, batch_size)
    return probs.gather(1, torch.as_tensor(classes).cpu().long()[:, None])[:, 0]


def evaluate(model: nn.Module, split: Split, **kwargs) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) of ``model`` on ``split`` (keywords as :func:`predict_logits`)."""
    logits = predict_logits(model, split.images, **kwargs)
    labels = torch.from_numpy(split.labels)
    loss = F.cross_entropy(torch.from_numpy(logits), labels).item()
    return loss, float((logits.argmax(1) == split.labels).mean())


def probabilities(logits) -> np.ndarray:
    """Softmax of (N, C) logits (array or tensor) as float64, stable for huge logits."""
    z = logits.detach().cpu().numpy() if torch.is_tensor(logits) else np.asarray(logits)
    z = z.astype(np.float64)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def per_class_accuracy(labels: Sequence[int], preds: Sequence[int],
                       num_classes: int = 10) -> np.ndarray:
    """Accuracy of each class (NaN for a class with no examples)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    total = np.bincount(labels, minlength=num_classes).astype(float)
    hits = np.bincount(labels[labels == preds], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / total, math.nan)


@dataclass
class Mistakes:
    """Misclassified examples, most confident mistakes first."""

    indices: np.ndarray  # into the split
    true: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray  # softmax probability of the wrong prediction

    def __len__(self) -> int:
        return len(self.indices)


def misclassified(logits: np.ndarray, labels: Sequence[int]) -> Mistakes:
    """The examples whose arg-max prediction is wrong, sorted by confidence (highest first)."""
    probs, labels = probabilities(logits), np.asarray(labels)
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    conf = probs[wrong, pred[wrong]]
    order = np.argsort(-conf, kind="stable")
    idx = wrong[order]
    return Mistakes(idx, labels[idx], pred[idx], conf[order])
