"""Sanity checks: model-parameter randomisation (Adebayo et al. 2018), for every method.

The question: does a map depend on what the model *learned*? If a method gives nearly the same
map after the weights are replaced by random ones, it shows the image (edges, the layer's
receptive fields), not the model's reasons, however plausible it looks.

The test, in Adebayo et al.'s two variants (``mode``), on a deep copy of the model (the
caller's model is never changed):

* **cascading** (:func:`cascading_randomization`): re-initialise the parameters from the
  logits down, cumulatively, one stage at a time: ``linear``, then ``+layer4``, ``+layer3``,
  ``+layer2``, ``+layer1``, ``+stem`` (``conv1`` and ``bn1``);
* **independent** (:func:`independent_randomization`): re-initialise one stage at a time,
  every other stage keeping its trained weights: ``linear``, ``layer4``, ..., ``stem``. It
  tells *which* stage a map depends on; the cascade tells how much is left when everything
  above a stage is gone. Stage ``k`` gets the same random weights in both variants.

After each step, compute every method's maps for the same images and the same classes (the
trained model's predictions, so only the model changes) and compare them with the trained
model's maps, image by image:

* **Spearman rank correlation** of the two (H, W) maps (ties get their average rank; a
  constant map has no ranks, so an image whose map is constant on either side is left out of
  that mean and the count ``n`` says how many were left);
* **SSIM** (``skimage.metrics.structural_similarity``, ``data_range=1``): every map of
  :func:`s9lib.explain.methods.explain_map` is min-max scaled to [0, 1] per image, the
  gradient methods' ``sum_c |attribution_c|`` included, which is what ``data_range=1`` assumes.

Methods: any name of :data:`s9lib.explain.methods.ALL_METHODS` (the CAMs at ``layer``; the
gradient methods at pixel level; the controls). The default stays the CAMs
(:data:`SANITY_METHODS`): the gradient methods cost many backward passes per image
(Integrated Gradients ``steps``, SmoothGrad ``samples``), so a caller asks for them. SmoothGrad
draws the *same* noise (a generator seeded with ``seed``) for the trained and every randomised
model, so only the model changes; the ``noise`` control draws afresh for each model, as a map
that is pure noise would.

How to read it. High similarity after randomisation is a *failure*: the map does not depend
on the weights that were destroyed. The ``edge`` control shows the extreme: it never reads the
model, so its Spearman and SSIM are exactly 1 at every step (it fails by construction). Low
similarity is a *pass*, but a pass is necessary, not sufficient: the ``noise`` control passes
while explaining nothing (Binder et al., CVPR 2023: uninformative maps score well on these
checks, and top-down randomisation keeps activation scales, so even a good method need not
drop to 0). For scale, the report also gives a floor: the same two measures between each
trained-model map and the trained-model map of *another* image (the next one), i.e. how alike
two unrelated maps of this method already are (a method with a centre bias scores well above
0 there; the noise control scores about 0 there too, which gives it away).

Choices, so they are not rediscovered: parameters are re-initialised with each module's own
``reset_parameters()`` (PyTorch's default initialisation, i.e. the network before training;
Adebayo et al. used a truncated normal) and BatchNorm running statistics are reset to mean 0,
variance 1, as in a fresh model. Each stage uses its own seed (``seed + step``), drawn inside
``torch.random.fork_rng`` so the caller's random state is untouched. The model's input
statistics (buffers of the model itself, not of a stage) are never randomised.
The data-randomisation test of the same paper (:func:`data_randomization`) compares the maps of
the trained model with those of a model trained on *permuted* labels (which learned nothing
about the classes, only to memorise its training images): the training run is the caller's
(``benchmarks/data_randomization.py`` makes one), the comparison is the same Spearman and SSIM.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.metrics import structural_similarity
from torch import nn

from ..inference import logits_of
from ..explain.cam import METHODS
from ..explain.methods import explain_map, resolve_method
from .stats import Interval, mean_interval

__all__ = ["CASCADE", "MODES", "randomize_", "cascade", "independent", "spearman", "ssim",
           "SanityReport", "randomization", "cascading_randomization",
           "independent_randomization", "data_randomization", "predicted_classes",
           "SANITY_METHODS"]

#: (step label, module names re-initialised at that step), from the logits down.
CASCADE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("linear", ("linear",)),
    ("+layer4", ("layer4",)),
    ("+layer3", ("layer3",)),
    ("+layer2", ("layer2",)),
    ("+layer1", ("layer1",)),
    ("+stem", ("conv1", "bn1")),
)

#: The default methods: the CAMs (pass ``s9lib.explain.methods.ALL_METHODS`` for every one).
SANITY_METHODS = tuple(METHODS)
#: Adebayo et al.'s two variants: stages re-initialised cumulatively, or one at a time.
MODES = ("cascading", "independent")


# --------------------------------------------------------------------------- randomisation


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Re-initialise, in place, every parameter and BN statistic of ``module`` and below.

    Uses each sub-module's ``reset_parameters()`` / ``reset_running_stats()`` (the default
    initialisation of a new model), seeded with ``seed`` without touching the global RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            if hasattr(sub, "reset_running_stats"):
                sub.reset_running_stats()
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    return module


def cascade(model: nn.Module, seed: int = 0,
            steps: Sequence[tuple[str, Sequence[str]]] = CASCADE
            ) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(label, model)`` with the stages re-initialised cumulatively, logits first.

    One deep copy is made and randomised further at every step (the caller's ``model`` is never
    changed), so take what you need from each yielded model before asking for the next.
    """
    _check_steps(model, steps)
    copied = copy.deepcopy(model)
    for step, (label, names) in enumerate(steps):
        for name in names:
            randomize_(copied.get_submodule(name), seed + step)
        yield label, copied


def independent(model: nn.Module, seed: int = 0,
                steps: Sequence[tuple[str, Sequence[str]]] = CASCADE
                ) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(label, model)`` with only that step's stage re-initialised, the others trained.

    Adebayo et al.'s independent variant. Stage ``k`` gets the seed it gets in :func:`cascade`
    (``seed + k``), so its random weights are the same in both variants. Labels lose the
    cascade's ``+`` (``"layer4"``, not ``"+layer4"``). One deep copy is made; after each step
    its stage is restored from ``model`` (which is never changed), so take what you need from
    each yielded model before asking for the next.
    """
    _check_steps(model, steps)
    copied = copy.deepcopy(model)
    for step, (label, names) in enumerate(steps):
        for name in names:
            randomize_(copied.get_submodule(name), seed + step)
        yield label.lstrip("+"), copied
        for name in names:
            copied.get_submodule(name).load_state_dict(model.get_submodule(name).state_dict())


def _check_steps(model: nn.Module, steps) -> None:
    by_name = dict(model.named_modules())
    for _, names in steps:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"Cannot randomise {missing}: not modules of this model; the "
                             f"steps need {sorted({n for _, ns in steps for n in ns})}.")


# --------------------------------------------------------------------------- similarity


def _as_batch(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a.detach().cpu() if torch.is_tensor(a) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if torch.is_tensor(b) else b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"Expected two (B, H, W) batches of maps of one shape, got "
                         f"{a.shape} and {b.shape}.")
    return a, b


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation of each pair of (H, W) maps: (B,) with NaN for a constant map.

    Average ranks for ties (ReLU'd maps have many exact zeros), then Pearson on the ranks.
    """
    a, b = _as_batch(a, b)
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ra * rb).sum(axis=1) / norm, np.nan)


def ssim(a, b) -> np.ndarray:
    """SSIM of each pair of (H, W) maps in [0, 1] (scikit-image, ``data_range=1``): (B,)."""
    a, b = _as_batch(a, b)
    return np.array([structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b)])


# --------------------------------------------------------------------------- the report


@dataclass
class SanityReport:
    """Similarity of each method's maps to the trained model's, per randomisation step.

    ``mode``: which variant, ``"cascading"`` (``steps[i]`` and every step before it are
    random), ``"independent"`` (only ``steps[i]`` is random) or ``"data"`` (one step: a model
    trained on permuted labels, :func:`data_randomization`). ``spearman[method][i]`` /
    ``ssim[method][i]``: an :class:`~s9lib.evaluate.stats.Interval` (mean over the images
    where the measure is defined, bootstrap 95 % interval) after ``steps[i]``.
    ``floor[method]``: {"spearman": Interval, "ssim": Interval} between maps of different
    images of the trained model (how alike unrelated maps already are). ``layer``: the CAMs'
    layer (and Guided GradCAM's).
    """

    layer: str
    n: int
    seed: int
    steps: list[str]
    spearman: dict[str, list[Interval]]
    ssim: dict[str, list[Interval]]
    floor: dict[str, dict[str, Interval]] = field(default_factory=dict)
    mode: str = "cascading"
    #: every image's values, for paired comparisons (``s9lib.evaluate.stats``): {method:
    #: {"spearman": [[one value per image] per step], "ssim": likewise, "floor_spearman":
    #: [one value per image], "floor_ssim": likewise}}; NaN where a measure is undefined
    per_image: dict[str, dict[str, list]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _method_options(method: str, options, seed: int, stream: int, device) -> dict:
    """The constructor options for one method on one model (``stream``: 0 for the trained
    model, ``i + 1`` after step ``i``). SmoothGrad gets a generator seeded with ``seed`` on
    every model (the same noise, so only the model changes); the noise control gets
    ``seed + stream`` (a fresh draw per model, as a map that is pure noise would be)."""
    opts = dict((options or {}).get(method, {}))
    if method == "smoothgrad" and "generator" not in opts:
        opts["generator"] = torch.Generator(device=device).manual_seed(seed)
    if method == "noise" and "generator" not in opts:
        opts["generator"] = torch.Generator().manual_seed(seed + stream)
    return opts


def _maps(model, images, layer, methods, targets, batch_size, options=None, seed=0,
          stream=0) -> dict[str, torch.Tensor]:
    """{method: (N, H, W) maps on the CPU} for ``images``, in batches."""
    device = next(model.parameters()).device
    out = {}
    for method in methods:
        opts = _method_options(method, options, seed, stream, device)
        parts = [explain_map(model, images[i:i + batch_size], method,
                             targets[i:i + batch_size], layer, **opts).cpu()
                 for i in range(0, len(images), batch_size)]
        out[method] = torch.cat(parts)
    return out


def predicted_classes(model: nn.Module, images: torch.Tensor, batch_size: int = 256
                      ) -> torch.Tensor:
    """The model's predicted class for normalised ``images`` (N, 3, H, W), in eval mode and in
    batches, as a (N,) CPU tensor; the model's train/eval mode is restored."""
    return logits_of(model, images, batch_size).argmax(1)


def _resolve_methods(methods: Sequence[str], options) -> list[str]:
    if isinstance(methods, str):
        methods = [methods]
    resolved = [resolve_method(m) for m in methods]  # ValueError naming the choices
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"Each method once, please: {list(methods)} names one twice.")
    stray = sorted(set(options or {}) - set(resolved))
    if stray:
        raise ValueError(f"options for {stray}, which are not among the methods {resolved}.")
    return resolved


def _checked(model: nn.Module, images: torch.Tensor, methods: Sequence[str], options,
             targets, batch_size: int) -> tuple[list[str], torch.Tensor]:
    """The methods resolved and checked, and the classes to explain (default: ``model``'s
    predictions), for every randomisation test alike."""
    methods = _resolve_methods(methods, options)
    if len(images) < 2:
        raise ValueError("Need at least 2 images (the floor compares each image's map with "
                         "another's).")
    if targets is None:
        targets = predicted_classes(model, images, batch_size)
    return methods, torch.as_tensor(targets, dtype=torch.long)


def randomization(model: nn.Module, images: torch.Tensor, layer: str = "layer4",
                  methods: Sequence[str] = SANITY_METHODS, targets=None, seed: int = 0,
                  batch_size: int = 100, steps: Sequence[tuple[str, Sequence[str]]] = CASCADE,
                  *, mode: str = "cascading", options: dict[str, dict] | None = None
                  ) -> SanityReport:
    """Adebayo et al.'s model-parameter randomisation, ``mode`` ``"cascading"`` or
    ``"independent"`` (module docstring), for each method at ``layer``.

    ``images``: normalised (N, 3, H, W) tensor (as for :func:`s9lib.explain.cam.explain`) on the
    model's device. ``methods``: names of :data:`s9lib.explain.methods.ALL_METHODS`.
    ``targets``: the classes explained, the same at every step; default the trained model's
    predictions. ``options``: {method: constructor options}, e.g. ``{"integrated_gradients":
    {"steps": 16}}``. Returns a :class:`SanityReport` saying which variant it is; ``model`` is
    not changed.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose one of {list(MODES)}: cascading "
                         "(stages randomised cumulatively from the logits down) or "
                         "independent (one stage at a time, the others trained).")
    methods, targets = _checked(model, images, methods, options, targets, batch_size)

    def maps_of(net: nn.Module, stream: int) -> dict[str, torch.Tensor]:
        return _maps(net, images, layer, methods, targets, batch_size, options, seed, stream)

    trained = maps_of(model, 0)
    rho = {m: [] for m in methods}
    sim = {m: [] for m in methods}
    labels = []
    randomised_models = (cascade if mode == "cascading" else independent)(model, seed, steps)
    for i, (label, randomised) in enumerate(randomised_models):
        labels.append(label)
        maps = maps_of(randomised, i + 1)
        for m in methods:
            rho[m].append(spearman(trained[m], maps[m]))
            sim[m].append(ssim(trained[m], maps[m]))
    return _report(trained, rho, sim, layer, seed, labels, mode)


def _report(trained: dict[str, torch.Tensor], rho: dict[str, list[np.ndarray]],
            sim: dict[str, list[np.ndarray]], layer: str, seed: int, steps: list[str],
            mode: str) -> SanityReport:
    """The report of per-image similarities ``rho``/``sim`` ({method: [values per step]}),
    with the floor: each trained map against the trained map of the next image."""
    methods = list(trained)
    base = {m: spearman(trained[m], trained[m].roll(1, 0)) for m in methods}
    base_ssim = {m: ssim(trained[m], trained[m].roll(1, 0)) for m in methods}
    floor = {m: {"spearman": mean_interval(base[m], f"{m} floor spearman"),
                 "ssim": mean_interval(base_ssim[m], f"{m} floor ssim")} for m in methods}
    per_image = {m: {"spearman": [r.tolist() for r in rho[m]],
                     "ssim": [r.tolist() for r in sim[m]],
                     "floor_spearman": base[m].tolist(), "floor_ssim": base_ssim[m].tolist()}
                 for m in methods}
    n = len(next(iter(trained.values())))
    summary = {measure: {m: [mean_interval(r, f"{m} {measure} after {step}")
                             for r, step in zip(values[m], steps)] for m in methods}
               for measure, values in (("spearman", rho), ("ssim", sim))}
    return SanityReport(layer, n, seed, steps, summary["spearman"], summary["ssim"], floor, mode,
                        per_image)


def cascading_randomization(model: nn.Module, images: torch.Tensor, layer: str = "layer4",
                            methods: Sequence[str] = SANITY_METHODS, targets=None,
                            seed: int = 0, batch_size: int = 100,
                            steps: Sequence[tuple[str, Sequence[str]]] = CASCADE,
                            *, options: dict[str, dict] | None = None) -> SanityReport:
    """Adebayo et al.'s cascading randomisation: :func:`randomization` with
    ``mode="cascading"`` (stages re-initialised cumulatively from the logits down). Defaults
    to the CAM methods; any name of ``s9lib.explain.methods.ALL_METHODS`` works."""
    return randomization(model, images, layer, methods, targets, seed, batch_size, steps,
                         mode="cascading", options=options)


def independent_randomization(model: nn.Module, images: torch.Tensor, layer: str = "layer4",
                              methods: Sequence[str] = SANITY_METHODS, targets=None,
                              seed: int = 0, batch_size: int = 100,
                              steps: Sequence[tuple[str, Sequence[str]]] = CASCADE,
                              *, options: dict[str, dict] | None = None) -> SanityReport:
    """Adebayo et al.'s independent randomisation: :func:`randomization` with
    ``mode="independent"`` (one stage re-initialised at a time, the others trained)."""
    return randomization(model, images, layer, methods, targets, seed, batch_size, steps,
                         mode="independent", options=options)


def data_randomization(model: nn.Module, permuted: nn.Module, images: torch.Tensor,
                       layer: str = "layer4", methods: Sequence[str] = SANITY_METHODS,
                       targets=None, seed: int = 0, batch_size: int = 100, *,
                       options: dict[str, dict] | None = None) -> SanityReport:
    """Adebayo et al.'s data-randomisation test: each method's maps on ``model`` against its
    maps on ``permuted`` (the same architecture trained on permuted labels), for the same
    images and classes (default: ``model``'s predictions), as one step ``"permuted labels"``.

    A method that draws nearly the same map for both explains the image, not what the model
    learned from its labels.
    """
    methods, targets = _checked(model, images, methods, options, targets, batch_size)
    trained = _maps(model, images, layer, methods, targets, batch_size, options, seed, 0)
    other = _maps(permuted, images, layer, methods, targets, batch_size, options, seed, 1)
    rho = {m: [spearman(trained[m], other[m])] for m in methods}
    sim = {m: [ssim(trained[m], other[m])] for m in methods}
    return _report(trained, rho, sim, layer, seed, ["permuted labels"], "data")
