"""GradCAM, GradCAM++ and four relatives: one base class, methods differ in how they weight.

A class activation map for class ``c`` at layer ``l`` is ``ReLU(sum_k w_k A_k)``: the layer's
``K`` feature maps ``A_k`` (``h x w`` each), weighted by how much class ``c``'s score ``y_c``
(the logit, not the softmax probability) depends on them. GradCAM and GradCAM++ differ only in
``w_k``:

* GradCAM (Selvaraju et al. 2017): ``w_k = mean_ij dy_c/dA_k[i,j]``.
* GradCAM++ (Chattopadhay et al. 2018, Eq. 19), with ``g = dy_c/dA_k``::

      alpha_ij = g_ij^2 / (2 g_ij^2 + sum_ab(A_k[a,b]) * g_ij^3)
      w_k      = sum_ij alpha_ij * ReLU(g_ij)

  The paper derives Eq. 19 for ``Y_c = exp(y_c)``; the exponential cancels out of alpha, so we
  use the gradient of the score itself and there is no ``exp`` anywhere: logits of 1e5 cannot
  overflow (``exp(89)`` already overflows float32).

The relatives, each a small subclass (formulas in their docstrings): XGradCAM (Fu et al. 2020,
another channel weighting), LayerCAM (Jiang et al. 2021) and HiResCAM (Draelos & Carin 2020),
which weight every cell rather than every channel and so override :meth:`BaseCAM.combine`, and
EigenCAM (Muhammad & Yeasin 2020), which uses no gradient at all (``uses_gradients = False``:
one forward pass, no backward). On this ResNet18, ``layer4`` is followed only by a global
average pool and the linear layer, so ``dy_c/dA_k[i,j] = W[c,k] / (h w)`` is the same at every
cell: there GradCAM, XGradCAM and HiResCAM give the *same* map (they differ at inner layers).

Design rules (chapter 4 compares them with the course notebook and other libraries):

* Hooks exist only inside a ``with`` block (or inside one call when used without ``with``) and
  are removed on exit *and* on exceptions; the model's train/eval mode and every parameter's
  ``requires_grad`` are restored. (The course notebook registered a hook per call and never
  removed it.)
* One forward and one backward pass serve every layer asked for, and the backward stops at the
  earliest hooked layer.
* The course notebook's GradCAM++ denominator ``2 g^2 + sum_ab(A_ab * g_ab^3)`` is kept as
  :func:`gradcampp_course_bug_weights`, clearly named, so the book can show what it changes.

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
from contextlib import ExitStack, contextmanager
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
    "XGradCAM",
    "LayerCAM",
    "HiResCAM",
    "EigenCAM",
    "METHODS",
    "explain",
    "resolve_layers",
    "normalize_maps",
    "gradcam_weights",
    "gradcampp_weights",
    "gradcampp_course_bug_weights",
    "GRADCAMPP_EPS",
    "PYTORCH_GRAD_CAM_PP_EPS",
    "map_correlation",
    "count_constant",
    "xgradcam_weights",
    "eigencam_projection",
    "check_images",
    "check_logits",
    "resolve_targets",
    "frozen_eval",
]

#: GradCAM++'s default epsilon: none. Eq. 19 needs no guard where it counts (chapter 6): at a
#: cell with g > 0 after a ReLU the denominator is at least 2 g^2 > 0, and an epsilon would
#: make the map depend on how the layer's activations are scaled (measured there).
GRADCAMPP_EPS = 0.0
#: pytorch-grad-cam's epsilon in its GradCAM++ denominator (pass it to compare maps with it).
PYTORCH_GRAD_CAM_PP_EPS = 1e-6
#: pytorch-grad-cam's epsilon in the XGradCAM denominator (likewise).
XGRADCAM_EPS = 1e-7


# --------------------------------------------------------------------------- result


@dataclass
class CamResult:
    """What one CAM call returns. All tensors are detached, on the model's device.

    ``maps[layer]``: (B, H, W) float32 in [0, 1] at the input size, min-max scaled per image
    (an all-zero map stays all zeros). ``raw[layer]``: (B, h, w) ``ReLU(sum_k w_k A_k)`` at
    the layer's resolution, unnormalised. ``weights[layer]``: (B, K) channel weights, or
    (B, K, h, w) per-cell weights for the methods that weight cells (LayerCAM, HiResCAM;
    ``raw`` is then ``ReLU(sum_k (w * A)_k)``; for EigenCAM it is of the centred ``A``).
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

    Only cells with ``g > 0`` count (the ReLU of Eq. 1 zeroes the rest), so a zero or 0/0
    denominator at the other cells never enters the sum. ``eps`` (default 0, exact Eq. 19) is
    added to the denominator; pass :data:`PYTORCH_GRAD_CAM_PP_EPS` to reproduce
    pytorch-grad-cam's maps. A denominator that is exactly zero at a counted cell (possible
    only where ``sum_ab A_ab < 0``, i.e. at a layer that is not a ReLU's output) counts as 0.
    """
    g2 = grads * grads
    denominator = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g2 * grads + eps
    counted = (grads > 0) & (denominator != 0)
    beta = g2 / torch.where(counted, denominator, torch.ones_like(denominator))
    return torch.where(counted, beta * grads, torch.zeros_like(beta)).sum(dim=(2, 3))


def gradcampp_course_bug_weights(activations: torch.Tensor, grads: torch.Tensor,
                               eps: float = GRADCAMPP_EPS) -> torch.Tensor:
    """The course notebook's WRONG GradCAM++ weights, kept only to show the bug in the book.

    Its denominator is ``2 g^2 + sum_ab(A_ab * g_ab^3)`` (one number per channel, summed over
    the product) instead of Eq. 19's ``2 g_ij^2 + sum_ab(A_ab) * g_ij^3`` (per position).
    torchcam has the same denominator. Do not use this for explanations.
    """
    g2 = grads * grads
    wrong_sum = (activations * g2 * grads).sum(dim=(2, 3), keepdim=True)
    denominator = 2 * g2 + wrong_sum + eps
    counted = (grads > 0) & (denominator != 0)
    beta = g2 / torch.where(counted, denominator, torch.ones_like(denominator))
    return torch.where(counted, beta * grads, torch.zeros_like(beta)).sum(dim=(2, 3))


def xgradcam_weights(activations: torch.Tensor, grads: torch.Tensor,
                     eps: float = XGRADCAM_EPS) -> torch.Tensor:
    """XGradCAM: ``w_k = sum_ij (A_k[i,j] / sum_ab A_k[a,b]) * g_ij``, (B, K, h, w) -> (B, K).

    The gradient averaged with the activation as weight instead of uniformly. ``eps`` is
    pytorch-grad-cam's (it keeps an all-zero channel at weight 0 instead of 0/0).
    """
    total = activations.sum(dim=(2, 3), keepdim=True)
    return (grads * activations / (total + eps)).sum(dim=(2, 3))


def eigencam_projection(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """EigenCAM: each image's centred activations projected on their first principal axis.

    With ``X`` the (h*w, K) matrix of one image's activations, each channel centred over the
    cells, and ``v`` the first right singular vector of ``X``: the map is ``X v`` (h, w), the
    weights ``v`` (K,). Returns ``(maps (B, h, w), weights (B, K))``, before any ReLU.

    An SVD's sign is arbitrary (``-v`` is as good as ``v``), and a ReLU after the wrong sign
    keeps the complement of the object. The sign is fixed as Seg-Eigen-CAM's Eq. 13 does
    (pytorch-grad-cam's ``get_2d_projection_with_sign_correction``): flip when ``|min| >
    |max|``, so the larger excursion is positive.

    ``v`` comes from the smaller of the two Gram matrices (K x K, or h*w x h*w then mapped back
    by ``X^T u``), in float64: a symmetric eigenproblem of at most 128 x 128 on this ResNet18,
    where a batched SVD of the (1024, 64) ``layer1`` matrices took seconds on a busy CPU.
    """
    b, k, h, w = activations.shape
    x = torch.nan_to_num(activations.double(), nan=0.0).flatten(2).transpose(1, 2)
    x = x - x.mean(dim=1, keepdim=True)  # (B, h*w, K), each channel centred over the cells
    if x.shape[1] >= k:
        v = torch.linalg.eigh(x.transpose(1, 2) @ x).eigenvectors[..., -1]  # (B, K)
    else:
        u = torch.linalg.eigh(x @ x.transpose(1, 2)).eigenvectors[..., -1:]  # (B, h*w, 1)
        v = (x.transpose(1, 2) @ u)[..., 0]
        v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    proj = torch.einsum("bnk,bk->bn", x, v)
    sign = torch.where(proj.amin(1).abs() > proj.amax(1).abs(), -1.0, 1.0).to(proj)[:, None]
    return (proj * sign).reshape(b, h, w).float(), (v * sign).float()


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
    if isinstance(layers, (dict, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(f"layers must be a layer name, a module, or a list of them, got "
                        f"{type(layers).__name__}; e.g. layers=['layer3', 'layer4'].")
    layers = list(layers)
    odd = [x for x in layers if not isinstance(x, (str, nn.Module))]
    if odd:
        raise TypeError(f"layers must hold layer names (str) or modules, got "
                        f"{type(odd[0]).__name__} {odd[0]!r}; e.g. layers=['layer4'].")
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


def _check_target_type(targets) -> None:
    """Class indices are integers: a float (2.7 would become 2) or a bool (True would become
    class 1) is refused rather than silently truncated."""
    if targets is None:
        return
    kind = (targets.dtype if torch.is_tensor(targets) else np.asarray(targets).dtype)
    is_bool = kind == torch.bool if torch.is_tensor(targets) else kind == np.bool_
    is_int = (not targets.is_floating_point() and not targets.is_complex()
              if torch.is_tensor(targets) else np.issubdtype(kind, np.integer))
    if is_bool or not is_int:
        raise TypeError(f"targets must be integer class indices (an int, a sequence of ints or "
                        f"an integer tensor) or None, got {kind}.")


def resolve_targets(targets, logits: torch.Tensor) -> torch.Tensor:
    """(B,) long targets: the prediction (None), one class for all (int), or one per image."""
    batch, num_classes = logits.shape
    _check_target_type(targets)
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


#: Normalised CIFAR-10 pixels lie within about +-3; larger values are raw 0..255 pixels.
MAX_NORMALISED = 20.0


def check_images(images, model: nn.Module | None = None) -> None:
    """Refuse, in one sentence, what a CAM cannot explain: anything but a finite, normalised
    float (B, C, H, W) tensor with the model's channel count.

    Why: uint8 or 0..255 pixels, channels-last arrays and NaNs all run through a ResNet
    without complaint and give a map that looks like an explanation and is not one.
    """
    hint = "normalise uint8 (B, 32, 32, 3) images with s9lib.data.inputs.preprocess(images, model=model)"
    if not torch.is_tensor(images):
        raise TypeError(f"images must be a torch tensor, got {type(images).__name__}; {hint}.")
    if images.dtype == torch.bool or not images.is_floating_point():
        raise TypeError(f"images must be a float tensor of normalised pixels, got "
                        f"{images.dtype}; {hint}.")
    if images.ndim != 4:
        raise ValueError(f"images must be a normalised (B, 3, H, W) tensor, got "
                         f"{tuple(images.shape)}; {hint}.")
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None) if model else None
    channels = conv.in_channels if conv is not None else 3
    if images.shape[1] != channels:
        layout = (" (channels-last? use images.permute(0, 3, 1, 2))"
                  if images.shape[-1] == channels else "")
        raise ValueError(f"images must be (B, {channels}, H, W): the model reads {channels} "
                         f"channels, got shape {tuple(images.shape)}{layout}.")
    finite = torch.isfinite(images).flatten(1).all(1)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(f"images {bad} hold NaN or infinite values; a CAM of them would be "
                         "meaningless. Check the preprocessing.")
    if images.numel() and images.abs().max() > MAX_NORMALISED:
        raise ValueError(f"images hold values up to {float(images.abs().max()):.0f}: raw 0..255 "
                         f"pixels, not normalised ones; {hint}.")


def check_logits(logits: torch.Tensor) -> None:
    """Non-finite logits would give all-zero (or NaN) maps that look like "no evidence"."""
    finite = torch.isfinite(logits.detach()).all(1)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(f"The model's logits for images {bad} are NaN or infinite; no CAM "
                         "can be computed from them. Check the model's weights and inputs.")


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
    map (e.g. an all-zero CAM: no cell with positive evidence) has no variation to correlate,
    so that image's value is NaN (DESIGN.md), never a silent 0 that would pull a mean towards
    "unrelated". Average with ``torch.nanmean`` and report how many were NaN
    (:func:`count_constant`).
    """
    if a.shape != b.shape:
        raise ValueError(f"maps to correlate must have the same shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}.")
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    norm = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    return torch.where(norm > 0, r, torch.full_like(r, float("nan")))


def count_constant(correlations: torch.Tensor) -> str:
    """'' when every correlation is defined, else ' (k of n images: a constant map, NaN, left
    out)': the clause a chapter appends to a mean of :func:`map_correlation`."""
    k, n = int(correlations.isnan().sum()), correlations.numel()
    return f" ({k} of {n} images: a constant map, NaN, left out)" if k else ""


# --------------------------------------------------------------------------- the base class


@contextmanager
def frozen_eval(model: nn.Module):
    """The model in eval mode with parameters that do not require grad, for the block; both
    restored on exit. Why: eval-mode BatchNorm makes each image's gradient independent of the
    batch, and frozen parameters mean an explanation never touches ``.grad``."""
    params = list(model.parameters())
    training, flags = model.training, [p.requires_grad for p in params]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(training)


class BaseCAM:
    """Owns everything but the channel weights: hooks, targets, the backward pass, scaling.

    Subclasses implement :meth:`channel_weights`; a method that is not a channel weighting
    overrides :meth:`combine` instead, and a method that needs no gradient sets
    ``uses_gradients = False`` (then there is no backward pass). Use as a context manager
    (hooks live inside the ``with`` block) or call it directly for one call (hooks are added
    and removed around that call). Inside the block the model is in eval mode (BatchNorm uses
    running stats, so each image's gradient is independent of the others in the batch) and its
    parameters do not require grad (nothing touches ``.grad``); both are restored on exit.
    """

    name = "base"
    #: False for gradient-free methods: the call then runs one forward pass and no backward.
    uses_gradients = True

    def __init__(self, model: nn.Module,
                 layers: str | nn.Module | Sequence[str | nn.Module] = ("layer4",)) -> None:
        self.model = model
        self.layers = resolve_layers(model, layers)
        self._handles: list = []
        self._saved: dict[str, list[tuple[torch.Tensor, int]]] = {}
        self._state: ExitStack | None = None  # the frozen_eval block while active

    # -- what subclasses change: channel_weights, or combine for other maps
    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) activations and their gradients -> (B, K) channel weights."""
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  "channel_weights(activations, grads) or override combine().")

    def combine(self, activations: torch.Tensor, grads: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, h, w) activations and gradients -> ((B, h, w) map before the ReLU, weights).

        The default is a channel weighting, ``sum_k w_k A_k`` with ``w`` from
        :meth:`channel_weights`; the base class applies the ReLU for every method.
        ``grads`` is None when ``uses_gradients`` is False.
        """
        w = self.channel_weights(activations, grads)
        return torch.einsum("bk,bkhw->bhw", w, activations), w

    # -- hooks and model state
    def __enter__(self) -> "BaseCAM":
        if self._state is not None:
            raise ValueError(f"This {type(self).__name__} is already active; use one `with` "
                             "block at a time (or a second CAM object).")
        self._state = ExitStack()
        try:
            self._state.enter_context(frozen_eval(self.model))
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
        if self._state is not None:
            self._state.close()
            self._state = None

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
        if self._state is None:  # called outside `with`: hooks for this one call only
            with self:
                return self._compute(images, targets)
        return self._compute(images, targets)

    def _compute(self, images: torch.Tensor, targets) -> CamResult:
        check_images(images, self.model)
        if self.uses_gradients and torch.is_inference_mode_enabled():
            raise ValueError(f"{type(self).__name__} needs gradients, which torch."
                             "inference_mode() switches off for good; call it outside that "
                             "block (inside torch.no_grad() is fine).")
        param = next(self.model.parameters(), None)
        device, dtype = (param.device, param.dtype) if param is not None else (images.device,
                                                                              torch.float32)
        # A fresh leaf that requires grad: the graph exists even though the parameters are
        # frozen here, and the caller's tensor is never modified (clone: an inference tensor
        # made under inference_mode cannot require grad).
        x = images.detach().to(device=device, dtype=dtype)
        x = (x.clone() if x.is_inference() else x).requires_grad_(self.uses_gradients)
        self._saved.clear()
        try:
            # enable_grad: notebooks often call this inside torch.no_grad()
            with torch.set_grad_enabled(self.uses_gradients):
                logits = self.model(x)
                check_logits(logits)
                acts = self._activations()
                tgt = resolve_targets(targets, logits)
                grads = self._gradients(logits, tgt, acts)
            return self._result(x.shape[-2:], acts, grads, tgt, logits)
        finally:
            self._saved.clear()  # drop the activations and their graph right away

    def _gradients(self, logits, tgt, acts) -> dict[str, torch.Tensor | None]:
        """dy_c/dA for every layer from ONE backward pass (None each for gradient-free methods)."""
        if not self.uses_gradients:
            return {name: None for name in acts}
        score = logits.gather(1, tgt[:, None]).sum()  # images are independent (eval BN)
        grads = torch.autograd.grad(score, list(acts.values()), allow_unused=True)
        return {name: torch.zeros_like(a) if g is None else g  # a layer the score ignores
                for (name, a), g in zip(acts.items(), grads)}

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
            g = grads[name]
            cam, w = self.combine(a.detach().float(), None if g is None else g.detach().float())
            cam = torch.relu(cam)
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

    def __init__(self, model: nn.Module,
                 layers: str | nn.Module | Sequence[str | nn.Module] = ("layer4",),
                 eps: float = GRADCAMPP_EPS) -> None:
        super().__init__(model, layers)
        self.eps = eps  # 0: Eq. 19 exactly; PYTORCH_GRAD_CAM_PP_EPS: pytorch-grad-cam's maps

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return gradcampp_weights(activations, grads, eps=self.eps)


class XGradCAM(BaseCAM):
    """XGradCAM (Fu et al. 2020): ``w_k = sum_ij (A_k[i,j] / sum_ab A_k[a,b]) dy_c/dA_k[i,j]``.

    How it differs from GradCAM: the gradient is averaged with the activations as weights
    instead of uniformly (the weights the paper's sensitivity and conservation axioms ask for).
    """

    name = "xgradcam"

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return xgradcam_weights(activations, grads)


class LayerCAM(BaseCAM):
    """LayerCAM (Jiang et al. 2021): ``M = ReLU(sum_k ReLU(g_k) * A_k)``, ``g = dy_c/dA``.

    How it differs from GradCAM: each *cell* gets its own weight, the positive gradient there,
    instead of one weight per channel (so it stays sharp at early layers). That is no channel
    weighting, hence :meth:`combine` is overridden; ``weights`` are the (B, K, h, w) ``ReLU(g)``.
    """

    name = "layercam"

    def combine(self, activations: torch.Tensor, grads: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        w = grads.clamp(min=0)
        return (w * activations).sum(dim=1), w


class HiResCAM(BaseCAM):
    """HiResCAM (Draelos & Carin 2020): ``M = ReLU(sum_k g_k * A_k)``, ``g = dy_c/dA``.

    How it differs from GradCAM: the gradient multiplies the activations cell by cell instead
    of being averaged over the cells first, so the map is exactly each cell's first-order
    contribution to the score. Per-cell weights need :meth:`combine` (``weights`` = ``g``).
    Where the gradient is constant over the cells (``layer4`` of this model) it equals GradCAM.
    """

    name = "hirescam"

    def combine(self, activations: torch.Tensor, grads: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return (grads * activations).sum(dim=1), grads


class EigenCAM(BaseCAM):
    """EigenCAM (Muhammad & Yeasin 2020): ``M = ReLU(X v)``, ``X`` the centred activations.

    ``v`` is the first principal axis of the (h*w, K) activations (see
    :func:`eigencam_projection` for the sign rule). How it differs from GradCAM: no gradient
    and no class: one forward pass, no backward, and the same map whatever the target (so it
    cannot tell a cat from a dog in one image; it shows what the layer responds to most).

    Chosen over ScoreCAM as the gradient-free method: ScoreCAM needs one extra forward pass per
    channel (512 per image at ``layer4``), too slow for the book's CPU runs and sanity checks.
    """

    name = "eigencam"
    uses_gradients = False

    def combine(self, activations: torch.Tensor, grads: None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return eigencam_projection(activations)


#: Method name -> class, for CLIs, widgets and :func:`explain`.
METHODS: dict[str, type[BaseCAM]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, EigenCAM)}


def explain(model: nn.Module, images: torch.Tensor,
            layers: str | nn.Module | Sequence[str | nn.Module] = ("layer4",),
            method: str = "gradcam", targets=None) -> CamResult:
    """One-shot CAMs: hooks are added, used once and removed; the model is left as it was."""
    key = method.lower().replace("gradcampp", "gradcam++").replace("_", "")
    if key not in METHODS:
        raise ValueError(f"Unknown CAM method {method!r}; choose one of {sorted(METHODS)}.")
    with METHODS[key](model, layers) as cam:
        return cam(images, targets)
