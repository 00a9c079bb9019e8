"""One interface for every explanation: a method name in, one map per image out.

Why: the trust chapters put CAMs, gradient attributions and two controls side by side on the
same model, images and metrics (sanity, faithfulness, removal). Those metrics need the same
thing from each: a (B, H, W) map per image at the input resolution, non-negative, scaled the
same way. :func:`explain_map` gives exactly that for every name in :data:`ALL_METHODS`:

* **CAMs** (:data:`s9lib.explain.cam.METHODS`): ``CamResult.maps[layer]``, the ReLU'd map at
  ``layer``, bilinearly upsampled and min-max scaled per image (unchanged from ``explain``).
* **Gradient methods** (:data:`s9lib.explain.gradients.GRADIENT_METHODS`): a (B, 3, H, W)
  attribution becomes a map as ``sum_c |attribution_c|``, min-max scaled per image (an
  all-zero map stays zero), i.e. ``Attribution.maps``. This is the reduction of Adebayo et
  al. 2018, whose sanity checks ran the PAIR ``saliency`` package's
  ``VisualizeImageGrayscale`` (the absolute value summed over the colour axis, scaled to
  [0, 1]), and of Quantus (its MPRT takes ``abs=True, normalise=True`` by default; its examples
  reduce ``Saliency(...).attribute(abs=True)`` by ``.sum(axis=1)``). Two choices differ and
  are *not* taken: Captum's visualiser sums the *signed* channels before the absolute value
  (opposite channels cancel), and Simonyan et al. 2014 took the max over channels; Adebayo et
  al. also clip at the 99th percentile, which we do not: min-max is the CAMs' convention, so
  one rule scales every map (and SSIM's ``data_range=1`` holds for all of them).
  ``layer`` matters only to ``guided_gradcam`` (the GradCAM it multiplies); the others are
  pixel-level and ignore it.
* **Controls** (:data:`CONTROLS`), maps that explain nothing, so a chapter can show what a
  sanity-check result does and does not mean:

  - ``"edge"``: the Sobel gradient magnitude of the grayscale input (see
    :func:`edge_maps`). It reads only the pixels, never the weights, so randomising the model
    cannot change it: its similarity to the trained model's map is exactly 1 at every step
    of a randomisation test. That is the point. It looks like an explanation (it outlines
    the object) and is one of nothing the model does; Adebayo et al. 2018 (Fig. 1) put an
    edge detector beside saliency maps for this reason, and a method whose randomisation
    curve stays near the edge map's is showing the image, not the model. The edge control
    *fails* the test by construction: the test catches it.
  - ``"noise"``: uniform noise per pixel, a fresh draw at every call (or from ``generator``).
    It explains nothing either, yet it *passes* the randomisation test (two draws are
    unrelated, similarity about 0): Binder et al. (CVPR 2023) show that uninformative maps
    with zero pixel-wise covariance score well on these checks. A pass (the map changes when
    the model is randomised) is therefore necessary, not sufficient; the floor of
    ``s9lib.evaluate.sanity`` (how alike the maps of two different images already are) is
    what gives this control away: its floor is about 0 too.

  Controls ignore ``targets``; they check the images as every method does.

Every method leaves the model as it found it: CAM and gradient hooks live inside their
``with`` blocks (removed on exit and on errors), and the train/eval mode and every
``requires_grad`` flag are restored. Maps come back float32 on the model's device.
"""

from __future__ import annotations

import difflib
import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ..data.inputs import normalization_of
from .cam import METHODS as CAM_METHODS
from .cam import check_images, normalize_maps
from .gradients import GRADIENT_METHODS

__all__ = ["ALL_METHODS", "CONTROLS", "LUMA", "resolve_method", "explain_map", "edge_maps"]

#: Maps that explain nothing, for comparison (see the module docstring).
CONTROLS = ("edge", "noise")
#: Every name :func:`explain_map` takes: the CAMs, the gradient methods, the controls.
ALL_METHODS: tuple[str, ...] = tuple(CAM_METHODS) + tuple(GRADIENT_METHODS) + CONTROLS
#: ITU-R BT.601 luma weights (R, G, B): the grayscale of PIL's ``convert("L")`` and OpenCV.
LUMA = (0.299, 0.587, 0.114)


def resolve_method(method: str) -> str:
    """The canonical name in :data:`ALL_METHODS` for ``method`` (case-insensitive; the CAM
    spellings ``explain`` takes, such as ``"GradCAMpp"``, work too); ``ValueError`` listing
    the choices otherwise."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a name (str), got {type(method).__name__}; choose "
                        f"one of {list(ALL_METHODS)}.")
    key = method.strip().lower()
    if key in ALL_METHODS:
        return key
    cam_key = key.replace("gradcampp", "gradcam++").replace("_", "").replace("-", "")
    if cam_key in CAM_METHODS:
        return cam_key
    close = difflib.get_close_matches(key, ALL_METHODS, n=2)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"Unknown method {method!r}.{hint} Choose one of {list(ALL_METHODS)} "
                     "(CAMs, gradient methods, controls).")


def edge_maps(pixels: torch.Tensor) -> torch.Tensor:
    """Sobel edge magnitude of ``pixels`` (B, 3, H, W) in [0, 1] -> (B, H, W) in [0, 1].

    Grayscale by :data:`LUMA`; the two 3x3 Sobel kernels; magnitude ``sqrt(gx^2 + gy^2)``;
    min-max per image (a flat image gives zeros). The border is padded by replicating it, so
    the frame of the image is not an edge (scikit-image's ``filters.sobel`` does the same with
    its default ``mode="reflect"``, and agrees up to its constant scale).
    """
    gray = torch.einsum("bchw,c->bhw", pixels.float(),
                        torch.tensor(LUMA, device=pixels.device))[:, None]
    sobel_x = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
                           device=pixels.device)
    kernels = torch.stack([sobel_x, sobel_x.T])[:, None]  # (2, 1, 3, 3): d/dx, d/dy
    grads = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return normalize_maps(grads.pow(2).sum(dim=1).sqrt())


def _constructor_options(cls: type, options: dict, method: str) -> None:
    """Refuse options the method's constructor does not take, naming the ones it does."""
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p not in ("self", "model", "layers", "layer")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{method!r} takes no option(s) {unknown}; its options are "
                        f"{allowed or 'none'} (the layer is explain_map's layer=).")


def _control_map(model: nn.Module, images: torch.Tensor, method: str, options: dict
                 ) -> torch.Tensor:
    allowed = {"edge": (), "noise": ("generator",)}[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"The {method!r} control takes no option(s) {unknown}; it takes "
                        f"{list(allowed) or 'none'}.")
    param = next(model.parameters(), None)
    device = param.device if param is not None else images.device
    if method == "noise":
        b, _, h, w = images.shape
        return torch.rand(b, h, w, generator=options.get("generator")).to(device)
    mean, std = normalization_of(model)  # the input statistics: buffers, never randomised
    x = images.detach().float()
    pixels = x * torch.tensor(std, device=x.device)[:, None, None] + torch.tensor(
        mean, device=x.device)[:, None, None]
    return edge_maps(pixels).to(device)


def explain_map(model: nn.Module, images: torch.Tensor, method: str, targets=None,
                layer: str | nn.Module = "layer4", **options) -> torch.Tensor:
    """(B, H, W) float32 maps in [0, 1], one per image, by ``method`` (a name of
    :data:`ALL_METHODS`), at the size of ``images``.

    ``images``: normalised (B, 3, H, W), as for every CAM. ``targets``: the class explained (as
    the CAMs take it: None = the prediction, an int, or one per image); controls ignore it.
    ``layer``: the CAM layer (and Guided GradCAM's); pixel-level methods ignore it.
    ``options`` go to the method's constructor (``eps`` for GradCAM++; ``samples``, ``stdev``,
    ``generator`` for SmoothGrad; ``steps``, ``baseline`` for Integrated Gradients;
    ``batch_size`` for the gradient methods; ``generator`` for ``noise``); an option the method
    does not take is a ``TypeError``. How each family becomes a map, and why: module docstring.
    """
    key = resolve_method(method)
    check_images(images, model)
    if key in CONTROLS:
        return _control_map(model, images, key, options)
    if key in CAM_METHODS:
        _constructor_options(CAM_METHODS[key], options, key)
        with CAM_METHODS[key](model, [layer], **options) as cam:
            return next(iter(cam(images, targets).maps.values()))
    cls = GRADIENT_METHODS[key]
    _constructor_options(cls, options, key)
    if "layer" in inspect.signature(cls.__init__).parameters:
        options = {**options, "layer": layer}
    with cls(model, **options) as attribution:
        return attribution(images, targets).maps
