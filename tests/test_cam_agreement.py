"""s9lib.explain.cam against pytorch-grad-cam and autograd, on the real ResNet18 and real CIFAR images.

The reference is pytorch-grad-cam's *raw* map: what ``get_cam_image`` returns, ReLU'd (that is
what ``compute_cam_per_layer`` does before ``scale_cam_image`` resizes and min-max scales it).
A small subclass records it while grad-cam runs its own forward/backward, so its whole code
path (its hooks, its targets, its argmax) is exercised.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s9lib.explain.cam import METHODS, PYTORCH_GRAD_CAM_PP_EPS, explain, gradcampp_weights, normalize_maps

from helpers import random_model

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import (  # noqa: E402
    get_2d_projection_with_sign_correction)

pytestmark = pytest.mark.integration

BATCH = 8  # the FAST subset is class-interleaved: classes 0..7


class _SignCorrectedEigenCAM(pgc.EigenCAM):
    """grad-cam's EigenCAM with grad-cam's own sign rule (Seg-Eigen-CAM Eq. 13), which ours uses.

    Plain ``pgc.EigenCAM`` keeps whatever sign numpy's SVD returns, so half its maps can be the
    complement of ours; everything else (hooks, centring, projection) is its code path.
    """

    def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads,
                      eigen_smooth):
        return get_2d_projection_with_sign_correction(activations)


REFERENCE = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
             "layercam": pgc.LayerCAM, "hirescam": pgc.HiResCAM,
             "eigencam": _SignCorrectedEigenCAM}

@pytest.fixture(scope="module", params=["random", "pretrained"])
def model(request, shipped_model):
    return random_model() if request.param == "random" else shipped_model


def _reference_raw(model, method: str, layers: list[str], x, targets) -> dict[str, np.ndarray]:
    """pytorch-grad-cam's raw maps for ``layers`` (in forward order), from one of its calls.

    grad-cam stores activations and gradients in execution order and pairs the i-th with the
    i-th target layer, so ``layers`` must be listed in the order their forward passes finish.
    """
    class Recording(REFERENCE[method]):
        def get_cam_image(self, *args, **kwargs):
            cam = super().get_cam_image(*args, **kwargs)
            self.recorded.append(np.maximum(cam, 0))  # as compute_cam_per_layer does
            return cam

    tgts = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    with Recording(model, target_layers=[model.get_submodule(n) for n in layers]) as cam:
        cam.recorded = []
        cam(x, targets=tgts)
    assert len(cam.recorded) == len(layers)
    return dict(zip(layers, cam.recorded))


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("method", list(REFERENCE))
@pytest.mark.parametrize("given", [False, True], ids=["targets=None", "targets=given"])
def test_raw_maps_agree_with_pytorch_grad_cam(model, images, method, given):
    # Forward order: block layer4.0, then the conv inside layer4.1, then layer4 finish.
    # Inside a stage a map can be all zeros (no positive evidence at that point: e.g. the
    # shipped model's GradCAM++ at layer4.1.conv2, before its batch norm, for non-predicted
    # targets), which would compare nothing; so at least one of the two must be non-zero.
    inside = ["layer4.0", "layer4.1.conv2"]
    layers = ["layer2", "layer3", *inside, "layer4"]
    targets = list(range(BATCH))[::-1] if given else None
    # GradCAM++ with pytorch-grad-cam's epsilon (s9lib's default is none: chapter 6).
    options = {"eps": PYTORCH_GRAD_CAM_PP_EPS} if method == "gradcam++" else {}
    res = METHODS[method](model, layers, **options)(images, targets)  # five layers, one call
    refs = _reference_raw(model, method, layers, images, targets)
    assert max(refs[layer].max() for layer in inside) > 0
    for layer in layers:
        ref, ours = refs[layer], res.raw[layer].numpy()
        assert ours.shape == ref.shape
        assert ref.max() > 0 or layer in inside
        err = np.abs(ours - ref).max()
        assert err <= _tolerance(method, layer) * ref.max(), \
            f"{method} {layer}: max diff {err:.3g} vs max {ref.max():.3g}"


def _tolerance(method: str, layer: str) -> float:
    """1e-5 of the map maximum, except XGradCAM at a layer with signed outputs.

    ``layer4.1.conv2`` is a conv before its batch norm and ReLU, so its channels have both
    signs and XGradCAM's denominator ``sum_ab A_k[a,b]`` can cancel to ~1e-3 of its usual
    size (measured: 2e-5 vs a median of 0.04 on the random model). Float32 rounding in that
    sum (numpy's order vs torch's) is amplified as much: both implementations are ~3e-5 of
    the maximum away from a float64 computation, so 1e-4 there. (XGradCAM's derivation assumes
    post-ReLU, non-negative activations; every other layer here is one.)
    """
    return 1e-4 if method == "xgradcam" and layer == "layer4.1.conv2" else 1e-5


def test_gradcam_weights_are_the_spatial_mean_of_autograd(model, images):
    """Independently of any library: w_k = mean_ij d(sum_b S_{b,t_b}) / dA_k[ij]."""
    targets = torch.arange(BATCH) % 10
    saved = {}
    handle = model.layer3.register_forward_hook(lambda m, i, o: saved.__setitem__("a", o))
    try:
        x = images.clone().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(logits[torch.arange(BATCH), targets].sum(), saved["a"])
    finally:
        handle.remove()
    expected = grad.mean(dim=(2, 3))
    res = explain(model, images, layers="layer3", method="gradcam", targets=targets)
    torch.testing.assert_close(res.weights["layer3"], expected, rtol=1e-5,
                               atol=1e-6 * expected.abs().max().item())
    raw = torch.relu((expected[:, :, None, None] * saved["a"].detach()).sum(1))
    torch.testing.assert_close(res.raw["layer3"], raw, rtol=1e-4,
                               atol=1e-6 * raw.max().item())


def test_gradcampp_maps_do_not_depend_on_how_a_layer_is_scaled(model, images):
    # Scaling layer3's output by a and layer4's input weights by 1/a computes the same
    # function; its activations become a*A and its gradients g/a. Eq. 19 without epsilon
    # gives the same map (beta depends on sum(A)*g only); pytorch-grad-cam's epsilon does not,
    # on the shipped model, whose layer3 gradients are ~1e-3 (2 g^2 comparable to 1e-6).
    kept = []
    handle = model.layer3.register_forward_hook(lambda module, inputs, out: kept.append(out))
    try:
        logits = model.eval()(images[:8])
    finally:
        handle.remove()
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    A, (g,) = kept[0].detach(), torch.autograd.grad(score, kept)
    for eps, same in ((0.0, True), (PYTORCH_GRAD_CAM_PP_EPS, False)):
        for a in (0.1, 10.0):
            base = torch.einsum("bk,bkhw->bhw", gradcampp_weights(A, g, eps=eps), A)
            scaled = torch.einsum("bk,bkhw->bhw", gradcampp_weights(a * A, g / a, eps=eps), a * A)
            assert torch.isfinite(base).all()
            close = torch.allclose(normalize_maps(base.relu()), normalize_maps(scaled.relu()),
                                   atol=1e-4)
            assert close == same, f"eps={eps}, a={a}"
