"""s9lib.evaluate.sanity (model-parameter randomisation, cascading and independent, over every
method of s9lib.explain.methods) on the shipped model and real images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from s9lib.checkpoints import pretrained
from s9lib.data.inputs import preprocess
from s9lib.evaluate.stats import mean_interval
from s9lib.evaluate.sanity import (CASCADE, SANITY_METHODS, SanityReport, cascade,
                                   cascading_randomization, independent,
                                   data_randomization, independent_randomization,
                                   predicted_classes, randomization,
                                   randomize_, spearman, ssim)
from s9lib.explain.cam import explain

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
    with pytest.raises(ValueError, match="Unknown method 'scorecam'"):
        cascading_randomization(model, images, methods=["scorecam"])
    with pytest.raises(ValueError, match="at least 2 images"):
        cascading_randomization(model, images[:1])


# ------------------------------------------------------------- every method, both variants

STAGES = ("linear", "layer4", "layer3", "layer2", "layer1", "conv1")


def _old_cascading(model, images, layer, methods, seed=0, batch_size=100):
    """The cascading check as the module computed it before it took every method (commit
    f18ee0e): ``explain(...).maps[layer]`` per batch, the cascade, Spearman, SSIM, the floor."""
    targets = predicted_classes(model, images, batch_size)

    def maps(net):
        return {m: torch.cat([explain(net, images[i:i + batch_size], [layer], m,
                                      targets[i:i + batch_size]).maps[layer].cpu()
                              for i in range(0, len(images), batch_size)]) for m in methods}

    trained = maps(model)
    rho, sim = {m: [] for m in methods}, {m: [] for m in methods}
    for _, randomised in cascade(model, seed):
        now = maps(randomised)
        for m in methods:
            rho[m].append(mean_interval(spearman(trained[m], now[m])))
            sim[m].append(mean_interval(ssim(trained[m], now[m])))
    floor = {m: {"spearman": mean_interval(spearman(trained[m], trained[m].roll(1, 0))),
                 "ssim": mean_interval(ssim(trained[m], trained[m].roll(1, 0)))} for m in methods}
    return SanityReport(layer, len(images), seed, [label for label, _ in CASCADE], rho, sim, floor)


def test_cascading_results_for_the_cams_are_unchanged(model, images):
    new = cascading_randomization(model, images[:4], "layer4", seed=2, batch_size=3)
    old = _old_cascading(model, images[:4], "layer4", SANITY_METHODS, seed=2, batch_size=3)
    assert new.mode == "cascading" and list(new.spearman) == list(SANITY_METHODS)
    # the old report had no per-image values; every figure it had is unchanged (NaN == NaN),
    # the intervals' names aside (the old code did not name them)
    np.testing.assert_equal(_unnamed({**new.to_dict(), "per_image": {}}),
                            _unnamed({**old.to_dict(), "mode": "cascading"}))


def _unnamed(d):
    """``d`` without the intervals' ``name`` fields, recursively."""
    if isinstance(d, dict):
        return {k: _unnamed(v) for k, v in d.items() if k != "name"}
    return [_unnamed(v) for v in d] if isinstance(d, list) else d


def test_independent_randomises_one_stage_and_keeps_the_others_trained(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cascaded = {}  # stage -> its random weights at the step where the cascade randomised it
    for (label, randomised), stage in zip(cascade(model, seed=3), STAGES):
        weights = randomised.get_submodule(stage).state_dict()
        cascaded[stage] = {k: v.clone() for k, v in weights.items()}
    labels = []
    for (label, randomised), stage in zip(independent(model, seed=3), STAGES):
        labels.append(label)
        for other in STAGES:
            same = _same(model.get_submodule(other), randomised.get_submodule(other))
            assert same == (other != stage), (label, other)
        state = randomised.get_submodule(stage).state_dict()
        assert all(torch.equal(state[k], cascaded[stage][k]) for k in state)  # same seed
        assert _same(randomised.bn1, model.bn1) == (stage != "conv1")
        assert torch.equal(randomised.input_std, model.input_std)  # statistics, not weights
    assert labels == ["linear", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_the_edge_control_never_changes_so_it_fails_by_construction(model, images, mode):
    """The edge map reads the pixels only: Spearman and SSIM are exactly 1 at every step."""
    report = randomization(model, images[:4], methods=["edge", "saliency"], mode=mode)
    assert report.mode == mode and len(report.steps) == len(CASCADE)
    for stat in report.spearman["edge"] + report.ssim["edge"]:
        assert stat.mean == pytest.approx(1.0, abs=1e-12) and stat.n == 4
    assert all(np.isfinite(s.mean) for s in report.spearman["saliency"])
    assert json.loads(json.dumps(report.to_dict()))["mode"] == mode


def test_smoothgrad_draws_the_same_noise_on_every_model_and_the_noise_control_passes(
        model, images):
    """A step that randomises nothing: SmoothGrad's maps are identical (the same noise draws,
    so only the model changes), while the noise control, redrawn per model, "passes" (about 0)
    and has a floor of about 0 as well: what a pass alone does not show."""
    nothing = (("nothing", ()),)
    report = independent_randomization(model, images[:4], methods=["smoothgrad", "noise"],
                                       steps=nothing, options={"smoothgrad": {"samples": 2}})
    assert report.steps == ["nothing"] and report.mode == "independent"
    assert report.spearman["smoothgrad"][0].mean == pytest.approx(1.0, abs=1e-12)
    assert abs(report.spearman["noise"][0].mean) < 0.15
    assert abs(report.floor["noise"]["spearman"].mean) < 0.15


def test_unknown_mode_method_or_stray_options_are_clear_errors(model, images):
    with pytest.raises(ValueError, match="Unknown mode 'top_down'.*cascading.*independent"):
        randomization(model, images[:2], mode="top_down")
    with pytest.raises(ValueError, match="Unknown method 'gradient_x_input'"):
        independent_randomization(model, images[:2], methods=["gradcam", "gradient_x_input"])
    with pytest.raises(ValueError, match="not among the methods"):
        cascading_randomization(model, images[:2], methods=["gradcam"],
                                options={"smoothgrad": {"samples": 2}})


def test_data_randomization_is_one_when_both_models_are_the_same(model, images):
    """Against itself every method's map is the same: Spearman and SSIM 1 (noise aside, which
    draws afresh for the second model, as a map of pure noise would)."""
    report = data_randomization(model, model, images, methods=["gradcam", "saliency", "edge"])
    assert report.mode == "data" and report.steps == ["permuted labels"]
    for m in ("gradcam", "saliency", "edge"):
        assert report.spearman[m][0].mean == pytest.approx(1.0, abs=1e-6)
        assert np.allclose(report.per_image[m]["ssim"][0], 1.0, atol=1e-6)
        assert len(report.per_image[m]["spearman"][0]) == N


def test_data_randomization_separates_a_model_from_an_untrained_one(model, images):
    """An untrained ResNet18 stands in for a model that learned nothing about the labels:
    GradCAM's maps change (Spearman well below 1), the edge control's cannot (exactly 1)."""
    from helpers import random_model

    other = random_model()
    report = data_randomization(model, other, images, methods=["gradcam", "edge"])
    assert report.spearman["edge"][0].mean == pytest.approx(1.0)
    assert report.spearman["gradcam"][0].mean < 0.8
    assert report.floor["gradcam"]["spearman"].n == N


def test_the_report_keeps_every_images_values_and_its_means_come_from_them(model, images):
    """Paired comparisons (a step against the floor, image by image) need every image's value;
    each step's interval is their mean over the images where it is defined."""
    report = cascading_randomization(model, images, methods=["gradcam", "saliency"])
    for m in ("gradcam", "saliency"):
        values = report.per_image[m]["spearman"]
        assert len(values) == len(report.steps) and all(len(v) == N for v in values)
        for stat, v in zip(report.spearman[m], values):
            assert stat.mean == pytest.approx(np.nanmean(v))
        assert report.floor[m]["ssim"].mean == pytest.approx(np.nanmean(
            report.per_image[m]["floor_ssim"]))
