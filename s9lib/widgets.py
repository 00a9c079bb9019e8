"""Sliders over precomputed frames that keep working in the static HTML book.

Why precomputed frames and ``jslink``: ``interact`` calls back into a Python kernel, which a
reader of the HTML book (and nbval's strict mode) does not have. Here every frame is rendered
to PNG bytes up front and held by an ``Image`` widget inside a ``Stack``; the slider is linked
to the stack's ``selected_index`` with :func:`ipywidgets.jslink`, a link that lives in the
browser. The notebook stores the widget state (models, PNG bytes and the ``LinkModel``), and
the HTML manager in the built book rebuilds the same widgets with no kernel.

    from s9lib.widgets import layer_explorer
    layer_explorer([[fig_l1, fig_l2, fig_l3, fig_l4]], labels=["layer1", "layer2", "layer3", "layer4"])

``frames`` may hold matplotlib Figures (rendered with :func:`figure_to_png` and closed) or
PNG bytes.
"""

from __future__ import annotations

import io
from typing import Sequence, Union

import ipywidgets as widgets

__all__ = ["figure_to_png", "to_png", "frame_slider", "layer_explorer"]

Frame = Union[bytes, "matplotlib.figure.Figure"]  # noqa: F821


def figure_to_png(fig, *, dpi: int = 100, close: bool = True) -> bytes:
    """Render a matplotlib Figure to PNG bytes; by default close it so it is not shown twice."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buf.getvalue()


def to_png(frame: Frame, *, dpi: int = 100) -> bytes:
    """PNG bytes for a frame given as PNG bytes (returned as is) or as a Figure."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        data = bytes(frame)
        if not data.startswith(b"\x89PNG"):
            raise ValueError("frame bytes are not a PNG image; pass PNG bytes or a Figure")
        return data
    if hasattr(frame, "savefig"):
        return figure_to_png(frame, dpi=dpi)
    raise TypeError(f"a frame must be PNG bytes or a matplotlib Figure, got {type(frame).__name__}")


def _image_stack(frames: Sequence[Frame], dpi: int, width: str | None) -> widgets.Stack:
    images = [widgets.Image(value=to_png(f, dpi=dpi), format="png",
                            layout=widgets.Layout(width=width) if width else widgets.Layout())
              for f in frames]
    return widgets.Stack(images, selected_index=0)


def layer_explorer(frames: Sequence[Sequence[Frame]], labels: Sequence[str] | None = None, *,
                   set_names: Sequence[str] | None = None, description: str = "layer",
                   set_description: str = "images", dpi: int = 100,
                   width: str | None = None, value: int = 0) -> widgets.VBox:
    """A slider over frame labels (e.g. layer1..layer4) and, optionally, a selector of image sets.

    ``frames[s][i]``: the frame for image set ``s`` at slider position ``i`` (a Figure or PNG
    bytes); every set must have ``len(labels)`` frames. ``labels`` default to ``layer1`` ..
    ``layerN``. ``set_names`` (one per set) label the selector, shown only when there is more
    than one set. ``width`` sets the CSS width of each image (e.g. ``"600px"``).

    Returns a ``VBox``: [selector,] slider, view. The slider's ``index`` is linked in the
    browser to ``selected_index`` of each set's ``Stack`` and the selector's ``index`` to the
    outer ``Stack``, so it works in static HTML. ``box.slider``, ``box.selector``,
    ``box.stacks``, ``box.view`` and ``box.links`` give access to the parts (tests use them).
    """
    sets = [list(s) for s in frames]
    if not sets or not sets[0]:
        raise ValueError("frames must hold at least one image set with at least one frame")
    n = len(sets[0])
    if labels is None:
        labels = [f"layer{i + 1}" for i in range(n)]
    labels = [str(x) for x in labels]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct (the slider shows them): {labels}")
    for s, frame_list in enumerate(sets):
        if len(frame_list) != len(labels):
            raise ValueError(f"image set {s} has {len(frame_list)} frames but there are "
                             f"{len(labels)} labels {labels}; give one frame per label")
    if set_names is None:
        set_names = [f"set {s + 1}" for s in range(len(sets))]
    set_names = [str(x) for x in set_names]
    if len(set_names) != len(sets):
        raise ValueError(f"{len(sets)} image sets but {len(set_names)} set_names")
    if not 0 <= value < n:
        raise ValueError(f"value must be in [0, {n - 1}], got {value}")

    slider = widgets.SelectionSlider(
        options=labels, index=value, description=description, continuous_update=True,
        readout=True, style={"description_width": "initial"},
        layout=widgets.Layout(width="min(420px, 100%)"))
    stacks = [_image_stack(f, dpi, width) for f in sets]
    links = []
    for stack in stacks:
        stack.selected_index = value
        links.append(widgets.jslink((slider, "index"), (stack, "selected_index")))

    selector = None
    if len(stacks) == 1:
        view = stacks[0]
        children = [slider, view]
    else:
        view = widgets.Stack(stacks, selected_index=0)
        selector = widgets.ToggleButtons(options=set_names, index=0,
                                         description=set_description,
                                         style={"description_width": "initial",
                                                "button_width": "auto"})
        links.append(widgets.jslink((selector, "index"), (view, "selected_index")))
        children = [selector, slider, view]

    box = widgets.VBox(children)
    box.slider, box.selector, box.stacks, box.view, box.links = slider, selector, stacks, view, links
    return box


def frame_slider(frames: Sequence[Frame], labels: Sequence[str], *, description: str = "",
                 dpi: int = 100, width: str | None = None, value: int = 0) -> widgets.VBox:
    """One slider over one list of frames (e.g. a transform's strength): ``layer_explorer``
    with a single image set."""
    return layer_explorer([frames], labels, description=description, dpi=dpi, width=width,
                          value=value)
