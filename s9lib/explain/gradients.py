"""Gradient attributions at pixel level: vanilla gradient (saliency), SmoothGrad, Integrated
Gradients, Guided Backprop and Guided GradCAM, behind one interface.

Why here, beside the CAMs: the book's trust chapters ask which explanation can be believed,
and the field's answer (Adebayo et al. 2018) turns on methods that fail: Guided Backprop and
Guided GradCAM barely change when the model is randomised. Running them on the same model,
images and metrics as the CAMs needs them behind the same call: a method object holding the
model, used as a context manager (the model is in eval mode with frozen parameters inside, and
every hook lives only inside the call), called on normalised images with ``targets`` as the
CAMs take them (None: the predicted class), returning an :class:`Attribution` with the raw
per-pixel attribution and a map per image in [0, 1].

Each method is written to agree with Captum (tests/test_gradients.py, to 1e-5 of the largest
attribution) so that a reader can trust the numbers, while staying short enough to read:

* **Saliency** (Simonyan et al. 2014): ``dS_c/dx``, signed; Captum's ``Saliency(abs=False)``.
* **SmoothGrad** (Smilkov et al. 2017): the mean of ``|dS_c/dx|`` over ``samples`` copies of
  the image with Gaussian noise of standard deviation ``stdev`` (in normalised units) added;
  Captum's ``NoiseTunnel(Saliency)`` with ``nt_type="smoothgrad"`` draws the same noise from
  the same generator (``torch.normal``, image-major), so with one seed both agree exactly.
* **Integrated Gradients** (Sundararajan et al. 2017): ``(x - x0) * integral of dS_c/dx`` on
  the straight path from the baseline ``x0`` (0: the mean colour after normalisation), by
  Gauss-Legendre quadrature with ``steps`` points (Captum's default rule).
* **Guided Backprop** (Springenberg et al. 2015): the input gradient with every ReLU passing
  back only positive gradients where its input was positive.
* **Guided GradCAM** (Selvaraju et al. 2017): Guided Backprop times the layer's GradCAM
  (ReLU'd, unnormalised), upsampled to the image by nearest neighbour, as Captum does.

Steps and samples are batched: one forward and one backward pass per ``batch_size`` inputs,
not one per step. The map of every method is ``sum_c |attribution_c|`` per pixel, min-max
scaled per image (an all-zero map stays zero), so maps of all methods share one convention.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cam import (GradCAM, check_images, check_logits, frozen_eval, normalize_maps,
                  resolve_targets)

__all__ = ["Attribution", "GradientMethod", "Saliency", "SmoothGrad", "IntegratedGradients",
           "GuidedBackprop", "GuidedGradCAM", "GRADIENT_METHODS", "attribute",
           "gauss_legendre"]


@dataclass
class Attribution:
    """What one call returns; every tensor detached, on the model's device.

    ``raw``: (B, C, H, W) the attribution of each input value; ``maps``: (B, H, W) in [0, 1],
    ``sum_c |raw_c|`` min-max scaled per image; ``targets``: (B,) the class explained;
    ``logits``: (B, num_classes) on the unperturbed images.
    """

    raw: torch.Tensor
    maps: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor
    method: str = ""

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=1)

    def cpu(self) -> "Attribution":
        return Attribution(self.raw.cpu(), self.maps.cpu(), self.targets.cpu(),
                           self.logits.cpu(), self.method)


def gauss_legendre(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in (0, 1) and their weights (summing to 1) for the integral of IG."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (torch.tensor(0.5 * (1 + nodes), dtype=torch.float32),
            torch.tensor(0.5 * weights, dtype=torch.float32))


class GradientMethod:
    """Owns the model state, the targets and the batched input gradient; subclasses say how
    the input gradient becomes an attribution (:meth:`attribute`)."""

    name = "gradient"

    def __init__(self, model: nn.Module, batch_size: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.model, self.batch_size = model, batch_size
        self._state: ExitStack | None = None  # the frozen_eval block while active

    def __enter__(self) -> "GradientMethod":
        if self._state is not None:
            raise ValueError(f"This {type(self).__name__} is already active; use one `with` "
                             "block at a time.")
        self._state = ExitStack()
        self._state.enter_context(frozen_eval(self.model))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._state.close()
        self._state = None
        return False

    def __call__(self, images: torch.Tensor, targets=None) -> Attribution:
        """Attributions of normalised ``images`` (B, 3, H, W) for ``targets`` (as the CAMs)."""
        if self._state is None:
            with self:
                return self._compute(images, targets)
        return self._compute(images, targets)

    def _compute(self, images: torch.Tensor, targets) -> Attribution:
        check_images(images, self.model)
        if torch.is_inference_mode_enabled():
            raise ValueError(f"{type(self).__name__} needs gradients, which torch."
                             "inference_mode() switches off; call it outside that block.")
        param = next(self.model.parameters())
        x = images.detach().to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            logits = self.model(x)
        check_logits(logits)
        t = resolve_targets(targets, logits)
        with torch.enable_grad():
            raw = self.attribute(x, t).detach()
        return Attribution(raw, normalize_maps(raw.abs().sum(1)), t, logits.detach(), self.name)

    def attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) attribution of ``x`` for ``targets``; the subclass's one job."""
        raise NotImplementedError

    def input_gradient(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``dS_t/dx`` for every row of ``x``, ``batch_size`` rows per forward and backward
        (rows are independent: eval-mode BatchNorm)."""
        out = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size].detach().clone().requires_grad_(True)
            score = self.model(xb).gather(1, targets[i:i + self.batch_size, None]).sum()
            out.append(torch.autograd.grad(score, xb)[0])
        return torch.cat(out)


class Saliency(GradientMethod):
    """The vanilla gradient ``dS_c/dx`` (signed; the map takes its absolute value)."""

    name = "saliency"

    def attribute(self, x, targets):
        return self.input_gradient(x, targets)


class SmoothGrad(GradientMethod):
    """Mean ``|dS_c/dx|`` over ``samples`` noisy copies (noise sd ``stdev``, normalised units:
    0.6 is 15 % of the about 4-unit range of normalised CIFAR pixels, the paper's 10-20 %)."""

    name = "smoothgrad"

    def __init__(self, model: nn.Module, samples: int = 25, stdev: float = 0.6,
                 generator: torch.Generator | None = None, batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        if samples < 1 or stdev < 0:
            raise ValueError(f"samples must be >= 1 and stdev >= 0, got {samples}, {stdev}.")
        self.samples, self.stdev, self.generator = samples, stdev, generator

    def attribute(self, x, targets):
        n = self.samples
        std = torch.full((len(x) * n, *x.shape[1:]), float(self.stdev), device=x.device)
        noisy = x.repeat_interleave(n, dim=0) + torch.normal(0.0, std, generator=self.generator)
        grads = self.input_gradient(noisy, targets.repeat_interleave(n)).abs()
        return grads.view(len(x), n, *x.shape[1:]).mean(dim=1)


class IntegratedGradients(GradientMethod):
    """``(x - x0) * sum_k w_k dS_c/dx (x0 + a_k (x - x0))`` with Gauss-Legendre ``a_k, w_k``."""

    name = "integrated_gradients"

    def __init__(self, model: nn.Module, steps: int = 32, baseline: float = 0.0,
                 batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        self.alphas, self.weights = gauss_legendre(steps)
        self.baseline = baseline

    def attribute(self, x, targets):
        x0 = torch.full_like(x, float(self.baseline))
        alphas = self.alphas.to(x.device)[:, None, None, None, None]
        path = (x0 + alphas * (x - x0)).flatten(0, 1)  # step-major: (steps * B, C, H, W)
        grads = self.input_gradient(path, targets.repeat(len(self.alphas)))
        grads = grads.view(len(self.alphas), *x.shape)
        return (x - x0) * torch.einsum("k,kbchw->bchw", self.weights.to(x.device), grads)


class GuidedBackprop(GradientMethod):
    """The input gradient with every ``nn.ReLU`` passing back ``ReLU(its usual gradient)``."""

    name = "guided_backprop"

    @contextmanager
    def guided(self):
        """Hooks on every ReLU module for the duration of the block, removed after it."""
        def positive(module, grad_input, grad_output):
            return tuple(F.relu(g) if g is not None else None for g in grad_input)

        handles = [m.register_full_backward_hook(positive)
                   for m in self.model.modules() if isinstance(m, nn.ReLU)]
        if not handles:
            raise ValueError(f"{type(self.model).__name__} has no nn.ReLU modules to guide; "
                             "Guided Backprop needs its ReLUs as modules (not F.relu).")
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def attribute(self, x, targets):
        with self.guided():
            return self.input_gradient(x, targets)


class GuidedGradCAM(GuidedBackprop):
    """Guided Backprop times the (nearest-upsampled, unnormalised) GradCAM of ``layer``."""

    name = "guided_gradcam"

    def __init__(self, model: nn.Module, layer: str | nn.Module = "layer4",
                 batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        self.layer = layer

    def attribute(self, x, targets):
        cams = []  # GradCAM first, with ordinary gradients (no guided hooks yet)
        with GradCAM(self.model, self.layer) as cam:
            for i in range(0, len(x), self.batch_size):
                res = cam(x[i:i + self.batch_size], targets[i:i + self.batch_size])
                cams.append(next(iter(res.raw.values())))
        cam_up = F.interpolate(torch.cat(cams)[:, None], size=tuple(x.shape[-2:]), mode="nearest")
        return super().attribute(x, targets) * cam_up


#: Method name -> class, as ``explain.cam.METHODS`` is for the CAMs.
GRADIENT_METHODS: dict[str, type[GradientMethod]] = {
    cls.name: cls for cls in (Saliency, SmoothGrad, IntegratedGradients, GuidedBackprop,
                              GuidedGradCAM)}


def attribute(model: nn.Module, images: torch.Tensor, method: str = "saliency", targets=None,
              **options) -> Attribution:
    """One-shot attribution with ``method`` (a name of :data:`GRADIENT_METHODS`); ``options``
    go to its constructor (``samples``, ``stdev``, ``steps``, ``layer``, ...)."""
    if method not in GRADIENT_METHODS:
        raise ValueError(f"Unknown gradient method {method!r}; choose one of "
                         f"{sorted(GRADIENT_METHODS)}.")
    with GRADIENT_METHODS[method](model, **options) as m:
        return m(images, targets)
