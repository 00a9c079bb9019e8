"""Figures for the book and the CLI: CAM overlays, image grids, curves, mistakes.

Why it looks like this: every function takes plain data (arrays, a ``CamResult``, a
``History``) and returns a ``matplotlib.figure.Figure`` built *without pyplot*, so nothing is
left in pyplot's global figure list, nothing pops up, and the caller decides whether to show
it in a notebook (a Figure displays itself as the last expression of a cell), save it
(``fig.savefig``) or throw it away. Fonts are sized for the HTML book, where a figure is
shrunk to the page width (about 9 inches): figures stay at most ~12 inches wide.

Colour map: OpenCV's JET, exactly as pytorch-grad-cam's ``show_cam_on_image`` applies it (a
value of 1.0 is dark red, 0.0 dark blue), and as the course notebook drew its maps. Why JET and
not a perceptually uniform map (viridis, inferno): a reader compares these overlays with the
course notebook's and with pytorch-grad-cam's examples, and the tests check our overlays
against that library pixel for pixel; a different colour map would make every comparison a
comparison of colour maps. JET's costs are real and are why every CAM figure carries a colour
bar: its lightness is not monotonic (cyan and yellow, the middle of the scale, are the
brightest colours, and bands appear at them that are not in the data), and red against green
is hard to tell apart for colour-blind readers. Read a value off the colour bar, not off how
bright a colour looks.

Scale: a map's colours mean nothing without its scale. ``scale="per-image"`` (the default,
what ``CamResult.maps`` holds) min-max scales each map on its own: dark blue is *that map's
weakest cell*, which need not be zero, and dark red its strongest, so two maps drawn this way
cannot be compared in magnitude. ``scale="shared"`` draws every image's map (per layer) on one
scale from 0 to the largest value among them, computed from ``CamResult.raw`` (the unnormalised
``ReLU(sum_k alpha_k A^k)``): there dark blue is zero evidence, and equal values have equal
colours in every image. Each figure labels its colour bar with the scale it used.

32x32 images are drawn with nearest-neighbour upsampling: each CIFAR pixel is a visible square
instead of a blur that hides what the model actually saw.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ..data.cifar import CLASSES

__all__ = [
    "overlay",
    "heatmap",
    "jet_colormap",
    "cam_colorbar",
    "shared_maps",
    "SCALES",
    "cam_grid",
    "cam_scales",
    "gradcam_report",
    "misclassified_gallery",
    "training_curves",
    "accuracy_vs_time",
    "per_class_bars",
    "image_grid",
    "panel_rows",
]

TITLE = 12  # axes titles
LABEL = 12  # axis labels, tick labels, legends
SUPTITLE = 14
MAX_WIDTH = 12.0  # inches; the book shrinks wider figures, and their text with them


# --------------------------------------------------------------------------- arrays


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _as_float_rgb(image) -> np.ndarray:
    """uint8 or float [0, 1] image, HWC / HW / CHW -> float32 (H, W, 3) in [0, 1]."""
    arr = _numpy(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # CHW tensor layout
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"Expected an image (H, W, 3), (H, W) or (3, H, W); got {arr.shape}.")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if arr.size and (arr.min() < -1e-3 or arr.max() > 1 + 1e-3):
        raise ValueError(
            f"Float images must be in [0, 1] to be shown, got {arr.min():.2f}..{arr.max():.2f}"
            "; normalised images need s9lib.data.augment.unstandardize first.")
    return np.clip(arr, 0.0, 1.0)


def _as_map(cam_map, shape: tuple[int, int]) -> np.ndarray:
    """A (h, w) CAM in [0, 1] as float32 at ``shape`` (bilinear if it must be resized)."""
    m = _numpy(cam_map).astype(np.float32)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"A CAM map must be (H, W); got {m.shape}. Index the batch first, "
                         "e.g. result.maps['layer4'][i].")
    if m.shape != tuple(shape):
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.nan_to_num(m), 0.0, 1.0)


def heatmap(cam_map) -> np.ndarray:
    """The JET colouring of a [0, 1] map as float32 RGB (H, W, 3), as pytorch-grad-cam does it.

    ``np.uint8(255 * mask)`` truncates (it does not round): kept so colours match exactly.
    """
    m = _as_map(cam_map, _numpy(cam_map).shape[-2:])
    jet = cv2.applyColorMap(np.uint8(255 * m), cv2.COLORMAP_JET)
    return cv2.cvtColor(jet, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def overlay(image, cam_map, alpha: float = 0.5) -> np.ndarray:
    """The CAM drawn over the image: float32 RGB (H, W, 3) in [0, 1].

    ``alpha`` is the heatmap's weight: ``alpha * jet(map) + (1 - alpha) * image``, then
    divided by its maximum, exactly pytorch-grad-cam's
    ``show_cam_on_image(image, map, use_rgb=True, image_weight=1 - alpha) / 255`` (up to its
    final rounding to uint8). ``image``: uint8, or float in [0, 1]; gray is allowed. A map of
    another size than the image is resized bilinearly (a 4x4 layer4 map onto a photo).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha is the heatmap's weight and must be in [0, 1], got {alpha}.")
    img = _as_float_rgb(image)
    heat = heatmap(_as_map(cam_map, img.shape[:2]))
    out = alpha * heat + (1.0 - alpha) * img
    peak = float(out.max())
    return (out / peak if peak > 0 else out).astype(np.float32)


# --------------------------------------------------------------------------- scales

#: The two ways a figure can scale its CAMs (see the module docstring).
SCALES = ("per-image", "shared")
PER_IMAGE_LABEL = ("min-max per image: 0 = each map's weakest cell (not necessarily zero),\n"
                   "1 = its strongest; colours cannot be compared between images")
SHARED_LABEL = "CAM value on one scale for all images: 0 = no evidence"


def _check_scale(scale, name: str = "scale") -> str:
    if scale not in SCALES:
        raise ValueError(
            f"{name} must be 'per-image' (each map min-max scaled to its own range) or 'shared' "
            f"(one scale from 0 for every image), got {scale!r}.")
    return scale


def jet_colormap() -> ListedColormap:
    """OpenCV's JET as a matplotlib colour map: the colours :func:`heatmap` paints, for colour
    bars (256 entries, read from ``cv2.applyColorMap`` itself, so the bar and the maps agree)."""
    ramp = np.arange(256, dtype=np.uint8)[:, None]
    bgr = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[:, 0]
    return ListedColormap(bgr[:, ::-1].astype(np.float32) / 255.0, name="opencv_jet")


def shared_maps(result, layer: str, n: int | None = None) -> tuple[np.ndarray, float]:
    """The first ``n`` maps of ``layer`` on one shared scale: ``(maps, vmax)``.

    ``maps``: float32 (n, h, w) at the layer's resolution (the drawing functions upsample
    them bilinearly, as ``CamResult.maps`` are), ``raw / vmax`` with ``vmax`` the largest value
    of ``result.raw[layer][:n]``: 0 is zero evidence and 1 the strongest cell among these
    images, and equal values get equal colours in every image. All maps zero: ``vmax`` is 0
    and the maps are zeros (no NaN).
    """
    raw = _numpy(result.raw[layer])[:n].astype(np.float32)
    raw = np.clip(np.nan_to_num(raw), 0.0, None)  # raw CAMs are rectified; be safe
    vmax = float(raw.max()) if raw.size else 0.0
    return (raw / vmax if vmax > 0 else np.zeros_like(raw)), vmax


def cam_colorbar(fig: Figure, axes, scale: str = "per-image", *, vmax: float | None = None,
                 label: str | None = None, location: str = "bottom", shrink: float = 0.8):
    """Add the colour bar of CAM panels ``axes`` to ``fig``; returns the ``Colorbar``.

    ``scale="per-image"``: a 0..1 bar saying that each map was min-max scaled on its own.
    ``scale="shared"``: a bar from 0 to ``vmax`` (the value drawn dark red, in the units of
    ``CamResult.raw``; see :func:`shared_maps`). ``label`` replaces the default label. Use it
    for figures built by hand from :func:`overlay` panels, so that they say what the colours
    mean as the library's figures do.
    """
    _check_scale(scale)
    if scale == "shared":
        if vmax is None or not np.isfinite(vmax) or vmax < 0:
            raise ValueError(f"scale='shared' needs vmax, the largest CAM value drawn (>= 0), "
                             f"got {vmax!r}; shared_maps() returns it.")
        norm = Normalize(0.0, vmax if vmax > 0 else 1.0)
        label = SHARED_LABEL if label is None else label
    else:
        norm = Normalize(0.0, 1.0)
        label = PER_IMAGE_LABEL if label is None else label
    axes = list(np.ravel(axes))
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=jet_colormap()), ax=axes,
                        location=location, shrink=shrink, aspect=40 if location in
                        ("bottom", "top") else 20)
    cbar.set_label(label, fontsize=LABEL - 1)
    cbar.ax.tick_params(labelsize=LABEL - 2)
    return cbar


def _scaled_maps(result, layer: str, n: int, scale: str) -> tuple[np.ndarray, float]:
    """The first ``n`` maps of ``layer`` as the figure draws them, and the scale's top value
    (1.0 per image; the largest raw value when shared)."""
    if _check_scale(scale) == "shared":
        return shared_maps(result, layer, n)
    return _numpy(result.maps[layer])[:n].astype(np.float32), 1.0


# --------------------------------------------------------------------------- helpers


def _figure(ncols: int, nrows: int, cell: float, extra_height: float = 0.0,
            label_width: float = 0.0) -> Figure:
    cell = min(cell, (MAX_WIDTH - label_width) / max(ncols, 1))
    return Figure(figsize=(cell * ncols + label_width, cell * nrows + extra_height),
                  layout="constrained")


def _show(ax, image, title: str | None = None, color: str = "black",
          interpolation: str = "nearest") -> None:
    ax.imshow(image, interpolation=interpolation)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=TITLE, color=color)


def _row_label(ax, text: str, color: str = "black") -> None:
    """A row's label, left of its first panel and centred on it: it cannot be read as the
    caption of the row above or below (titles stacked between rows can)."""
    ax.set_ylabel(text, rotation=0, ha="right", va="center", labelpad=8, fontsize=LABEL,
                  color=color)


def _class_name(classes: Sequence[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def _layers_of(result, layers) -> list[str]:
    if layers is None:
        layers = getattr(result, "layers", None) or list(result.maps)
    layers = [layers] if isinstance(layers, str) else list(layers)
    missing = [name for name in layers if name not in result.maps]
    if missing:
        raise ValueError(f"No maps for {missing} in this result (it has {list(result.maps)}); "
                         "run the CAM with those layers.")
    return layers


def _method_label(result) -> str:
    return {"gradcam": "GradCAM", "gradcam++": "GradCAM++"}.get(
        getattr(result, "method", ""), "CAM")


# --------------------------------------------------------------------------- CAM figures


def _grid_row_label(classes, probs_i, target: int, true_i) -> tuple[str, str]:
    """The label left of a ``cam_grid`` row: prediction and probability, true class (red when
    wrong), and the explained class when it is not the prediction."""
    pred = int(probs_i.argmax())
    title = f"{_class_name(classes, pred)} {probs_i[pred]:.0%}"
    color = "black"
    if true_i is not None:
        title += f"\n(true: {_class_name(classes, int(true_i))})"
        color = "black" if int(true_i) == pred else "crimson"
    if target != pred:
        title += f"\nexplains: {_class_name(classes, target)}"
    return title, color


def cam_grid(images, result, layers: Sequence[str] | str | None = None,
             classes: Sequence[str] = CLASSES, *, true: Sequence[int] | None = None,
             heatmaps: bool = True, alpha: float = 0.5, max_images: int = 8,
             cell: float = 1.6, scale: str = "per-image", colorbar: bool = True) -> Figure:
    """One row per image: the image, then for each layer its heatmap and its overlay.

    ``images``: what the CAMs were computed for, for display (uint8 (B, H, W, 3) or float in
    [0, 1]; see ``s9lib.data.augment.unstandardize``). ``result``: a ``CamResult``. Each row's label,
    left of the image, gives the predicted class and its probability (and the true class with
    ``true``, red when wrong; and the explained class when ``targets`` was not the prediction).
    ``heatmaps=False`` shows overlays only. ``scale``: ``"per-image"`` (each map min-max
    scaled on its own; one colour bar) or ``"shared"`` (per layer, every row on one scale from
    0 to the largest raw value shown; one colour bar per layer, in raw CAM units).
    """
    layers = _layers_of(result, layers)
    n = min(len(images), max_images)
    probs = result.probs.detach().cpu().numpy()
    targets = _numpy(result.targets).astype(int)
    scaled = {name: _scaled_maps(result, name, n, scale) for name in layers}
    per_layer = 2 if heatmaps else 1
    ncols = 1 + per_layer * len(layers)
    fig = _figure(ncols, n, cell, extra_height=0.3 + (0.9 if colorbar else 0), label_width=1.6)
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        img = _as_float_rgb(images[i])
        _show(axes[i, 0], img)
        _row_label(axes[i, 0], *_grid_row_label(classes, probs[i], targets[i],
                                                None if true is None else true[i]))
        for j, name in enumerate(layers):
            cam = scaled[name][0][i]
            col = 1 + per_layer * j
            if heatmaps:
                _show(axes[i, col], heatmap(_as_map(cam, img.shape[:2])),
                      f"{name}\nheatmap" if i == 0 else None)
            _show(axes[i, col + per_layer - 1], overlay(img, cam, alpha),
                  f"{name}\noverlay" if i == 0 else None)
    if colorbar:
        _grid_colorbars(fig, axes, layers, scaled, scale, per_layer)
    explained = ("predicted class" if (targets[:n] == probs[:n].argmax(1)).all()
                 else "explained class")
    fig.suptitle(f"{_method_label(result)}: {explained} and where it looked", fontsize=SUPTITLE)
    return fig


def _grid_colorbars(fig, axes, layers, scaled, scale: str, per_layer: int) -> None:
    """One colour bar under every CAM column (per image), or one per layer (shared)."""
    if scale == "per-image":
        cam_colorbar(fig, axes[:, 1:], "per-image")
        return
    for j, name in enumerate(layers):
        cols = axes[:, 1 + per_layer * j: 1 + per_layer * (j + 1)]
        cam_colorbar(fig, cols, "shared", vmax=scaled[name][1],
                     label=f"{name}: CAM value,\nshared; 0 = none")


def gradcam_report(photo, image32, result, index: int = 0,
                   layers: Sequence[str] | str | None = None,
                   classes: Sequence[str] = CLASSES, *,
                   crop_box: tuple[int, int, int] | None = None, name: str = "",
                   top_k: int = 3, alpha: float = 0.5, scale: str = "per-image") -> Figure:
    """One photo explained (what ``python -m s9lib gradcam`` writes).

    Left: the photo with the centre crop the model saw outlined (``crop_box`` = ``(top,
    left, side)``, see ``s9lib.data.photos.center_crop_box``). Then the 32x32 model input above
    the top-``top_k`` probabilities, then per layer the heatmap (top) and overlay (bottom).
    ``scale="per-image"``: each map min-max scaled, one colour bar for all; ``"shared"``: each
    layer drawn from 0 (no evidence) to its largest raw value, one colour bar per layer.
    """
    layers = _layers_of(result, layers)
    _check_scale(scale)
    probs = result.probs[index].detach().cpu().numpy()
    pred = int(probs.argmax())
    target = int(_numpy(result.targets)[index])
    photo_f = _as_float_rgb(photo)
    # the photo spans both rows: give a landscape photo the width to use that height
    photo_ratio = float(np.clip(1.9 * photo_f.shape[1] / photo_f.shape[0], 1.3, 2.6))
    fig = Figure(figsize=(MAX_WIDTH, 6.2), layout="constrained")
    grid = fig.add_gridspec(2, 2 + len(layers), width_ratios=[photo_ratio, 1.1] + [1] * len(layers))
    _photo_panel(fig.add_subplot(grid[:, 0]), photo_f, crop_box)
    img = _as_float_rgb(image32)
    _show(fig.add_subplot(grid[0, 1]), img, f"model input {img.shape[1]}x{img.shape[0]}")
    _top_k_bars(fig.add_subplot(grid[1, 1]), probs, pred, classes, top_k)
    cam_axes = []
    for j, layer in enumerate(layers):
        cam, vmax = _scaled_maps(_OneImage(result, layer, index), layer, 1, scale)
        # an all-zero map is a finding (no positive evidence here), not a blank plot
        empty = "\n(all zero)" if not np.any(_numpy(result.raw[layer][index]) > 0) else ""
        pair = (fig.add_subplot(grid[0, 2 + j]), fig.add_subplot(grid[1, 2 + j]))
        _show(pair[0], heatmap(_as_map(cam[0], img.shape[:2])), f"{layer} heatmap{empty}")
        _show(pair[1], overlay(img, cam[0], alpha), f"{layer} overlay")
        cam_axes.append(pair)
        if scale == "shared":
            cam_colorbar(fig, pair, "shared", vmax=vmax, label=f"{layer}: CAM value\n0 = none")
    if scale == "per-image":
        cam_colorbar(fig, cam_axes, "per-image", shrink=0.95)
    what = f"explains '{_class_name(classes, target)}'" if target != pred else "explains it"
    head = f"{name}: " if name else ""
    fig.suptitle(f"{head}predicted {_class_name(classes, pred)} ({probs[pred]:.1%}); "
                 f"{_method_label(result)} {what}", fontsize=SUPTITLE)
    return fig


class _OneImage:
    """The maps of one image of a ``CamResult`` (what :func:`_scaled_maps` reads)."""

    def __init__(self, result, layer: str, index: int):
        self.maps = {layer: _numpy(result.maps[layer])[index:index + 1]}
        self.raw = {layer: _numpy(result.raw[layer])[index:index + 1]}


def cam_scales(images, result, layer: str = "layer4", classes: Sequence[str] = CLASSES, *,
               max_images: int = 8, alpha: float = 0.5, cell: float = 1.4) -> Figure:
    """One layer's maps drawn twice, to show what a colour means: min-max scaled per image
    (middle row) and on one shared scale (bottom row), each row with its colour bar.

    Top row: the images, titled with the explained class. Middle: ``result.maps``, as the
    other figures draw them by default; the note in each panel is the weakest cell's share of
    the strongest (``raw.min() / raw.max()``), the evidence that dark blue stands for there.
    Bottom: :func:`shared_maps`, where dark blue is zero evidence and equal values have equal
    colours in every image; the note is the map's largest value, in raw CAM units.
    """
    _layers_of(result, [layer])
    n = min(len(images), max_images)
    per_image = _numpy(result.maps[layer])[:n]
    shared, vmax = shared_maps(result, layer, n)
    raw = _numpy(result.raw[layer])[:n].reshape(n, -1).astype(np.float64)
    targets = _numpy(result.targets).astype(int)
    fig = _figure(n, 3, cell, extra_height=2.2, label_width=1.6)
    axes = fig.subplots(3, n, squeeze=False)
    for i in range(n):
        img = _as_float_rgb(images[i])
        lo, hi = float(raw[i].min()), float(raw[i].max())
        _show(axes[0, i], img, _class_name(classes, int(targets[i])))
        _show(axes[1, i], overlay(img, per_image[i], alpha))
        _show(axes[2, i], overlay(img, shared[i], alpha))
        _note(axes[1, i], f"blue={lo / hi:.0%}" if hi > 0 else "all zero")
        _note(axes[2, i], f"max {hi:.2g}")
    for r, text in enumerate(["image", "per image\n(min-max)", "shared\n(0 to max)"]):
        _row_label(axes[r, 0], text)
    cam_colorbar(fig, axes[1], "per-image", shrink=0.7)
    cam_colorbar(fig, axes[2], "shared", vmax=vmax, shrink=0.7,
                 label=f"{layer}: CAM value ReLU(Σ α·A), one scale for all images: "
                       "0 (dark blue) = no evidence")
    fig.suptitle(f"{_method_label(result)} at {layer}: the same maps on two scales",
                 fontsize=SUPTITLE)
    return fig


def _note(ax, text: str, color: str = "black") -> None:
    """A short text inside a panel's bottom edge (it cannot be read as the next row's)."""
    ax.text(0.5, 0.03, text, transform=ax.transAxes, ha="center", va="bottom",
            fontsize=LABEL - 1, color=color, bbox=dict(facecolor="white", alpha=0.8, lw=0, pad=1.5))


def _photo_panel(ax, photo: np.ndarray, crop_box: tuple[int, int, int] | None) -> None:
    """The full photo, with the centre crop the model sees outlined."""
    _show(ax, photo, "photo", interpolation="antialiased")
    if crop_box is not None:
        top, left, side = crop_box
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False,
                               edgecolor="yellow", linewidth=2.5, linestyle="--"))
        ax.set_xlabel("dashed: the centre crop the model sees", fontsize=LABEL - 1)


def _top_k_bars(ax, probs: np.ndarray, pred: int, classes: Sequence[str], top_k: int) -> None:
    """Horizontal bars of the ``top_k`` class probabilities, the prediction in red."""
    top = np.argsort(-probs)[:top_k][::-1]
    ax.barh(range(len(top)), probs[top] * 100,
            color=["tab:red" if c == pred else "tab:gray" for c in top])
    ax.set_yticks(range(len(top)), [_class_name(classes, c) for c in top], fontsize=LABEL)
    ax.set_xlim(0, 100)
    ax.set_xlabel("probability (%)", fontsize=LABEL - 1)
    ax.tick_params(axis="x", labelsize=LABEL - 2)
    ax.set_title(f"top-{len(top)}", fontsize=TITLE)
    for y, c in enumerate(top):
        ax.text(min(probs[c] * 100 + 2, 70), y, f"{probs[c]:.1%}", va="center",
                fontsize=LABEL - 2)


def misclassified_gallery(images, true: Sequence[int], pred: Sequence[int],
                          confidence: Sequence[float], classes: Sequence[str] = CLASSES,
                          cams=None, *, ncols: int = 6, max_items: int = 24,
                          alpha: float = 0.5, colorbar: bool = True) -> Figure:
    """The mistakes: each tile titled with the true class and the (wrong) prediction.

    Pass the images of ``s9lib.inference.misclassified(...)`` (most confident first). With
    ``cams`` ((N, H, W) maps, e.g. ``result.maps['layer3']`` for the predicted class), each
    mistake gets a second tile: the overlay showing what the wrong prediction looked at, and
    the figure a colour bar for maps min-max scaled per image (what ``result.maps`` holds).
    """
    n = min(len(images), max_items)
    if n == 0:
        fig = Figure(figsize=(6, 1), layout="constrained")
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=LABEL)
        return fig
    if cams is not None and len(cams) < n:
        raise ValueError(f"{len(cams)} CAM maps for {n} images; pass one map per image.")
    per_item = 1 if cams is None else 2
    items_per_row = max(1, min(ncols, n))
    nrows = -(-n // items_per_row)
    width = items_per_row * per_item
    bar = cams is not None and colorbar
    fig = _figure(width, nrows, 1.9, extra_height=0.5 * nrows + (0.9 if bar else 0))
    grid = fig.add_gridspec(nrows, width)
    for k in range(n):
        r, c = divmod(k, items_per_row)
        img = _as_float_rgb(images[k])
        title = (f"true {_class_name(classes, int(true[k]))}\n"
                 f"pred {_class_name(classes, int(pred[k]))} {float(confidence[k]):.0%}")
        _show(fig.add_subplot(grid[r, c * per_item]), img, title)
        if cams is not None:
            _show(fig.add_subplot(grid[r, c * per_item + 1]), overlay(img, cams[k], alpha),
                  f"why\n{_class_name(classes, int(pred[k]))}?")
    if bar:
        cam_colorbar(fig, fig.axes, "per-image")
    fig.suptitle(f"{n} misclassified images, most confident first", fontsize=SUPTITLE)
    return fig


# --------------------------------------------------------------------------- training


def _histories(histories, labels) -> list[tuple[str, object]]:
    if isinstance(histories, Mapping):
        return [(str(k), v) for k, v in histories.items()]
    if hasattr(histories, "epochs") and hasattr(histories, "column"):
        histories = [histories]
    histories = list(histories)
    if labels is None:
        labels = [(h.recipe or {}).get("name") or f"run {i + 1}" for i, h in enumerate(histories)]
    if len(labels) != len(histories):
        raise ValueError(f"{len(labels)} labels for {len(histories)} histories.")
    return list(zip(map(str, labels), histories))


def training_curves(histories, labels: Sequence[str] | None = None) -> Figure:
    """Loss and accuracy per epoch, train (dashed) and test (solid), one colour per run.

    ``histories``: an ``s9lib.training.history.History``, a list of them, or ``{label: History}`` (the
    course-vs-fast comparison). Labels default to each run's recipe name.
    """
    runs = _histories(histories, labels)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = [f"C{i}" for i in range(10)]
    for i, (label, h) in enumerate(runs):
        color = colors[i % len(colors)]
        epochs = h.column("epoch")
        ax_loss.plot(epochs, h.column("train_loss"), "--", color=color, lw=2)
        ax_loss.plot(epochs, h.column("test_loss"), "-", color=color, lw=2)
        ax_acc.plot(epochs, np.array(h.column("train_acc")) * 100, "--", color=color, lw=2)
        ax_acc.plot(epochs, np.array(h.column("test_acc")) * 100, "-", color=color, lw=2,
                    marker="o" if len(epochs) == 1 else None)
    for ax, name in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch", fontsize=LABEL)
        ax.set_ylabel(name, fontsize=LABEL)
        ax.tick_params(labelsize=LABEL - 1)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=colors[i % len(colors)], lw=3, label=label)
               for i, (label, _) in enumerate(runs)]
    handles += [Line2D([], [], color="gray", ls="--", lw=2, label="train"),
                Line2D([], [], color="gray", ls="-", lw=2, label="test")]
    ax_acc.legend(handles=handles, fontsize=LABEL - 1, loc="lower right")
    fig.suptitle("Training curves", fontsize=SUPTITLE)
    return fig


def accuracy_vs_time(histories, labels: Sequence[str] | None = None, *,
                     minutes_log: bool = True) -> Figure:
    """Test accuracy against epochs (left) and against cumulative training time (right).

    Why both: runs on different devices and recipes compare fairly only on both axes; an
    epoch on a 2-core CPU takes ten times a GPU epoch, and a recipe that wins per epoch can
    lose per minute. The time axis is logarithmic by default for that reason.
    ``histories`` as in :func:`training_curves`.
    """
    runs = _histories(histories, labels)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_ep, ax_t = fig.subplots(1, 2, sharey=True)
    for i, (label, h) in enumerate(runs):
        acc = np.array(h.column("test_acc")) * 100
        minutes = np.cumsum(h.column("seconds")) / 60
        style = dict(color=f"C{i % 10}", lw=2, marker="o" if len(acc) <= 20 else None, ms=4)
        ax_ep.plot(h.column("epoch"), acc, label=label, **style)
        ax_t.plot(minutes, acc, label=label, **style)
    ax_ep.set_xlabel("epoch", fontsize=LABEL)
    ax_ep.set_ylabel("test accuracy (%)", fontsize=LABEL)
    ax_t.set_xlabel("training time (minutes" + (", log scale)" if minutes_log else ")"),
                    fontsize=LABEL)
    if minutes_log:
        ax_t.set_xscale("log")
    for ax in (ax_ep, ax_t):
        ax.tick_params(labelsize=LABEL - 1)
        ax.grid(alpha=0.3, which="both")
    ax_ep.legend(fontsize=LABEL - 1, loc="lower right")
    fig.suptitle("Test accuracy per epoch and per minute of training", fontsize=SUPTITLE)
    return fig


def per_class_bars(acc, classes: Sequence[str] = CLASSES, *,
                   title: str = "Test accuracy per class") -> Figure:
    """Accuracy per class as bars (values printed on them); ``acc`` in [0, 1].

    ``acc``: a (C,) array (``s9lib.inference.per_class_accuracy``), or ``{label: array}`` for
    grouped bars comparing runs. The dotted line is each run's mean over classes.
    """
    series = ({str(k): np.asarray(v, float) for k, v in acc.items()} if isinstance(acc, Mapping)
              else {"": np.asarray(acc, float)})
    for label, values in series.items():
        if values.shape != (len(classes),):
            raise ValueError(f"{values.shape[0] if values.ndim else 0} accuracies for "
                             f"{len(classes)} classes{' (' + label + ')' if label else ''}.")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        pos = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(pos, values * 100, width, label=label or None, color=f"C{i}")
        ax.bar_label(bars, [f"{v:.0%}" if np.isfinite(v) else "–" for v in values],
                     fontsize=LABEL - 2 if len(series) == 1 else LABEL - 4, padding=2)
        ax.axhline(np.nanmean(values) * 100, color=f"C{i}", ls=":", lw=1.5)
    ax.set_xticks(x, classes, fontsize=LABEL, rotation=20)
    ax.set_ylabel("accuracy (%)", fontsize=LABEL)
    ax.set_ylim(0, 118)  # room above 100 % for the value labels and the legend
    ax.tick_params(axis="y", labelsize=LABEL - 1)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=LABEL - 1, loc="upper right", ncols=len(series))
    ax.set_title(title, fontsize=SUPTITLE)
    return fig


# --------------------------------------------------------------------------- grids


def _check_panel_rows(rows, row_labels, col_titles, row_colors, notes) -> tuple[int, int]:
    """``(rows, columns)`` of a ``panel_rows`` call, after checking that everything fits."""
    n_rows = len(rows)
    if n_rows == 0 or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("panel_rows needs at least one row, and rows of equal length.")
    for name, given in (("row_labels", row_labels), ("row_colors", row_colors)):
        if given is not None and len(given) != n_rows:
            raise ValueError(f"{len(given)} {name} for {n_rows} rows.")
    n_cols = len(rows[0])
    if notes is not None and (len(notes) != n_rows or any(len(n) != n_cols for n in notes)):
        raise ValueError(f"notes must be {n_rows} rows of {n_cols}, like the images.")
    if col_titles is not None and len(col_titles) != n_cols:
        raise ValueError(f"{len(col_titles)} col_titles for {n_cols} columns.")
    return n_rows, n_cols


def panel_rows(rows, row_labels: Sequence[str] | None = None,
               col_titles: Sequence[str] | None = None, *,
               row_colors: Sequence[str] | None = None, notes=None, cell: float = 1.6,
               suptitle: str | None = None, colorbar: str | None = None,
               cam_max: float | None = None, colorbar_label: str | None = None) -> Figure:
    """Rows of images that belong together: ``rows[r][c]``, uint8 or float [0, 1] (H, W, 3).

    The book's layout for "one image per row, several views of it": each row's label sits
    left of its first panel (``row_colors`` to mark, say, a wrong prediction in red), and
    column titles only above the first row, so no caption can be read as belonging to the
    neighbouring row. ``notes[r][c]``: a short text per panel (a score), drawn *inside* the
    panel's bottom edge for the same reason; ``None`` or ``""`` for none, or a
    ``(text, colour)`` pair. Panels are drawn with nearest upsampling.

    Panels that hold CAM overlays need a colour bar: ``colorbar="per-image"`` for maps
    min-max scaled per image (``CamResult.maps``), ``colorbar="shared"`` with ``cam_max`` (the
    value drawn dark red) for maps on one scale (:func:`shared_maps`); ``colorbar_label``
    replaces the default label. Default ``None``: no bar, for rows of plain images.
    """
    n_rows, n_cols = _check_panel_rows(rows, row_labels, col_titles, row_colors, notes)
    if colorbar is not None and _check_scale(colorbar, "colorbar") == "shared" and cam_max is None:
        raise ValueError("colorbar='shared' needs cam_max, the CAM value drawn dark red "
                         "(shared_maps() returns it).")
    labelled = row_labels is not None
    fig = _figure(n_cols, n_rows, cell, label_width=1.6 if labelled else 0.0,
                  extra_height=(0.5 if col_titles else 0) + (0.4 if suptitle else 0)
                  + (0.9 if colorbar else 0))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            _show(axes[r, c], _as_float_rgb(image),
                  col_titles[c] if (col_titles is not None and r == 0) else None)
            note = notes[r][c] if notes is not None else None
            if note:
                _note(axes[r, c], *(note if isinstance(note, tuple) else (note,)))
        if labelled:
            _row_label(axes[r, 0], row_labels[r], row_colors[r] if row_colors else "black")
    if colorbar is not None:
        cam_colorbar(fig, axes, colorbar, vmax=cam_max, label=colorbar_label)
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE)
    return fig


def image_grid(images, titles: Sequence[str] | None = None, ncols: int = 8, *,
               cell: float = 1.5, suptitle: str | None = None) -> Figure:
    """Images in a grid (augmentation galleries): uint8 or float [0, 1], any sizes.

    Exactly one axes per image (no empty axes in the last row), drawn with nearest
    upsampling so 32x32 pixels stay sharp.
    """
    n = len(images)
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images.")
    if n == 0:
        raise ValueError("image_grid needs at least one image.")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = _figure(ncols, nrows, cell, extra_height=(0.35 * nrows if titles else 0)
                  + (0.4 if suptitle else 0))
    grid = fig.add_gridspec(nrows, ncols)
    for k in range(n):
        r, c = divmod(k, ncols)
        _show(fig.add_subplot(grid[r, c]), _as_float_rgb(images[k]),
              titles[k] if titles is not None else None)
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE)
    return fig
