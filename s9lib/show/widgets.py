"""Sliders over precomputed frames that keep working in the static HTML book.

Why precomputed frames and ``jslink``: ``interact`` calls back into a Python kernel, which a
reader of the HTML book (and nbval's strict mode) does not have. Here every frame is rendered
to PNG bytes up front and held by an ``Image`` widget inside a ``Stack``; the slider is linked
to the stack's ``selected_index`` with :func:`ipywidgets.jslink`, a link that lives in the
browser. The notebook stores the widget state (models, PNG bytes and the ``LinkModel``), and
the HTML manager in the built book rebuilds the same widgets with no kernel.

    from s9lib.show.widgets import frame_slider, layer_explorer
    frame_slider([fig_a, fig_b, fig_c], ["-0.5", "0", "+0.5"], description="brightness")
    layer_explorer([[l1, l2, l3, l4], [l1b, l2b, l3b, l4b]], set_names=["test", "photos"])

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


def frame_slider(frames: Sequence[Frame] | Sequence[Sequence[Frame]], labels: Sequence[str], *,
                 set_names: Sequence[str] | None = None, description: str = "",
                 set_description: str = "images", dpi: int = 100, width: str | None = None,
                 value: int = 0) -> widgets.VBox:
    """A slider over frames, one per label, and optionally a selector of image sets.

    ``frames``: one list of frames (Figures or PNG bytes), one per label; or one such list per
    image set, with ``set_names`` naming the sets (the selector shows when there are several).
    ``width`` sets the CSS width of each image (e.g. ``"600px"``). On a book page with math
    leave ``description`` empty: the static page's widget manager (html-manager 1.x) typesets
    a label with MathJax 2's ``MathJax.Hub``, which the book's MathJax 3 does not have, and
    the page stops with an error (the slider's readout still names the frame).

    Returns a ``VBox``: [selector,] slider, view. The slider's ``index`` is linked in the
    browser to ``selected_index`` of each set's ``Stack`` and the selector's ``index`` to the
    outer ``Stack``, so it works in static HTML. ``box.slider``, ``box.selector``,
    ``box.stacks``, ``box.view`` and ``box.links`` give access to the parts (tests use them).
    """
    nested = len(frames) > 0 and isinstance(frames[0], (list, tuple))
    sets = [list(s) for s in frames] if nested else [list(frames)]
    labels, set_names = _check_frames(sets, labels, set_names, value)
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


def _check_frames(sets: list[list], labels: Sequence[str], set_names: Sequence[str] | None,
                  value: int) -> tuple[list[str], list[str]]:
    """Labels and set names as strings, after checking they fit the frames."""
    if not sets or not sets[0]:
        raise ValueError("frames must hold at least one image set with at least one frame")
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
    if not 0 <= value < len(labels):
        raise ValueError(f"value must be in [0, {len(labels) - 1}], got {value}")
    return labels, set_names


def layer_explorer(frames: Sequence[Sequence[Frame]], labels: Sequence[str] | None = None, *,
                   set_names: Sequence[str] | None = None, **options) -> widgets.VBox:
    """The explorer of chapter 7: ``frames[s][i]`` shows image set ``s`` at layer ``i``.

    A :func:`frame_slider` whose slider is labelled "layer" and whose labels default to
    ``layer1`` .. ``layerN``; ``options`` as there (``dpi``, ``width``, ``value``, ...).
    """
    sets = [list(s) for s in frames]
    if labels is None:
        labels = [f"layer{i + 1}" for i in range(len(sets[0]) if sets else 0)]
    return frame_slider(sets, labels, set_names=set_names,
                        description=options.pop("description", "layer"), **options)
