"""s9lib.explain.methods: one interface (explain_map) over the CAMs, the gradient methods and
the two controls, on the shipped model and real CIFAR-10 images: shapes and ranges for every
name, the model left as it was, the documented reduction of gradient attributions, the edge
control's independence from the weights, and clear errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from s9lib.explain import (ALL_METHODS, CONTROLS, GRADIENT_METHODS, METHODS, edge_maps, explain,
                           explain_map, normalize_maps, resolve_method)
from s9lib.explain.gradients import GuidedBackprop, GuidedGradCAM, IntegratedGradients, Saliency
from s9lib.inference import eval_mode

pytestmark = pytest.mark.unit

#: Few steps and samples: these tests check plumbing, not the integrals (test_gradients does).
QUICK = {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 4}}
STAGES = ("linear", "layer4", "layer3", "layer2", "layer1", "conv1", "bn1")


def _hooks(model: torch.nn.Module) -> int:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, k, {})) for m in model.modules() for k in kinds)


def test_names_cover_every_family_once():
    assert set(ALL_METHODS) == set(METHODS) | set(GRADIENT_METHODS) | set(CONTROLS)
    assert len(ALL_METHODS) == len(set(ALL_METHODS)) == len(METHODS) + len(GRADIENT_METHODS) + 2
    assert resolve_method("GradCAMpp") == "gradcam++" and resolve_method("EDGE") == "edge"


def test_every_method_gives_bounded_maps_and_leaves_the_model_as_it_was(shipped_model, images):
    model = copy.deepcopy(shipped_model).train()  # train mode: BatchNorm would update
    model.layer1.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images[:2]
    for method in ALL_METHODS:
        maps = explain_map(model, x, method, **QUICK.get(method, {}))
        assert maps.shape == (2, 32, 32) and maps.dtype == torch.float32, method
        assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1, method
        assert model.training and [p.requires_grad for p in model.parameters()] == flags
        assert _hooks(model) == 0, method
        assert all(p.grad is None for p in model.parameters()), method
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included


def test_gradient_maps_are_the_absolute_attribution_summed_over_channels(shipped_model, images):
    x = images[:3]
    for method, cls, options in (("saliency", Saliency, {}),
                                 ("integrated_gradients", IntegratedGradients, {"steps": 8}),
                                 ("guided_backprop", GuidedBackprop, {})):
        raw = cls(shipped_model, **options)(x).raw
        expected = normalize_maps(raw.abs().sum(dim=1))
        torch.testing.assert_close(explain_map(shipped_model, x, method, **options), expected)
    # the same reduction from a gradient taken here, without s9lib.explain.gradients
    leaf = x.clone().requires_grad_(True)
    with eval_mode(shipped_model):
        logits = shipped_model(leaf)
        grad, = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), leaf)
    torch.testing.assert_close(explain_map(shipped_model, x, "saliency"),
                               normalize_maps(grad.abs().sum(dim=1)))
    # Guided GradCAM takes explain_map's layer
    torch.testing.assert_close(explain_map(shipped_model, x, "guided_gradcam", layer="layer3"),
                               GuidedGradCAM(shipped_model, layer="layer3")(x).maps)


def test_cam_maps_are_explains_maps(shipped_model, images):
    x = images[:3]
    for method in METHODS:
        assert torch.equal(explain_map(shipped_model, x, method, targets=2, layer="layer3"),
                           explain(shipped_model, x, ["layer3"], method, 2).maps["layer3"])


def test_edge_control_reads_the_pixels_and_not_the_weights(shipped_model, images, data):
    from skimage.filters import sobel

    x = images[:4]
    randomised = copy.deepcopy(shipped_model)
    for stage in STAGES:  # every weight and BN statistic re-initialised
        for sub in randomised.get_submodule(stage).modules():
            for reset in ("reset_running_stats", "reset_parameters"):
                getattr(sub, reset, lambda: None)()
    trained = explain_map(shipped_model, x, "edge")
    assert torch.equal(trained, explain_map(randomised, x, "edge"))
    assert torch.equal(trained, explain_map(shipped_model, x, "edge", targets=7))
    # scikit-image's Sobel magnitude of the luma of the uint8 pixels, up to its scale
    pixels = data.test.images[:4].astype(np.float64) / 255
    gray = pixels @ np.array([0.299, 0.587, 0.114])
    reference = normalize_maps(torch.tensor(np.stack([sobel(g) for g in gray])))
    np.testing.assert_allclose(trained.double(), reference, atol=2e-4)
    # a flat image has no edges: zeros, not NaN
    assert torch.equal(edge_maps(torch.full((1, 3, 8, 8), 0.5)), torch.zeros(1, 8, 8))


def test_noise_control_is_a_fresh_draw_unless_given_a_generator(shipped_model, images):
    x = images[:2]
    a, b = explain_map(shipped_model, x, "noise"), explain_map(shipped_model, x, "noise")
    assert not torch.equal(a, b)
    seeded = [explain_map(shipped_model, x, "noise", generator=torch.Generator().manual_seed(5))
              for _ in range(2)]
    assert torch.equal(*seeded)


def test_bad_names_options_and_images_are_clear_errors(shipped_model, images):
    with pytest.raises(ValueError, match=r"Unknown method 'scorecam'.*Choose one of .*gradcam"):
        explain_map(shipped_model, images[:2], "scorecam")
    with pytest.raises(ValueError, match="Did you mean 'saliency'"):
        explain_map(shipped_model, images[:2], "salency")
    with pytest.raises(TypeError, match="must be a name"):
        explain_map(shipped_model, images[:2], GuidedBackprop)
    with pytest.raises(TypeError, match=r"'gradcam' takes no option\(s\) \['steps'\]"):
        explain_map(shipped_model, images[:2], "gradcam", steps=4)
    with pytest.raises(TypeError, match="takes no option"):
        explain_map(shipped_model, images[:2], "edge", samples=3)
    with pytest.raises(TypeError, match="normalised"):
        explain_map(shipped_model, (images[:2] * 0).to(torch.uint8), "edge")
