"""s9lib.evaluate.removal (deletion/insertion, ROAD) on the shipped model and real CIFAR-10 test images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from s9lib.explain.cam import explain
from s9lib.checkpoints import pretrained
from s9lib.data.inputs import preprocess
from s9lib.evaluate.removal import (auc, blur, center_maps, deletion_curves, insertion_curves,
                           noisy_linear_impute, relevance_order, removal_report, road_curves)

pgc_road = pytest.importorskip("pytorch_grad_cam.metrics.road")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget  # noqa: E402

pytestmark = pytest.mark.unit


N = 8


@pytest.fixture(scope="module")
def model(shipped_model):
    return shipped_model


@pytest.fixture(scope="module")
def pixels(data) -> np.ndarray:
    return data.test.images[:N]


@pytest.fixture(scope="module")
def gradcam(model, pixels) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps, targets): GradCAM at layer4 for the predicted classes."""
    res = explain(model, preprocess(pixels, model=model), "layer4", "gradcam")
    return res.maps["layer4"], res.targets


def test_centre_maps_and_relevance_order():
    c = center_maps(2, (32, 32))
    assert c.shape == (2, 32, 32) and c.min() == 0 and c.max() == 1
    assert c[0, 15:17, 15:17].min() == c.max() and torch.equal(c[0], c[1])
    maps = torch.tensor([[[0.0, 0.5], [1.0, 0.5]]])
    order = relevance_order(maps, seed=0)[0].tolist()
    assert order[0] == 2 and set(order[1:3]) == {1, 3} and order[3] == 0
    flat = torch.zeros(1, 4, 4)  # all tied: a seeded random order, not raster order
    assert torch.equal(relevance_order(flat, 5), relevance_order(flat, 5))
    assert relevance_order(flat, 5)[0].tolist() != list(range(16))


def test_deletion_and_insertion_prefer_the_map_to_its_reverse(model, pixels, gradcam):
    maps, targets = gradcam
    x = preprocess(pixels, model=model)
    with torch.no_grad():
        p = torch.softmax(model(x), 1).gather(1, targets[:, None])[:, 0]
        p_mean = torch.softmax(model(torch.zeros_like(x)), 1).gather(1, targets[:, None])[:, 0]
        p_blur = torch.softmax(model(blur(x)), 1).gather(1, targets[:, None])[:, 0]
    delete = deletion_curves(model, pixels, maps, targets, steps=8)
    insert = insertion_curves(model, pixels, maps, targets, steps=8)
    assert delete.shape == insert.shape == (N, 9)
    torch.testing.assert_close(delete[:, 0], p, atol=1e-5, rtol=0)  # nothing removed yet
    torch.testing.assert_close(delete[:, -1], p_mean, atol=1e-5, rtol=0)  # all mean colour
    torch.testing.assert_close(insert[:, 0], p_blur, atol=1e-5, rtol=0)
    torch.testing.assert_close(insert[:, -1], p, atol=1e-5, rtol=0)
    # Most relevant first vs least relevant first (the reversed map), same pixels in the end.
    assert auc(delete).mean() < auc(deletion_curves(model, pixels, 1 - maps, targets, 8)).mean()
    assert auc(insert).mean() > auc(insertion_curves(model, pixels, 1 - maps, targets, 8)).mean()
    assert torch.isclose(auc(torch.tensor([[1.0, 0.0]])), torch.tensor(0.5))


def test_linear_imputation_matches_grad_cam_and_keeps_known_pixels(model, pixels):
    x = preprocess(pixels[:2], model=model)
    keep = torch.rand(32, 32, generator=torch.Generator().manual_seed(0)) > 0.6
    keep[:, :3] = False  # a whole missing border strip
    ref = pgc_road.NoisyLinearImputer(noise=0.0)(x[1], keep.float())
    ours = noisy_linear_impute(x[1], keep, noise=0.0)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    assert torch.equal(ours[:, keep], x[1][:, keep])
    const = torch.full((3, 32, 32), 0.25)  # a weighted mean of equal neighbours is that value
    torch.testing.assert_close(noisy_linear_impute(const, keep, noise=0.0), const)


@pytest.mark.parametrize("morf", [True, False], ids=["MoRF", "LeRF"])
def test_road_agrees_with_pytorch_grad_cam(model, pixels, gradcam, morf):
    """The same maps, classes and noise (seed 0) through both: p(target) agrees to 1e-5.

    Tolerance: both solve the same float64 sparse system and draw the same noise; what is left
    is float32 forward passes of the model (identical here). The maps get a tiny seeded jitter so
    they have no ties: grad-cam removes every pixel tied at its percentile threshold, we break
    ties by a random order (see s9lib.evaluate.removal), and the two agree exactly when there are none.
    """
    maps, targets = gradcam
    maps = maps + 1e-4 * torch.rand(maps.shape, generator=torch.Generator().manual_seed(1))
    percentiles = [10, 50, 90]  # grad-cam: keep the pixels below this percentile
    metric = pgc_road.ROADMostRelevantFirst if morf else pgc_road.ROADLeastRelevantFirst
    softmax = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    torch.manual_seed(0)  # grad-cam draws its noise from the global generator
    ref = np.stack([metric(p)(preprocess(pixels, model=model), maps.numpy(), softmax, model,
                              return_diff=False) for p in percentiles], axis=1)
    ours = road_curves(model, pixels, maps, targets, fractions=[1 - p / 100 for p in percentiles],
                       most_relevant_first=morf, seed=0)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5, rtol=0)
    if morf:  # removing more of the most relevant pixels lowers p(target) on average
        assert ours[:, 2].mean() > ours[:, 0].mean()


def test_report_and_errors(model, pixels, gradcam):
    maps, targets = gradcam
    report = removal_report(model, pixels[:4], {"gradcam": maps[:4],
                                                "centre": center_maps(4, (32, 32))},
                            steps=4, fractions=(0.5,))
    assert report.n == 4 and set(report.scores) == {"gradcam", "centre"}
    row = report.scores["gradcam"]
    assert set(row) == {"deletion_auc", "insertion_auc", "road_morf", "road_lerf"}
    assert all(0 <= s.mean <= 1 and s.n == 4 for s in row.values())
    assert len(report.curves["centre"]["deletion"]) == 5
    for metric, stat in row.items():  # every image's score kept, for paired comparisons
        values = report.per_image["gradcam"][metric]
        assert len(values) == 4 and stat.mean == pytest.approx(np.mean(values))
    json.dumps(report.to_dict())
    with pytest.raises(ValueError, match=r"maps must be \(N, H, W\)"):
        deletion_curves(model, pixels, maps[:, :16])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        road_curves(model, pixels[:1], maps[:1], fractions=[1.0])
    with pytest.raises(ValueError, match="uint8"):
        insertion_curves(model, pixels.astype(np.float32), maps)
