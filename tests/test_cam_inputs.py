"""The CAM API says when its input is wrong, instead of returning a map that is not one.

Real inputs: test images of the offline archive and the shipped model; each wrong input is
what a reader plausibly passes (the uint8 array itself, its float copy, a channels-last
tensor, a float or bool target, ...).
"""

import numpy as np
import pytest
import torch

import s9lib
from s9lib.explain.cam import METHODS, GradCAM, explain
from s9lib.data.inputs import preprocess

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model(shipped_model):
    return shipped_model


@pytest.fixture(scope="module")
def pixels(data):
    return data.test.images[:4]  # uint8 (4, 32, 32, 3)


@pytest.fixture(scope="module")
def images(model, pixels):
    return preprocess(pixels, model=model)


def test_the_right_input_still_works(model, images):
    for method in METHODS:
        res = explain(model, images, ["layer3", "layer4"], method, targets=[0, 1, 2, 3])
        assert res.maps["layer4"].shape == (4, 32, 32)
    assert explain(model, images, targets=np.int64(3)).targets.tolist() == [3] * 4
    assert explain(model, images, targets=torch.tensor([1, 2, 3, 4])).targets.tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("make, error, needle", [
    (lambda px, x: px, TypeError, "torch tensor, got ndarray"),
    (lambda px, x: torch.from_numpy(px).permute(0, 3, 1, 2), TypeError, "got torch.uint8"),
    (lambda px, x: torch.from_numpy(px).permute(0, 3, 1, 2).float(), ValueError, "0..255"),
    (lambda px, x: x.permute(0, 2, 3, 1), ValueError, "channels-last"),
    (lambda px, x: x[:, :1], ValueError, "model reads 3 channels"),
    (lambda px, x: torch.cat([x, x[:, :1]], 1), ValueError, "model reads 3 channels"),
    (lambda px, x: x > 0, TypeError, "torch.bool"),
    (lambda px, x: x[0], ValueError, r"\(B, 3, H, W\)"),
    (lambda px, x: torch.where(torch.arange(4)[:, None, None, None] == 2, torch.nan, x),
     ValueError, r"images \[2\] hold NaN"),
    (lambda px, x: x.clone().index_fill_(0, torch.tensor([1]), float("inf")), ValueError,
     r"images \[1\]"),
])
def test_wrong_images_are_refused_with_what_was_expected(model, pixels, images, make, error,
                                                        needle):
    for method in ("gradcam", "eigencam"):
        with pytest.raises(error, match=needle):
            explain(model, make(pixels, images), method=method)


@pytest.mark.parametrize("targets", [2.0, 2.7, [1.0, 2.0, 3.0, 4.0], torch.tensor([1.5] * 4),
                                     True, [True, False, True, False], torch.ones(4, dtype=bool),
                                     np.float32(3)])
def test_float_and_bool_targets_are_refused(model, images, targets):
    with pytest.raises(TypeError, match="integer class indices"):
        explain(model, images, targets=targets)


@pytest.mark.parametrize("layers, needle", [(4, "got int"), ([4], "got int 4"),
                                            ({"layer4": 1}, "got dict"), ([None], "NoneType"),
                                            (b"layer4", "got bytes")])
def test_layers_that_are_not_names_or_modules(model, layers, needle):
    with pytest.raises(TypeError, match=needle):
        GradCAM(model, layers)


def test_inference_mode_is_refused_and_its_tensors_still_work(model, images):
    with torch.inference_mode():
        inference_images = images.clone()
        with pytest.raises(ValueError, match="inference_mode"):
            explain(model, images)
    res = explain(model, inference_images)  # made under inference_mode, used outside it
    assert res.maps["layer4"].shape == (4, 32, 32)
    with torch.no_grad():  # no_grad stays fine
        assert explain(model, images).maps["layer4"].max() == 1


def test_non_finite_logits_are_an_error_not_an_all_zero_map(model, images):
    import copy

    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.linear.weight[3, 0] = float("inf")
    for method in ("gradcam", "gradcam++", "eigencam"):
        with pytest.raises(ValueError, match="logits .* NaN or infinite"):
            explain(broken, images, method=method)
