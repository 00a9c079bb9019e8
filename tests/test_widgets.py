"""s9lib.show.widgets: sliders over precomputed frames, linked in the browser (jslink).

jslink runs only in a browser, so these tests check the structure the browser needs: one
LinkModel per stack from the slider's ``index`` to the stack's ``selected_index``, one frame
per label, and a widget state that serialises (PNG bytes as buffers, the links included).
tests/test_book.py checks the same in a built page; book/screenshots.mjs moves the slider.
"""

from __future__ import annotations

import json

import ipywidgets as widgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from ipywidgets.embed import embed_data  # noqa: E402

from s9lib.show.widgets import figure_to_png, frame_slider, layer_explorer, to_png  # noqa: E402

pytestmark = pytest.mark.unit


def _fig(value: float):
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.imshow([[value, 1 - value]], vmin=0, vmax=1)
    ax.set_axis_off()
    return fig


def _png(value: float) -> bytes:
    return figure_to_png(_fig(value), dpi=20)


LABELS = ["layer1", "layer2", "layer3", "layer4"]


def test_figure_to_png_renders_and_closes():
    fig = _fig(0.5)
    data = figure_to_png(fig, dpi=20)
    assert data.startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)


def test_to_png_accepts_bytes_and_figures_and_rejects_others():
    png = _png(0.1)
    assert to_png(png) == png
    assert to_png(_fig(0.2)).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="not a PNG"):
        to_png(b"GIF89a")
    with pytest.raises(TypeError, match="PNG bytes or a matplotlib Figure"):
        to_png("frame.png")


def test_single_set_structure_and_links():
    frames = [_png(i / 3) for i in range(4)]
    box = frame_slider(frames, LABELS, description="layer")
    assert box.selector is None
    assert box.children == (box.slider, box.view)
    assert list(box.slider.options) == LABELS
    stack = box.view
    assert isinstance(stack, widgets.Stack)
    assert len(stack.children) == 4
    assert all(isinstance(c, widgets.Image) and c.format == "png" for c in stack.children)
    assert [c.value for c in stack.children] == frames
    (link,) = box.links
    assert isinstance(link, widgets.widget_link.Link)  # jslink's widget, runs in the browser
    assert link._model_name == "LinkModel"
    assert link.source == (box.slider, "index")
    assert link.target == (stack, "selected_index")
    assert box.slider.index == stack.selected_index == 0


def test_initial_value_is_applied_to_slider_and_stack():
    box = frame_slider([_png(i / 3) for i in range(4)], LABELS, value=2)
    assert box.slider.index == 2 and box.slider.value == "layer3"
    assert box.view.selected_index == 2


def test_image_sets_get_a_selector_linked_to_an_outer_stack():
    sets = [[_fig(i / 3) for i in range(4)], [_png(1 - i / 3) for i in range(4)]]
    box = layer_explorer(sets, set_names=["test images", "mistakes"])
    assert isinstance(box.selector, widgets.ToggleButtons)
    assert list(box.selector.options) == ["test images", "mistakes"]
    assert box.children == (box.selector, box.slider, box.view)
    assert len(box.view.children) == 2 and list(box.view.children) == box.stacks
    assert [len(s.children) for s in box.stacks] == [4, 4]
    assert list(box.slider.options) == LABELS  # default labels
    links = {(l.source[0].model_id, l.source[1], l.target[0].model_id, l.target[1])
             for l in box.links}
    expected = {(box.slider.model_id, "index", s.model_id, "selected_index") for s in box.stacks}
    expected.add((box.selector.model_id, "index", box.view.model_id, "selected_index"))
    assert links == expected


def test_widget_state_serialises_with_links_and_png_buffers():
    sets = [[_png(i / 3) for i in range(4)], [_png(1 - i / 3) for i in range(4)]]
    box = layer_explorer(sets, set_names=["a", "b"])
    data = embed_data(views=[box])  # what a notebook stores (metadata.widgets) and HTML embeds
    state = data["manager_state"]["state"]
    json.dumps(data["manager_state"])  # JSON-serialisable, PNG bytes base64-encoded
    by_id = {k: v for k, v in state.items()}
    link_ids = {l.model_id for l in box.links}
    assert link_ids <= set(by_id)
    assert {by_id[i]["model_name"] for i in link_ids} == {"LinkModel"}
    for l in box.links:
        src, tgt = by_id[l.model_id]["state"]["source"], by_id[l.model_id]["state"]["target"]
        assert src[0] == f"IPY_MODEL_{l.source[0].model_id}" and src[1] == l.source[1]
        assert tgt[0] == f"IPY_MODEL_{l.target[0].model_id}" and tgt[1] == "selected_index"
    frame_ids = [img.model_id for stack in box.stacks for img in stack.children]
    images = [by_id[i] for i in frame_ids]
    assert len(images) == 8 and {v["model_name"] for v in images} == {"ImageModel"}
    assert all(v.get("buffers") for v in images)  # the PNGs travel as buffers
    (view,) = data["view_specs"]
    assert view["model_id"] == box.model_id


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(frames=[]), "at least one image set"),
        (dict(frames=[[b"\x89PNG"] * 3]), "3 frames but there are 4 labels"),
        (dict(frames=[[b"\x89PNG"] * 4], labels=["a", "a", "b", "c"]), "distinct"),
        (dict(frames=[[b"\x89PNG"] * 4], set_names=["x", "y"]), "1 image sets but 2"),
        (dict(frames=[[b"\x89PNG"] * 4], value=4), r"value must be in \[0, 3\]"),
    ],
)

def test_bad_arguments_raise_clear_errors(kwargs, message):
    kwargs.setdefault("labels", LABELS)
    with pytest.raises(ValueError, match=message):
        layer_explorer(**kwargs)
