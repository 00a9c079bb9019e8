"""s9lib.explain.gradients against Captum, on the real ResNet18 and a random one, with real
CIFAR images; and the contracts it shares with the CAMs (hooks gone, mode and flags restored,
maps in [0, 1], clear errors)."""

from __future__ import annotations

import pytest
import torch

from s9lib.explain.gradients import (GRADIENT_METHODS, GuidedBackprop, IntegratedGradients,
                                     SmoothGrad, attribute)

from helpers import random_model

captum = pytest.importorskip("captum.attr")

pytestmark = pytest.mark.integration

BATCH = 6


@pytest.fixture(scope="module", params=["random", "pretrained"])
def model(request, shipped_model):
    return random_model() if request.param == "random" else shipped_model


def _targets(given: bool):
    return torch.tensor([3, 1, 4, 1, 5, 9]) if given else None


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Agreement to 1e-5 of the largest reference attribution."""
    scale = ref.abs().max().item()
    assert scale > 0
    err = (ours - ref).abs().max().item()
    assert err <= 1e-5 * scale, f"max diff {err:.3g} vs max {scale:.3g}"


def _captum(model, method: str, images, targets, **options):
    """Captum's attribution for ``targets`` (the predicted classes when None), in eval mode."""
    model.eval()
    if targets is None:
        with torch.no_grad():
            targets = model(images).argmax(1)
    x = images.clone().requires_grad_(True)
    if method == "saliency":
        return captum.Saliency(model).attribute(x, target=targets, abs=False)
    if method == "smoothgrad":
        torch.manual_seed(options["seed"])
        return captum.NoiseTunnel(captum.Saliency(model)).attribute(
            x, target=targets, nt_type="smoothgrad", nt_samples=options["samples"],
            stdevs=options["stdev"])
    if method == "integrated_gradients":
        return captum.IntegratedGradients(model).attribute(
            x, baselines=0.0, target=targets, n_steps=options["steps"], method="gausslegendre")
    if method == "guided_backprop":
        return captum.GuidedBackprop(model).attribute(x, target=targets)
    return captum.GuidedGradCam(model, model.get_submodule(options["layer"])).attribute(
        x, target=targets)


OPTIONS = {"saliency": {}, "smoothgrad": {"samples": 8, "stdev": 0.6},
           "integrated_gradients": {"steps": 16}, "guided_backprop": {},
           "guided_gradcam": {"layer": "layer3"}}


@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
@pytest.mark.parametrize("given", [False, True], ids=["targets=None", "targets=given"])
def test_agrees_with_captum(model, images, method, given):
    x, targets = images[:BATCH], _targets(given)
    options = dict(OPTIONS[method])
    if method == "smoothgrad":
        torch.manual_seed(11)  # the same noise draws as Captum's (torch.normal, image-major)
    ours = attribute(model, x, method, targets, **options)
    ref = _captum(model, method, x, targets, seed=11, **options).detach()
    assert ours.raw.shape == ref.shape == x.shape
    _close(ours.raw, ref)


def test_integrated_gradients_is_complete(shipped_model, images):
    """Completeness (Sundararajan et al.): the attributions sum to S_c(x) - S_c(baseline)."""
    x = images[:4]
    res = attribute(shipped_model, x, "integrated_gradients", steps=64)
    with torch.no_grad():
        gap = (shipped_model(x) - shipped_model(torch.zeros_like(x))).gather(
            1, res.targets[:, None])[:, 0]
    torch.testing.assert_close(res.raw.sum(dim=(1, 2, 3)), gap, rtol=0.02, atol=0.05)


def test_steps_and_samples_are_batched(shipped_model, images):
    """One forward and one backward pass per batch of steps, not one per step."""
    calls = {"forward": 0}
    handle = shipped_model.register_forward_hook(
        lambda m, i, o: calls.__setitem__("forward", calls["forward"] + 1))
    try:
        IntegratedGradients(shipped_model, steps=32, batch_size=64)(images[:4])
        SmoothGrad(shipped_model, samples=16, batch_size=64)(images[:4])
    finally:
        handle.remove()
    # each: one forward for the targets, then 128 resp. 64 inputs in batches of 64
    assert calls["forward"] == (1 + 2) + (1 + 1)


def test_model_state_and_hooks_are_restored(images):
    model = random_model().train()
    model.layer1.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    for method in GRADIENT_METHODS:
        res = attribute(model, images[:2], method)
        assert res.maps.shape == (2, 32, 32) and 0 <= res.maps.min() <= res.maps.max() <= 1
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(not m._backward_hooks and not m._forward_hooks for m in model.modules())


def test_guided_backprop_needs_relu_modules():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                              torch.nn.LazyLinear(10))
    net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="no nn.ReLU"):
        GuidedBackprop(net)(torch.zeros(1, 3, 32, 32))


def test_unknown_method_and_bad_input_are_clear_errors(shipped_model, images):
    with pytest.raises(ValueError, match="Unknown gradient method"):
        attribute(shipped_model, images, "gradient-x-input")
    with pytest.raises(TypeError, match="normalised"):
        attribute(shipped_model, (images * 0).to(torch.uint8), "saliency")
