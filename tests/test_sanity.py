"""s9lib.evaluate.sanity (cascading model-parameter randomisation) on the shipped model and real images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from s9lib.checkpoints import pretrained
from s9lib.data.inputs import preprocess
from s9lib.evaluate.sanity import (CASCADE, cascade, cascading_randomization, predicted_classes,

                          randomize_, spearman, ssim)

pytestmark = pytest.mark.unit

N = 8


@pytest.fixture(scope="module")
def model(shipped_model):
    return shipped_model


@pytest.fixture(scope="module")
def images(data, model) -> torch.Tensor:
    return preprocess(data.test.images[:N], model=model)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cascade_is_cumulative_from_the_logits_and_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seen = []
    for label, randomised in cascade(model, seed=3):
        changed = [name for name in ("linear", "layer4", "layer3", "layer2", "layer1", "conv1")
                   if not _same(model.get_submodule(name), randomised.get_submodule(name))]
        seen.append((label, changed))
    assert [label for label, _ in seen] == [label for label, _ in CASCADE]
    assert seen[0][1] == ["linear"]
    assert seen[2][1] == ["linear", "layer4", "layer3"]
    assert seen[-1][1] == ["linear", "layer4", "layer3", "layer2", "layer1", "conv1"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())  # the caller's random state is untouched


def test_randomise_is_seeded_and_resets_batch_norm(model):
    a = randomize_(pretrained(device="cpu").layer4, seed=1)
    b = randomize_(pretrained(device="cpu").layer4, seed=1)
    assert _same(a, b) and not _same(a, model.layer4)
    bn = a[0].bn1
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    with pytest.raises(ValueError, match="not modules of this model"):
        next(cascade(model, steps=[("head", ("fc",))]))


def test_spearman_and_ssim():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 8, 8, generator=gen), torch.rand(3, 8, 8, generator=gen)
    b[1] = torch.where(a[1] > 0.5, a[1], torch.zeros(()))  # ties, as in ReLU'd maps
    expected = [spearmanr(x.flatten(), y.flatten()).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(spearman(a, b), expected, rtol=1e-12)
    assert np.isnan(spearman(a, torch.zeros(3, 8, 8))).all()  # constant map: no ranks
    np.testing.assert_allclose(ssim(a, a), 1.0)
    assert (ssim(a, b) < 1).all()
    with pytest.raises(ValueError, match="of one shape"):
        spearman(a, b[:2])


def test_randomising_every_layer_destroys_gradcam_but_not_eigencam_at_the_logits(model, images):
    report = cascading_randomization(model, images, "layer4", ["gradcam", "eigencam"], seed=0)
    assert report.steps == [label for label, _ in CASCADE] and report.n == N
    rho = {m: [s.mean for s in report.spearman[m]] for m in report.spearman}
    # EigenCAM never looks at the class, so randomising the logits alone changes nothing...
    assert rho["eigencam"][0] == pytest.approx(1.0)
    assert report.ssim["eigencam"][0].mean == pytest.approx(1.0)
    # ...while with every layer random GradCAM's maps have little to do with the trained ones
    # (1.0 before randomisation).
    assert rho["gradcam"][-1] < 0.4 and rho["eigencam"][-1] < 0.6
    assert all(s.n <= N for s in report.spearman["gradcam"])
    json.dumps(report.to_dict())  # plain numbers only


def test_targets_are_the_trained_models_predictions_and_bad_methods_raise(model, images):
    preds = predicted_classes(model, images, batch_size=3)
    assert torch.equal(preds, model(images).argmax(1))
    with pytest.raises(ValueError, match="Unknown CAM method"):
        cascading_randomization(model, images, methods=["scorecam"])
    with pytest.raises(ValueError, match="at least 2 images"):
        cascading_randomization(model, images[:1])
