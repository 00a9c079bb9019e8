"""s9lib.show.viz: every function returns a Figure with the expected axes, no pyplot state."""

import io

import numpy as np
import pytest
import torch
from matplotlib import _pylab_helpers
from matplotlib.figure import Figure
from pytorch_grad_cam.utils.image import show_cam_on_image

from s9lib.show import viz
from s9lib.explain.cam import CamResult
from s9lib.training.history import EpochRecord, History

pytestmark = pytest.mark.unit


LAYERS = ["layer3", "layer4"]


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """No function may leave a figure in pyplot's global list (notebooks would show it twice)."""
    before = _pylab_helpers.Gcf.get_num_fig_managers()
    yield
    assert _pylab_helpers.Gcf.get_num_fig_managers() == before


def _images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _result(n=3, size=32, layers=LAYERS, seed=0, targets=None) -> CamResult:
    g = torch.Generator().manual_seed(seed)
    maps = {name: torch.rand(n, size, size, generator=g) for name in layers}
    logits = torch.randn(n, 10, generator=g)
    tgt = logits.argmax(1) if targets is None else torch.as_tensor(targets)
    return CamResult(maps=maps, raw={k: v[:, ::8, ::8] for k, v in maps.items()},
                     weights={}, targets=tgt, logits=logits, method="gradcam",
                     layers=list(layers))


def _history(name, epochs=4, offset=0.0):
    return History([EpochRecord(e, 2 / e + offset, 0.3 + 0.1 * e, 2.2 / e + offset,
                                0.25 + 0.1 * e, 0.1, 1.0, 100.0) for e in range(1, epochs + 1)],
                   recipe={"name": name})


def _panels(fig):
    """The figure's image panels: every axes but colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _colorbar_labels(fig):
    """The labels of the figure's colour bars, in the order they were added."""
    return [ax.get_xlabel() or ax.get_ylabel() for ax in fig.axes
            if ax.get_label() == "<colorbar>"]


def _renders(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue().startswith(b"\x89PNG")


# --------------------------------------------------------------------------- overlay


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("as_uint8", [True, False])
def test_overlay_matches_pytorch_grad_cam(alpha, as_uint8):
    rng = np.random.default_rng(1)
    img_u8 = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    img_f = img_u8.astype(np.float32) / 255
    mask = rng.random((32, 32)).astype(np.float32)
    ours = viz.overlay(img_u8 if as_uint8 else img_f, mask, alpha=alpha)
    ref = show_cam_on_image(img_f, mask, use_rgb=True, image_weight=1 - alpha)
    assert ours.shape == (32, 32, 3) and ours.dtype == np.float32
    assert 0 <= ours.min() and ours.max() <= 1
    assert np.abs(ours * 255 - ref.astype(np.float32)).max() <= 1.0  # ref rounds to uint8


def test_heatmap_is_opencv_jet_in_rgb():
    hot, cold = viz.heatmap(np.ones((2, 2))), viz.heatmap(np.zeros((2, 2)))
    np.testing.assert_allclose(hot[0, 0], [128 / 255, 0, 0], atol=1e-6)  # dark red
    np.testing.assert_allclose(cold[0, 0], [0, 0, 128 / 255], atol=1e-6)  # dark blue


def test_overlay_resizes_a_small_map_and_checks_inputs():
    out = viz.overlay(_images(1, 64)[0], torch.rand(4, 4))  # a layer4-sized map on a photo
    assert out.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(_images(1)[0], np.zeros((32, 32)), alpha=1.5)
    with pytest.raises(ValueError, match="unstandardize"):
        viz.overlay(np.full((32, 32, 3), -1.5, np.float32), np.zeros((32, 32)))


# --------------------------------------------------------------------------- figures


def test_cam_grid_axes():
    fig = viz.cam_grid(_images(3), _result(3), LAYERS, true=[0, 1, 2])
    assert isinstance(fig, Figure)
    assert len(_panels(fig)) == 3 * (1 + 2 * len(LAYERS))
    ncols = 1 + 2 * len(LAYERS)
    for row in range(3):  # each row's label is left of its own image: true and predicted
        label = fig.axes[row * ncols].get_ylabel()
        assert "%" in label and "true: " in label
    fig = viz.cam_grid(_images(3), _result(3), "layer4", heatmaps=False)
    assert len(_panels(fig)) == 3 * 2
    assert _renders(fig)


def test_cam_grid_says_when_the_explained_class_is_not_the_prediction():
    res = _result(2)
    other = (res.logits.argmax(1) + 1) % 10
    res.targets = other
    fig = viz.cam_grid(_images(2), res, LAYERS)
    assert "explains" in fig.axes[0].get_ylabel()


def test_panel_rows_labels_rows_on_the_left_and_titles_only_the_first_row():
    rows = [list(_images(3)) for _ in range(2)]
    notes = [["1%", "", None], [("2%", "green"), "3%", "4%"]]
    fig = viz.panel_rows(rows, ["first", "second"], ["a", "b", "c"], row_colors=["black", "red"],
                         notes=notes)
    assert len(fig.axes) == 6
    assert [[t.get_text() for t in ax.texts] for ax in fig.axes] == [
        ["1%"], [], [], ["2%"], ["3%"], ["4%"]]
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["first", "second"]
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", "", "", ""]
    assert fig.get_size_inches()[0] <= viz.MAX_WIDTH
    assert _renders(fig)
    with pytest.raises(ValueError, match="3 row_labels for 2 rows"):
        viz.panel_rows(rows, ["x", "y", "z"])
    with pytest.raises(ValueError, match="notes must be 2 rows of 3"):
        viz.panel_rows(rows, notes=[["x"] * 3])
    with pytest.raises(ValueError, match="equal length"):
        viz.panel_rows([rows[0], rows[1][:2]])


def test_cam_grid_unknown_layer():
    with pytest.raises(ValueError, match="layer1"):
        viz.cam_grid(_images(2), _result(2), ["layer1"])


def test_gradcam_report_axes():
    photo = _images(1, 96)[0][:, :80]
    res = _result(1, layers=["layer1", "layer2", "layer3", "layer4"])
    fig = viz.gradcam_report(photo, _images(1)[0], res, 0, crop_box=(8, 0, 80), name="x.jpg")
    assert isinstance(fig, Figure)
    # photo, input, top-3; heatmap + overlay per layer; one colour bar for all maps
    assert len(_panels(fig)) == 1 + 2 + 2 * 4
    assert _colorbar_labels(fig) == [viz.PER_IMAGE_LABEL]
    assert "x.jpg" in fig.get_suptitle()
    assert _renders(fig)


def test_misclassified_gallery_axes():
    imgs = _images(5)
    true, pred, conf = [0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [0.9, 0.8, 0.7, 0.6, 0.5]
    fig = viz.misclassified_gallery(imgs, true, pred, conf, ncols=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    assert "true airplane" in fig.axes[0].get_title()
    assert _colorbar_labels(fig) == []  # no maps, no colour bar
    fig = viz.misclassified_gallery(imgs, true, pred, conf, cams=_result(5).maps["layer4"])
    assert len(_panels(fig)) == 10 and _colorbar_labels(fig) == [viz.PER_IMAGE_LABEL]
    fig = viz.misclassified_gallery(imgs[:0], [], [], [])
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert _renders(fig)


def test_training_curves_one_and_several_histories():
    fig = viz.training_curves(_history("course"))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)  # train and test
    fig = viz.training_curves({"course": _history("course"), "fast": _history("fast", 3, -0.2)})
    assert all(len(ax.get_lines()) == 4 for ax in fig.axes)
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert {"course", "fast", "train", "test"} <= set(legend)
    fig = viz.training_curves([_history("a"), _history("b")], labels=["A", "B"])
    assert "A" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert _renders(fig)


def test_per_class_bars():
    acc = np.linspace(0.5, 0.95, 10)
    fig = viz.per_class_bars(acc)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].patches) == 10
    fig = viz.per_class_bars({"course": acc, "fast": acc[::-1]})
    assert len(fig.axes[0].patches) == 20
    with pytest.raises(ValueError, match="10 classes"):
        viz.per_class_bars(acc[:9])
    assert _renders(fig)


def test_image_grid_has_one_axes_per_image():
    fig = viz.image_grid(list(_images(10)), titles=[str(i) for i in range(10)], ncols=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 10
    assert fig.axes[3].get_title() == "3"
    # float images, grayscale and CHW tensors are fine too
    fig = viz.image_grid([np.zeros((32, 32), np.float32), torch.rand(3, 32, 32)], ncols=8)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="titles"):
        viz.image_grid(_images(3), titles=["a"])
    assert _renders(fig)


def test_accuracy_vs_time_plots_the_published_seed_log_beside_a_run():
    from helpers import REPO

    published = History.from_epoch_csv(REPO / "runs" / "seed-published" / "seed_run_log.csv",
                                       recipe="course", device="Colab GPU (published log)")
    ours = History.load(REPO / "runs" / "fast-cpu-bf16-14ep" / "history.json")
    fig = viz.accuracy_vs_time({"seed, published": published, "fast": ours})
    assert isinstance(fig, Figure)
    ax_epochs, ax_minutes = fig.axes
    assert ax_minutes.get_xscale() == "log" and ax_epochs.get_xscale() == "linear"
    lines = ax_minutes.get_lines()
    assert len(lines) == 2 and lines[0].get_xdata()[-1] == pytest.approx(3379.434 / 60)
    assert max(lines[0].get_ydata()) == pytest.approx(87.29)


# --------------------------------------------------------------------------- colour scales


def _drawn(ax):
    """The RGB array an image panel shows."""
    return np.asarray(ax.get_images()[0].get_array(), dtype=np.float32)


def _two_images_one_twice_as_strong():
    """Image 0: every 4x4 cell 1.0, except a 0.5 corner; image 1: the same map times 2."""
    raw0 = torch.ones(4, 4)
    raw0[0, 0] = 0.5
    raw = torch.stack([raw0, 2 * raw0])
    up = torch.nn.functional.interpolate(raw[:, None], size=(32, 32), mode="bilinear",
                                         align_corners=False)[:, 0]
    from s9lib.explain.cam import normalize_maps

    res = _result(2, layers=["layer4"])
    res.maps, res.raw = {"layer4": normalize_maps(up)}, {"layer4": raw}
    return res


def test_every_cam_figure_has_a_labelled_colour_bar():
    res = _result(3)
    figs = {"cam_grid": viz.cam_grid(_images(3), res, LAYERS),
            "overlays only": viz.cam_grid(_images(3), res, "layer4", heatmaps=False),
            "report": viz.gradcam_report(_images(1, 64)[0], _images(1)[0], res, 0),
            "gallery": viz.misclassified_gallery(_images(3), [0, 1, 2], [1, 2, 3],
                                                 [0.9, 0.8, 0.7], cams=res.maps["layer4"]),
            "panel_rows": viz.panel_rows([[viz.overlay(_images(1)[0], res.maps["layer4"][0])]],
                                         colorbar="per-image"),
            "cam_scales": viz.cam_scales(_images(3), res)}
    for name, fig in figs.items():
        labels = _colorbar_labels(fig)
        assert labels, f"{name} has no colour bar"
        assert viz.PER_IMAGE_LABEL in labels, name
        assert "weakest" in viz.PER_IMAGE_LABEL and "min-max" in viz.PER_IMAGE_LABEL
        assert _renders(fig)
    assert len(_colorbar_labels(figs["cam_scales"])) == 2  # one per scale
    assert "0 (dark blue) = no evidence" in _colorbar_labels(figs["cam_scales"])[1]
    # a figure without maps needs none, and can still be asked not to draw one
    assert _colorbar_labels(viz.panel_rows([list(_images(2))])) == []
    assert _colorbar_labels(viz.cam_grid(_images(2), _result(2), colorbar=False)) == []


def test_shared_scale_gives_equal_values_equal_colours_across_images():
    res = _two_images_one_twice_as_strong()
    fig = viz.cam_grid(_images(2), res, "layer4", scale="shared")
    heat0, heat1 = _drawn(fig.axes[1]), _drawn(fig.axes[4])  # rows: image, heatmap, overlay
    # raw value 1.0: image 0's far corner, image 1's near corner (its 0.5 * 2)
    np.testing.assert_allclose(heat0[31, 31], heat1[0, 0], atol=1e-6)
    np.testing.assert_allclose(heat1[31, 31], [128 / 255, 0, 0], atol=1e-6)  # 2.0: the max
    maps, vmax = viz.shared_maps(res, "layer4")
    assert vmax == 2.0 and maps.shape == (2, 4, 4)
    np.testing.assert_allclose(maps[0], res.raw["layer4"][0].numpy() / 2)
    labels = _colorbar_labels(fig)
    assert len(labels) == 1 and "layer4" in labels[0] and "0 = none" in labels[0]
    bar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"][0]
    assert bar.get_xlim() == pytest.approx((0.0, 2.0))  # in raw CAM units


def test_per_image_scale_draws_each_maps_own_range_blue_to_red():
    """Documented behaviour: a map and the same map twice as strong look the same, and each
    map's weakest cell is dark blue although it holds half the strongest cell's value."""
    res = _two_images_one_twice_as_strong()
    fig = viz.cam_grid(_images(2), res, "layer4")  # scale="per-image" is the default
    heat0, heat1 = _drawn(fig.axes[1]), _drawn(fig.axes[4])
    np.testing.assert_allclose(heat0, heat1, atol=1e-6)
    np.testing.assert_allclose(heat0[0, 0], [0, 0, 128 / 255], atol=1e-6)  # 0.5 -> dark blue
    np.testing.assert_allclose(heat0[31, 31], [128 / 255, 0, 0], atol=1e-6)  # 1.0 -> dark red
    bar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"][0]
    assert bar.get_xlim() == pytest.approx((0.0, 1.0))


def test_colour_bar_colours_are_the_heatmaps_colours():
    cmap = viz.jet_colormap()
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        # the bar looks colours up at int(256 v), the heatmap at uint8(255 v): one step apart
        np.testing.assert_allclose(cmap(v)[:3], viz.heatmap(np.full((1, 1), v))[0, 0],
                                   atol=5 / 255)


def test_bad_scale_is_a_clear_value_error():
    res = _result(2)
    calls = [lambda: viz.cam_grid(_images(2), res, scale="global"),
             lambda: viz.gradcam_report(_images(1)[0], _images(1)[0], res, 0, scale="global"),
             lambda: viz.panel_rows([list(_images(2))], colorbar="global")]
    for call, name in zip(calls, ["scale", "scale", "colorbar"]):
        with pytest.raises(ValueError, match=f"{name} must be 'per-image'.*'shared'.*got 'global'"):
            call()
    with pytest.raises(ValueError, match="colorbar='shared' needs cam_max"):
        viz.panel_rows([list(_images(2))], colorbar="shared")


def test_gradcam_report_on_a_shared_scale_has_a_bar_per_layer():
    res = _result(1, layers=["layer3", "layer4"])
    fig = viz.gradcam_report(_images(1, 64)[0], _images(1)[0], res, 0, scale="shared")
    labels = _colorbar_labels(fig)
    assert len(labels) == 2 and labels[0].startswith("layer3") and labels[1].startswith("layer4")
    assert _renders(fig)


def test_all_zero_maps_on_a_shared_scale_stay_blue_without_nan():
    res = _result(2, layers=["layer4"])
    res.raw = {"layer4": torch.zeros(2, 4, 4)}
    maps, vmax = viz.shared_maps(res, "layer4")
    assert vmax == 0.0 and not maps.any()
    fig = viz.cam_grid(_images(2), res, scale="shared")
    np.testing.assert_allclose(_drawn(fig.axes[1])[5, 5], [0, 0, 128 / 255], atol=1e-6)
    assert _renders(fig)
