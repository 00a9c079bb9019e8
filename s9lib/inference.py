"""What a trained model does on a split: logits, accuracy, per-class accuracy, its mistakes.

Why apart from the training loop: the book's analysis sections (chapter 3's per-class bars and
mistakes, the explorer's picks, ``export``'s measured accuracies) need these for any model,
including shipped weights that were never trained in this process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.cifar import Split
from .data.inputs import normalization_of, preprocess
from .runtime import amp_dtype, autocast, get_device

__all__ = ["predict", "logits_of", "evaluate", "probabilities", "per_class_accuracy", "Mistakes",
           "misclassified"]


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray | Split, *, device=None, batch_size: int = 512,
            tta_flip: bool = False, mean=None, std=None,
            dtype: torch.dtype | None | str = "auto") -> np.ndarray:
    """Logits (N, num_classes) float32 for uint8 (N, 32, 32, 3) images (or a ``Split``).

    Normalises with ``mean``/``std``, by default the model's own (``model.normalization``,
    set by ``fit``, ``s9lib.pretrained()`` and ``load_model``). ``tta_flip`` averages the
    logits of each image and its mirror image. ``dtype`` is the autocast dtype (None:
    float32); ``"auto"`` asks :func:`s9lib.runtime.amp_dtype`.
    """
    if isinstance(images, Split):
        images = images.images
    dev = get_device(device)
    m_default, s_default = normalization_of(model)
    mean, std = mean or m_default, std or s_default
    if dtype == "auto":
        dtype = amp_dtype(dev)
    was_training = model.training
    model.eval()
    outs = []
    try:
        for i in range(0, len(images), batch_size):
            x = preprocess(images[i:i + batch_size], mean, std, device=dev)
            with autocast(dev, dtype):
                logits = model(x).float()
                if tta_flip:
                    logits = (logits + model(x.flip(3)).float()) / 2
            outs.append(logits.cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy() if outs else np.zeros((0, 10), np.float32)


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """float32 logits (N, C) on the CPU for already normalised images ``x`` (N, 3, H, W),
    in eval mode and in batches on the model's device; the model's mode is restored.

    :func:`predict` starts from uint8 pixels; the explanation metrics (``sanity``,
    ``removal``) hold normalised, edited images and come here.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split: Split, **kwargs) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) of ``model`` on ``split`` (keywords as :func:`predict`)."""
    logits = predict(model, split.images, **kwargs)
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
