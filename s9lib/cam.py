"""GradCAM and GradCAM++: one base class, the two methods differ only in their channel weights.

A class activation map for class ``c`` at layer ``l`` is ``ReLU(sum_k w_k A_k)``: the layer's
``K`` feature maps ``A_k`` (``h x w`` each), weighted by how much class ``c``'s score ``y_c``
(the logit, not the softmax probability) depends on them. The methods differ only in ``w_k``:

* GradCAM (Selvaraju et al. 2017): ``w_k = mean_ij dy_c/dA_k[i,j]``.
* GradCAM++ (Chattopadhay et al. 2018, Eq. 19), with ``g = dy_c/dA_k``::

      alpha_ij = g_ij^2 / (2 g_ij^2 + sum_ab(A_k[a,b]) * g_ij^3)
      w_k      = sum_ij alpha_ij * ReLU(g_ij)

  The paper derives Eq. 19 for ``Y_c = exp(y_c)``; the exponential cancels out of alpha, so we
  use the gradient of the score itself and there is no ``exp`` anywhere: logits of 1e5 cannot
  overflow (``exp(89)`` already overflows float32).

Design rules (chapter 4 compares them with the seed notebook and other libraries):

* Hooks exist only inside a ``with`` block (or inside one call when used without ``with``) and
  are removed on exit *and* on exceptions; the model's train/eval mode and every parameter's
  ``requires_grad`` are restored. (The seed registered a hook per call and never removed it.)
* One forward and one backward pass serve every layer asked for, and the backward stops at the
  earliest hooked layer.
* The seed's GradCAM++ denominator ``2 g^2 + sum_ab(A_ab * g_ab^3)`` is kept as
  :func:`gradcampp_seed_bug_weights`, clearly named, so the book can show what it changes.

How the gradients are taken: a forward hook keeps each layer's output tensor (still attached
to the graph) and, after the forward pass, ``torch.autograd.grad(y_c, outputs)`` returns
``dy/dA`` for every layer in one backward pass. That is exactly the tensor a tensor hook
(``output.register_hook``) would receive, with no hook in the backward pass at all, results
keyed by layer name rather than by the order hooks fire, and autograd runs only the part of the
graph between the logits and the earliest hooked layer. ``register_full_backward_hook`` is the
wrong tool: it wraps the module's inputs and outputs in a ``BackwardHookFunction`` (an in-place
op on them later raises), and it does not fire in some cases (pytorch/pytorch#61519, the reason
pytorch-grad-cam avoids it too). A tensor-level gradient is correct here because the model's
ReLUs are separate, non-in-place modules (``s9lib.models``), so every layer output stays
intact; an in-place change after a hooked layer is detected and raises a clear error.

Usage::

    with GradCAM(model, layers=["layer3", "layer4"]) as cam:
        res = cam(images)              # images: normalised (B, 3, H, W) tensor
    res.maps["layer4"]                 # (B, H, W) float32 in [0, 1]
    res.raw["layer4"]                  # (B, 4, 4) ReLU(sum_k w_k A_k), unnormalised
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CamResult",
    "BaseCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "METHODS",
    "explain",
    "resolve_layers",
    "normalize_maps",
    "gradcam_weights",
    "gradcampp_weights",
    "gradcampp_seed_bug_weights",
    "map_correlation",
]

#: pytorch-grad-cam's epsilon in the GradCAM++ denominator (kept so raw maps agree with it).
GRADCAMPP_EPS = 1e-6


# --------------------------------------------------------------------------- result


@dataclass
class CamResult:
    """What one CAM call returns. All tensors are detached, on the model's device.

    ``maps[layer]``: (B, H, W) float32 in [0, 1] at the input size, min-max scaled per image
    (an all-zero map stays all zeros). ``raw[layer]``: (B, h, w) ``ReLU(sum_k w_k A_k)`` at
    the layer's resolution, unnormalised. ``weights[layer]``: (B, K) channel weights.
    ``targets``: (B,) the class explained per image. ``logits``/``probs``: (B, num_classes).
    """

    maps: dict[str, torch.Tensor]
    raw: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor]
    targets: torch.Tensor
    logits: torch.Tensor
    method: str = ""
    layers: list[str] = field(default_factory=list)

    @property
    def probs(self) -> torch.Tensor:
        """Softmax of the logits (computed stably by torch, fine for huge logits)."""
        return torch.softmax(self.logits.float(), dim=1)

    def cpu(self) -> "CamResult":
        """A copy with every tensor on the CPU (for plotting / numpy)."""
        def move(d):
            return {k: v.cpu() for k, v in d.items()}

        return CamResult(move(self.maps), move(self.raw), move(self.weights), self.targets.cpu(),
                         self.logits.cpu(), self.method, list(self.layers))


# --------------------------------------------------------------------------- channel weights


def gradcam_weights(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """GradCAM: the gradient averaged over space, (B, K, h, w) -> (B, K)."""
    return grads.mean(dim=(2, 3))


def gradcampp_weights(activations: torch.Tensor, grads: torch.Tensor,
                      eps: float = GRADCAMPP_EPS) -> torch.Tensor:
    """GradCAM++ Eq. 19 with ``g = dy_c/dA`` (the score's gradient, so no ``exp(y_c)``).

    ``eps`` and the ``where(g != 0)`` are pytorch-grad-cam's: eps keeps the denominator off
    zero, and alpha is zeroed where the gradient is exactly zero (0/eps would be 0 anyway,
    the ``where`` makes that explicit and NaN-proof).
    """
    g2 = grads * grads
    g3 = g2 * grads
    sum_a = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + eps)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (alpha * grads.clamp(min=0)).sum(dim=(2, 3))


def gradcampp_seed_bug_weights(activations: torch.Tensor, grads: torch.Tensor,
                               eps: float = GRADCAMPP_EPS) -> torch.Tensor:
    """The seed's WRONG GradCAM++ weights, kept only to show the bug in the book.

    Its denominator is ``2 g^2 + sum_ab(A_ab * g_ab^3)`` (one number per channel, summed over
    the product) instead of Eq. 19's ``2 g_ij^2 + sum_ab(A_ab) * g_ij^3`` (per position).
    torchcam has the same denominator. Do not use this for explanations.
    """
    g2 = grads * grads
    wrong_sum = (activations * g2 * grads).sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + wrong_sum + eps)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (alpha * grads.clamp(min=0)).sum(dim=(2, 3))


# --------------------------------------------------------------------------- helpers


def _suggested_names(model: nn.Module) -> list[str]:
    """Top-level modules and their direct children (e.g. ``layer4``, ``layer4.1``): the names
    worth listing in an error message, without the ~100 lines of every conv and BN."""
    return [n for n, _ in model.named_modules() if n and n.count(".") <= 1]


def resolve_layers(model: nn.Module, layers: str | nn.Module | Iterable[str | nn.Module]
                   ) -> dict[str, nn.Module]:
    """``{name: module}`` for layer names (``"layer4"``, ``"layer4.1.conv2"``) or modules.

    Raises ``ValueError`` for a name that is not in ``model.named_modules()`` (listing the
    valid top-level and block names, plus close matches) or a module not inside ``model``.
    """
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("No layers given; pass e.g. layers=['layer4'].")
    by_name = dict(model.named_modules())
    name_of = {id(m): n for n, m in by_name.items()}
    out: dict[str, nn.Module] = {}
    for layer in layers:
        if isinstance(layer, nn.Module):
            if id(layer) not in name_of or name_of[id(layer)] == "":
                raise ValueError(f"The module {type(layer).__name__} given in layers= is not a "
                                 "sub-module of this model; pass a module of the model or its "
                                 "name, e.g. 'layer4'.")
            out[name_of[id(layer)]] = layer
        elif isinstance(layer, str) and layer in by_name and layer != "":
            out[layer] = by_name[layer]
        else:
            close = difflib.get_close_matches(str(layer), [n for n in by_name if n], n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"Unknown layer {layer!r}.{hint} Valid names include: "
                f"{', '.join(_suggested_names(model))}; any dotted path from "
                "model.named_modules() works too (e.g. 'layer4.1.conv2').")
    return out


def _resolve_targets(targets, logits: torch.Tensor) -> torch.Tensor:
    """(B,) long targets: the prediction (None), one class for all (int), or one per image."""
    batch, num_classes = logits.shape
    if targets is None:
        t = logits.detach().argmax(dim=1)
    elif np.ndim(targets) == 0:  # an int, a numpy integer or a 0-d tensor
        t = torch.full((batch,), int(targets), dtype=torch.long, device=logits.device)
    else:
        t = torch.as_tensor(targets, dtype=torch.long).reshape(-1).to(logits.device)
        if len(t) != batch:
            raise ValueError(f"targets has {len(t)} entries but there are {batch} images; pass "
                             "one class per image, a single int for all, or None for the "
                             "predicted class.")
    if len(t) and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"targets must be class indices in [0, {num_classes}); got "
                         f"{t.min().item()}..{t.max().item()}.")
    return t


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (H, W) map of a (B, H, W) batch to [0, 1]; constant maps -> 0.

    A map with no spread (all zeros: the class has no positive evidence at this layer) gives
    zeros instead of the 0/0 = NaN a plain division would.
    """
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    scaled = (flat - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, scaled, torch.zeros_like(scaled)).reshape(maps.shape)


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of maps, (B, H, W) x (B, H, W) -> (B,).

    How alike two explanations of the same image are, independent of their scale. A constant
    map (e.g. an all-zero CAM) correlates with nothing: 0 for that image, not NaN, so a mean
    over images stays defined.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps to correlate must have the same shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}.")
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


# --------------------------------------------------------------------------- the base class


class BaseCAM:
    """Owns everything but the channel weights: hooks, targets, the backward pass, scaling.

    Subclasses implement :meth:`channel_weights`. Use as a context manager (hooks live inside
    the ``with`` block) or call it directly for one call (hooks are added and removed around
    that call). Inside the block the model is in eval mode (BatchNorm uses running stats, so
    each image's gradient is independent of the others in the batch) and its parameters do
    not require grad (nothing touches ``.grad``); both are restored on exit.
    """

    name = "base"

    def __init__(self, model: nn.Module,
                 layers: str | nn.Module | Sequence[str | nn.Module] = ("layer4",)) -> None:
        self.model = model
        self.layers = resolve_layers(model, layers)
        self._handles: list = []
        self._saved: dict[str, list[tuple[torch.Tensor, int]]] = {}
        self._restore: tuple[bool, list[tuple[nn.Parameter, bool]]] | None = None

    # -- the one thing subclasses change
    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) activations and their gradients -> (B, K) channel weights."""
        raise NotImplementedError("subclasses implement channel_weights(activations, grads)")

    # -- hooks and model state
    def __enter__(self) -> "BaseCAM":
        if self._restore is not None:
            raise ValueError(f"This {type(self).__name__} is already active; use one `with` "
                             "block at a time (or a second CAM object).")
        params = list(self.model.parameters())
        self._restore = (self.model.training, [(p, p.requires_grad) for p in params])
        try:
            self.model.eval()
            for p in params:
                p.requires_grad_(False)
            for name, module in self.layers.items():
                self._handles.append(module.register_forward_hook(self._saver(name)))
        except BaseException:
            self._exit()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._exit()
        return False  # never swallow the caller's exception

    def _exit(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._saved.clear()
        if self._restore is not None:
            training, flags = self._restore
            for p, flag in flags:
                p.requires_grad_(flag)
            self.model.train(training)
            self._restore = None

    def _saver(self, name: str):
        def save(module: nn.Module, inputs, output) -> None:
            if not torch.is_tensor(output):
                raise ValueError(f"Layer {name!r} returns {type(output).__name__}, not a tensor; "
                                 "choose a module whose output is a feature map.")
            self._saved.setdefault(name, []).append((output, output._version))
        return save

    # -- the call
    def __call__(self, images: torch.Tensor, targets=None) -> CamResult:
        """CAMs of ``images`` (normalised (B, 3, H, W)) for ``targets`` at every layer.

        ``targets``: None explains each image's predicted class; an int explains that class
        for all images; a sequence/tensor of B ints gives one class per image.
        """
        if self._restore is None:  # called outside `with`: hooks for this one call only
            with self:
                return self._compute(images, targets)
        return self._compute(images, targets)

    def _compute(self, images: torch.Tensor, targets) -> CamResult:
        if not torch.is_tensor(images) or images.ndim != 4:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise ValueError(f"images must be a normalised (B, 3, H, W) tensor, got {shape}; "
                             "convert uint8 HWC arrays with s9lib.augment first.")
        param = next(self.model.parameters(), None)
        device, dtype = (param.device, param.dtype) if param is not None else (images.device,
                                                                              torch.float32)
        # A fresh leaf that requires grad: the graph exists even though the parameters are
        # frozen here, and the caller's tensor is never modified.
        x = images.detach().to(device=device, dtype=dtype).requires_grad_(True)
        self._saved.clear()
        try:
            with torch.enable_grad():  # notebooks often call this inside torch.no_grad()
                logits = self.model(x)
                acts = self._activations()
                tgt = _resolve_targets(targets, logits)
                score = logits.gather(1, tgt[:, None]).sum()  # images are independent (eval BN)
                grads = torch.autograd.grad(score, list(acts.values()), allow_unused=True)
            grads = [torch.zeros_like(a) if g is None else g  # a layer the score ignores
                     for a, g in zip(acts.values(), grads)]
            return self._result(x.shape[-2:], acts, dict(zip(acts, grads)), tgt, logits)
        finally:
            self._saved.clear()  # drop the activations and their graph right away

    def _activations(self) -> dict[str, torch.Tensor]:
        acts = {}
        for name in self.layers:
            seen = self._saved.get(name, [])
            if len(seen) != 1:
                raise ValueError(
                    f"Layer {name!r} ran {len(seen)} times in one forward pass; CAMs need a "
                    "module that runs exactly once (pick another layer).")
            out, version = seen[0]
            if out._version != version:
                raise ValueError(f"The output of layer {name!r} was modified in place later in "
                                 "the forward pass (an inplace ReLU?); use non-inplace modules "
                                 "or hook a later layer.")
            if out.ndim != 4:
                raise ValueError(f"Layer {name!r} outputs shape {tuple(out.shape)}; CAMs need a "
                                 "(B, K, h, w) feature map.")
            acts[name] = out
        return acts

    def _result(self, size, acts, grads, tgt, logits) -> CamResult:
        maps, raw, weights = {}, {}, {}
        for name, a in acts.items():
            a = a.detach().float()
            w = self.channel_weights(a, grads[name].detach().float())
            cam = torch.relu(torch.einsum("bk,bkhw->bhw", w, a))
            up = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear",
                               align_corners=False)[:, 0]
            maps[name], raw[name], weights[name] = normalize_maps(up), cam, w
        return CamResult(maps, raw, weights, tgt, logits.detach(), self.name, list(acts))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={list(self.layers)})"


class GradCAM(BaseCAM):
    """GradCAM (Selvaraju et al. 2017): channel weight = spatial mean of dy_c/dA_k."""

    name = "gradcam"

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return gradcam_weights(activations, grads)


class GradCAMPlusPlus(BaseCAM):
    """GradCAM++ (Chattopadhay et al. 2018, Eq. 19), from the score's gradient (no exp)."""

    name = "gradcam++"

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return gradcampp_weights(activations, grads)


#: Method name -> class, for CLIs, widgets and :func:`explain`.
METHODS: dict[str, type[BaseCAM]] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}


def explain(model: nn.Module, images: torch.Tensor,
            layers: str | nn.Module | Sequence[str | nn.Module] = ("layer4",),
            method: str = "gradcam", targets=None) -> CamResult:
    """One-shot CAMs: hooks are added, used once and removed; the model is left as it was."""
    key = method.lower().replace("gradcampp", "gradcam++").replace("_", "")
    if key not in METHODS:
        raise ValueError(f"Unknown CAM method {method!r}; choose one of {sorted(METHODS)}.")
    with METHODS[key](model, layers) as cam:
        return cam(images, targets)
