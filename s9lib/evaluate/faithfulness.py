"""Are the maps faithful? Average Drop % and Increase in Confidence % (Chattopadhay et al. 2018).

For an image ``I`` with predicted class ``c`` and a map ``L`` in [0, 1] (upsampled to the image
size), the explanation image is ``E = I * L``: the image with everything the map does not point
at dimmed towards black. With ``Y_c`` the softmax probability of ``c`` on ``I`` and ``O_c`` on
``E``:

* **Average Drop %** = mean over images of ``max(0, Y_c - O_c) / Y_c * 100`` (lower is better:
  the map keeps what the model needed);
* **Increase in Confidence %** = % of images with ``O_c > Y_c`` (higher is better).

Masking is done in **pixel space**: the uint8 image is scaled to [0, 1], multiplied by the map,
and only then normalised with the model's mean/std. That is the paper's ``E = I * L``, and it
makes ``L = 0`` mean "black pixel". Multiplying the *normalised* tensor instead would make
``L = 0`` mean "the data set's mean colour" (normalised value 0), a different, softer baseline
that gives different numbers; papers and libraries mix the two up, so we say which one this is.

Baselines: an all-ones map gives ``E = I`` exactly, so drop 0 and increase 0 (a sanity check
the tests run). The ``"random"`` method is seeded uniform noise on the layer's own grid (4x4
for ``layer4`` at 32x32 input), upsampled bilinearly and min-max scaled exactly like a CAM: it
has the same blob size and value range as the CAMs it is compared with, so any gap between them
is information, not smoothness or contrast. Pixel-level white noise would instead destroy
texture everywhere and be an unfairly bad baseline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..explain.cam import METHODS, explain, normalize_maps, resolve_layers
from ..data.inputs import normalization_of, standardize, to_unit
from ..inference import eval_mode, softmax_of

__all__ = ["MethodScore", "FaithfulnessReport", "drop_and_increase", "random_maps",
           "faithfulness", "format_report", "FAITHFULNESS_METHODS"]

FAITHFULNESS_METHODS = ("gradcam", "gradcam++", "random")

#: A custom method: (model, normalised images (B,3,H,W), layer, classes (B,)) -> maps (B,H,W)
#: in [0, 1] at the image size.
MapFn = Callable[[nn.Module, torch.Tensor, str, torch.Tensor], torch.Tensor]


@dataclass
class MethodScore:
    """One row of the table, with the per-image values behind the two means."""

    method: str
    average_drop: float  # %, lower is better
    increase_in_confidence: float  # %, higher is better
    drop_per_image: list[float] = field(default_factory=list, repr=False)  # %, per image


@dataclass
class FaithfulnessReport:
    """Scores per method for ``n`` images at ``layer``; ``accuracy`` when labels were given."""

    layer: str
    n: int
    seed: int
    rows: list[MethodScore]
    accuracy: float | None = None
    masking: str = "pixel space: E = (image/255) * map, then normalised"

    def __getitem__(self, method: str) -> MethodScore:
        for row in self.rows:
            if row.method == method:
                return row
        raise KeyError(f"No method {method!r} in this report; have {[r.method for r in self.rows]}.")

    def to_dict(self, per_image: bool = False) -> dict:
        d = asdict(self)
        if not per_image:
            for row in d["rows"]:
                row.pop("drop_per_image")
        return d


# --------------------------------------------------------------------------- the metric


def _class_probabilities(model: nn.Module, x01: torch.Tensor, mean, std) -> torch.Tensor:
    """The model's softmax probabilities for pixels ``x01`` (B, 3, H, W) in [0, 1], on
    ``x01``'s device (the one inference path: :func:`s9lib.inference.softmax_of`)."""
    return softmax_of(model, standardize(x01, mean, std), batch_size=len(x01)).to(x01.device)


def drop_and_increase(model: nn.Module, x01: torch.Tensor, maps: torch.Tensor, mean, std,
                      targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: (drop %, increased?) for images ``x01`` (B,3,H,W in [0,1]) and ``maps``.

    ``maps`` (B, H, W) in [0, 1] multiply the pixels (pixel space, see the module docstring).
    ``targets`` default to the predicted class on the unmasked images. The model must already
    be in eval mode on the images' device.
    """
    p_orig = _class_probabilities(model, x01, mean, std)
    c = p_orig.argmax(1) if targets is None else targets
    return _drop_and_increase(model, x01, maps, c, p_orig.gather(1, c[:, None])[:, 0], mean, std)


def _drop_and_increase(model, x01, maps, c, y, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`drop_and_increase`, given the class ``c`` and its probability ``y`` on x01."""
    if maps.shape != (x01.shape[0], *x01.shape[2:]):
        raise ValueError(f"maps must be (B, H, W) = {(x01.shape[0], *x01.shape[2:])}, "
                         f"got {tuple(maps.shape)}; upsample them to the image size first.")
    o = _class_probabilities(model, x01 * maps[:, None].to(x01), mean, std).gather(1, c[:, None])[:, 0]
    drop = (y - o).clamp(min=0) / y * 100
    return drop, o > y


def random_maps(batch: int, grid: tuple[int, int], size: tuple[int, int],
                generator: torch.Generator) -> torch.Tensor:
    """Uniform noise on ``grid`` (the layer's h x w), upsampled like a CAM, scaled to [0, 1]."""
    noise = torch.rand(batch, 1, *grid, generator=generator)
    up = F.interpolate(noise, size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalize_maps(up)


def _feature_grid(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """The (h, w) of ``layer``'s output for input ``x`` (one image, one no-grad forward)."""
    shape = {}

    def record(module, inputs, output) -> None:  # returns None: a hook's return value
        shape["hw"] = tuple(output.shape[-2:])    # would replace the layer's output

    handle = layer.register_forward_hook(record)
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        handle.remove()
    return shape["hw"]


def faithfulness(model: nn.Module, images_uint8, labels=None, layer: str | nn.Module = "layer4",
                 methods: Sequence[str | tuple[str, MapFn]] = FAITHFULNESS_METHODS,
                 n: int | None = 500, seed: int = 0,
                 batch_size: int = 100) -> FaithfulnessReport:
    """Average Drop % and Increase in Confidence % of each method on the first ``n`` images.

    ``images_uint8``: (N, H, W, 3) uint8 pixels (pass a shuffled or stratified set, e.g.
    ``data.test.subset(50)``: the first ``n`` are used). ``labels``: optional, only to report
    the model's accuracy on those images (the explained class is always the prediction, as in
    the paper). ``methods``: names from ``"gradcam"``, ``"gradcam++"``, ``"random"``, or
    ``(name, fn)`` pairs with ``fn(model, normalised_images, layer, classes) -> maps``.
    Images are normalised with the model's own statistics (its buffers).
    ``seed`` drives the random baseline only; everything else is deterministic.
    """
    mean, std = normalization_of(model)
    (layer, module), = resolve_layers(model, layer).items()  # a bad name fails before any work
    named = [_method(m) for m in methods]
    x_all = to_unit(images_uint8 if n is None else images_uint8[:n])
    if len(x_all) == 0:
        raise ValueError("No images to score; pass at least one image (and n >= 1).")
    with eval_mode(model):
        preds, drops, ups = _score(model, x_all, layer, module, named, mean, std, seed,
                                   batch_size)
    accuracy = None
    if labels is not None:
        labels = torch.as_tensor(np.asarray(labels)[:len(x_all)])
        accuracy = float((preds == labels).float().mean())
    rows = [MethodScore(name, float(drops[name].mean()), float(ups[name].float().mean() * 100),
                        drops[name].tolist()) for name, _ in named]
    return FaithfulnessReport(layer, len(x_all), seed, rows, accuracy)


def _score(model, x_all, layer, module, named, mean, std, seed, batch_size):
    """Per image: the predicted class, and each method's drop % and increase (concatenated)."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    grid = _feature_grid(model, module, standardize(x_all[:1].to(device), mean, std))
    preds, drops, ups = [], {name: [] for name, _ in named}, {name: [] for name, _ in named}
    for i in range(0, len(x_all), batch_size):
        x01 = x_all[i:i + batch_size].to(device)
        p_orig = _class_probabilities(model, x01, mean, std)  # shared by every method
        c = p_orig.argmax(1)
        y = p_orig.gather(1, c[:, None])[:, 0]
        preds.append(c.cpu())
        for name, fn in named:
            if fn is None:  # the random baseline
                maps = random_maps(len(x01), grid, tuple(x01.shape[-2:]), gen).to(device)
            else:
                maps = fn(model, standardize(x01, mean, std), layer, c)
            drop, up = _drop_and_increase(model, x01, maps, c, y, mean, std)
            drops[name].append(drop.cpu())
            ups[name].append(up.cpu())
    return (torch.cat(preds), {k: torch.cat(v) for k, v in drops.items()},
            {k: torch.cat(v) for k, v in ups.items()})


def _method(m) -> tuple[str, MapFn | None]:
    if isinstance(m, tuple):
        return m
    if m == "random":
        return m, None
    if m in METHODS:
        return m, lambda model, x, layer, c, m=m: explain(model, x, [layer], m, c).maps[layer]
    raise ValueError(f"Unknown method {m!r}; choose from {sorted(METHODS) + ['random']} "
                     "or pass a (name, fn) pair.")


def format_report(report: FaithfulnessReport) -> str:
    """The report as a small text table (what the CLI prints and the book shows)."""
    head = f"Faithfulness at {report.layer}, {report.n} images"
    if report.accuracy is not None:
        head += f" (model accuracy on them: {report.accuracy * 100:.1f}%)"
    lines = [head, f"masking: {report.masking}; random baseline seed {report.seed}", "",
             f"{'method':<12} {'Average Drop % (lower better)':>30} "
             f"{'Increase in Confidence % (higher better)':>42}"]
    for row in report.rows:
        lines.append(f"{row.method:<12} {row.average_drop:>30.2f} "
                     f"{row.increase_in_confidence:>42.2f}")
    return "\n".join(lines)
