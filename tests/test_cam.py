"""s9lib.explain.cam's contracts on real CIFAR images: one pass for every layer, shapes, ranges,
targets, zero maps, hooks and flags restored, clear errors. The agreement with pytorch-grad-cam
and autograd (slower: every method on two models) is in test_cam_agreement.py.

The reference is pytorch-grad-cam's *raw* map: what ``get_cam_image`` returns, ReLU'd (that is
what ``compute_cam_per_layer`` does before ``scale_cam_image`` resizes and min-max scales it).
A small subclass records it while grad-cam runs its own forward/backward, so its whole code
path (its hooks, its targets, its argmax) is exercised.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn


from s9lib.explain.cam import (METHODS, PYTORCH_GRAD_CAM_PP_EPS, GradCAM, GradCAMPlusPlus, explain,
                       gradcampp_course_bug_weights,
                       gradcampp_weights, map_correlation, count_constant,
                       normalize_maps, xgradcam_weights)
from s9lib.models import ResNet18


from helpers import random_model

pytestmark = pytest.mark.unit

BATCH = 8  # the FAST subset is class-interleaved: classes 0..7


GRADIENT_METHODS = [m for m in METHODS if METHODS[m].uses_gradients]


def _hook_count(model: nn.Module) -> int:
    """Every module hook of every kind (forward, pre, backward, with kwargs, always-called)."""
    total = 0
    for m in model.modules():
        for attr, value in vars(m).items():
            if attr.endswith("hooks") and isinstance(value, dict):
                total += len(value)
    return total


@pytest.mark.parametrize("method", list(METHODS))
def test_one_forward_and_one_backward_for_all_layers(images, method):
    model = random_model()
    calls = {"forward": 0, "backward": 0}
    h1 = model.register_forward_pre_hook(lambda m, i: calls.__setitem__("forward", calls["forward"] + 1))
    h2 = model.linear.register_full_backward_hook(
        lambda m, gi, go: calls.__setitem__("backward", calls["backward"] + 1))
    try:
        with METHODS[method](model, ["layer1", "layer2", "layer3", "layer4"]) as cam:
            res = cam(images)
    finally:
        h1.remove()
        h2.remove()
    # A gradient-free method (EigenCAM) runs the forward pass only.
    assert calls == {"forward": 1, "backward": int(METHODS[method].uses_gradients)}
    assert set(res.maps) == {"layer1", "layer2", "layer3", "layer4"}


def test_gap_head_makes_gradcam_xgradcam_hirescam_equal_at_layer4(images, shipped_model):
    """layer4 -> global average pool -> linear: dS_c/dA_k[i,j] = W[c,k]/16 at every cell, so the
    three methods coincide there; at layer4.0 (before the last block) they do not."""
    model = shipped_model
    layers = ["layer4.0", "layer4"]
    res = {m: explain(model, images, layers, m) for m in ("gradcam", "xgradcam", "hirescam")}
    base = res["gradcam"].raw["layer4"]
    for m in ("xgradcam", "hirescam"):
        torch.testing.assert_close(res[m].raw["layer4"], base, rtol=1e-5,
                                   atol=1e-6 * base.max().item())
        inner = res[m].raw["layer4.0"] - res["gradcam"].raw["layer4.0"]
        assert inner.abs().max() > 1e-3 * res["gradcam"].raw["layer4.0"].max()


def test_per_cell_methods_keep_cell_weights_and_eigencam_ignores_the_target(images):
    model = random_model()
    for method, positive in (("layercam", True), ("hirescam", False)):
        res = explain(model, images, "layer3", method, targets=2)
        w = res.weights["layer3"]
        assert w.shape == (BATCH, 256, 8, 8) and ((w >= 0).all() or not positive)
    eig = [explain(model, images, "layer3", "eigencam", targets=t) for t in (0, 9)]
    assert torch.equal(eig[0].raw["layer3"], eig[1].raw["layer3"])
    assert eig[0].weights["layer3"].shape == (BATCH, 256)


def test_xgradcam_weights_by_hand():
    torch.manual_seed(2)
    a, g = torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    expected = (a[1, 2] / a[1, 2].sum() * g[1, 2]).sum()
    assert torch.isclose(xgradcam_weights(a, g)[1, 2], expected, rtol=1e-5)


# --------------------------------------------------------------------------- the result


def test_maps_shape_range_and_targets(images):
    model = random_model()
    with GradCAM(model, layers=["layer3", model.layer4]) as cam:  # a name and a module
        res = cam(images)
        res7 = cam(images, targets=7)
    assert list(res.maps) == ["layer3", "layer4"]
    for layer in res.maps:
        m = res.maps[layer]
        assert m.shape == (BATCH, 32, 32) and m.dtype == torch.float32
        assert m.min() >= 0 and m.max() <= 1
        peaks = m.flatten(1).max(1).values  # per image: 1, or 0 for a map with no evidence
        assert ((peaks == 1) | (peaks == 0)).all() and (peaks == 1).any()
    assert res.raw["layer3"].shape == (BATCH, 8, 8) and res.raw["layer4"].shape == (BATCH, 4, 4)
    assert res.logits.shape == (BATCH, 10)
    assert torch.equal(res.targets, res.logits.argmax(1)) and res.targets.dtype == torch.long
    assert torch.allclose(res.probs.sum(1), torch.ones(BATCH))
    assert torch.equal(res7.targets, torch.full((BATCH,), 7))


def test_works_under_no_grad_and_leaves_images_alone(images):
    model = random_model()
    before = images.clone()
    with torch.no_grad():
        res = explain(model, images, layers="layer4", method="gradcam++")
    assert torch.equal(images, before) and not images.requires_grad
    assert res.raw["layer4"].max() > 0


def test_zero_map_gives_zeros_not_nan(images):
    model = copy.deepcopy(random_model())
    with torch.no_grad():
        model.linear.weight[3] = 0  # class 3's score no longer depends on any feature
    for method in GRADIENT_METHODS:  # EigenCAM does not look at the target at all
        res = explain(model, images[:4], layers=["layer3", "layer4"], method=method, targets=3)
        for layer in res.maps:
            assert torch.equal(res.raw[layer], torch.zeros_like(res.raw[layer]))
            assert torch.equal(res.maps[layer], torch.zeros_like(res.maps[layer]))
    assert torch.equal(normalize_maps(torch.zeros(2, 5, 5)), torch.zeros(2, 5, 5))
    assert torch.equal(normalize_maps(torch.full((1, 3, 3), 2.0)), torch.zeros(1, 3, 3))


def test_a_constant_map_correlates_as_nan_and_the_count_says_so(images, shipped_model):
    """DESIGN.md: an all-zero map normalises to zeros, but its correlation with any map is NaN,
    never a silent 0; the other images keep their Pearson correlation."""
    model = copy.deepcopy(random_model())
    with torch.no_grad():
        model.linear.weight[3] = 0
    zero = explain(model, images[:4], layers=["layer4"], targets=3).maps["layer4"]
    real = explain(shipped_model, images[:4], layers=["layer4"]).maps["layer4"]  # predicted
    assert (real.flatten(1).std(1) > 0).all()
    assert map_correlation(zero, real).isnan().all()
    mixed = torch.cat([zero[:1], real[1:]])
    r = map_correlation(mixed, real)
    assert r[0].isnan() and torch.allclose(r[1:], torch.ones(3), atol=1e-6)
    expected = np.corrcoef(real[1].flatten().numpy(), (real[1] ** 2).flatten().numpy())[0, 1]
    assert float(map_correlation(real[1:2], real[1:2] ** 2)) == pytest.approx(expected, abs=1e-5)
    assert count_constant(r) == " (1 of 4 images: a constant map, NaN, left out)"
    assert count_constant(r[1:]) == ""


def test_huge_logits_stay_finite(images):
    model = copy.deepcopy(random_model())
    with torch.no_grad():
        model.linear.weight.mul_(1e4)
        model.linear.bias.mul_(1e4)
    res = explain(model, images[:4], layers=["layer3", "layer4"], method="gradcam++")
    assert torch.isinf(torch.exp(res.logits)).any()  # exp(S) would have overflowed
    for layer in res.maps:
        assert torch.isfinite(res.raw[layer]).all() and torch.isfinite(res.weights[layer]).all()
        assert torch.isfinite(res.maps[layer]).all() and res.maps[layer].max() == 1
    assert torch.isfinite(res.probs).all()


def test_seed_bug_weights_differ_from_eq19():
    torch.manual_seed(1)
    a = torch.rand(2, 4, 3, 3)
    g = torch.randn(2, 4, 3, 3)
    right, wrong = gradcampp_weights(a, g), gradcampp_course_bug_weights(a, g)
    assert right.shape == wrong.shape == (2, 4)
    assert not torch.allclose(right, wrong)
    # Eq. 19 by hand for one channel: alpha_ij = g^2 / (2 g^2 + sum(A) g^3)
    g0, a0 = g[0, 0].double(), a[0, 0].double()
    alpha = g0**2 / (2 * g0**2 + a0.sum() * g0**3)  # no epsilon: s9lib's default
    assert torch.isclose(right[0, 0].double(), (alpha * g0.clamp(min=0)).sum(), rtol=1e-5)


# --------------------------------------------------------------------------- hygiene


def test_hooks_removed_mode_and_requires_grad_restored(images):
    model = random_model().train()
    model.layer1.requires_grad_(False)  # a partly frozen model must come back partly frozen
    flags = [p.requires_grad for p in model.parameters()]
    assert _hook_count(model) == 0
    with GradCAM(model, ["layer2", "layer4"]) as cam:
        assert _hook_count(model) == 2 and not model.training
        cam(images[:2])
        cam(images[:2], targets=[1, 2])
    assert _hook_count(model) == 0 and model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())  # nothing written to .grad


def test_hooks_removed_after_exception_in_with_block(images):
    model = random_model().train()
    with pytest.raises(KeyError):
        with GradCAMPlusPlus(model, "layer4") as cam:
            cam(images[:2])
            raise KeyError("boom")
    assert _hook_count(model) == 0 and model.training
    assert all(p.requires_grad for p in model.parameters())


def test_one_shot_call_outside_with_cleans_up_even_on_error(images):
    model = random_model().train()
    cam = GradCAM(model, "layer4")
    assert _hook_count(model) == 0  # constructing registers nothing
    res = cam(images[:2])
    assert res.maps["layer4"].shape == (2, 32, 32)
    assert _hook_count(model) == 0 and model.training
    with pytest.raises(ValueError, match="3 channels"):  # refused before the model runs
        cam(torch.zeros(2, 4, 32, 32))
    assert _hook_count(model) == 0 and model.training
    assert all(p.requires_grad for p in model.parameters())


def test_bad_layer_name_lists_valid_names():
    model = random_model()
    with pytest.raises(ValueError) as info:
        GradCAM(model, ["layer3", "layer5"])
    msg = str(info.value)
    assert "'layer5'" in msg
    for name in ("layer1", "layer4", "layer4.1", "linear"):
        assert name in msg
    assert "layer4.1.conv2" in msg and msg.count(",") < 40  # a hint, not 100 names
    with pytest.raises(ValueError, match="not a sub-module"):
        GradCAM(model, nn.Conv2d(3, 3, 1))


def test_wrong_targets_raise(images):
    model = random_model()
    with GradCAM(model, "layer4") as cam:
        with pytest.raises(ValueError, match="targets has 3 entries but there are 4 images"):
            cam(images[:4], targets=[1, 2, 3])
        with pytest.raises(ValueError, match="class indices"):
            cam(images[:4], targets=10)
    assert _hook_count(model) == 0
    with pytest.raises(ValueError, match="Unknown CAM method"):
        explain(model, images[:1], method="scorecam")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        explain(model, images[0])


def test_nested_use_of_one_object_is_refused():
    model = random_model()
    cam = GradCAM(model, "layer4")
    with cam:
        with pytest.raises(ValueError, match="already active"):
            cam.__enter__()
    assert _hook_count(model) == 0


class _Twice(nn.Module):
    """A module that runs the same conv twice: a layer a CAM cannot be tied to."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

    def forward(self, x):
        return self.head(self.conv(self.conv(x)))


def test_inplace_change_and_reused_modules_are_refused():
    inplace = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="modified in place"):
        explain(inplace, torch.randn(2, 3, 8, 8), layers="0")
    assert explain(inplace, torch.randn(2, 3, 8, 8), layers="1").maps["1"].shape == (2, 8, 8)
    with pytest.raises(ValueError, match="ran 2 times"):
        explain(_Twice(), torch.randn(2, 3, 8, 8), layers="conv")
    assert _hook_count(inplace) == 0
