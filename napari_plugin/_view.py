"""What a radiologist expects to see: the three standard planes, CT windows, and going to a lesion.

World axes in the viewer are RAS mm (0 = x towards the patient's Right, 1 = y Anterior, 2 = z
Superior; see :mod:`napari_plugin._geometry`). The planes follow the radiological convention of
PACS, 3D Slicer and ITK-SNAP:

* **axial** (slice along z): anterior at the top, the patient's right on the screen's left;
* **coronal** (slice along y): superior at the top, the patient's right on the screen's left;
* **sagittal** (slice along x): superior at the top, anterior on the screen's left.

Keyboard (installed on the viewer by :func:`install_shortcuts`): Alt+1..4 = abdomen, lung, bone
and brain windows on CT layers; Alt+7, 8, 9 = axial, coronal, sagittal. No Qt here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_plugin._layers import CT_WINDOWS, layer_info

__all__ = [
    "AXIS_LABELS",
    "PLANES",
    "RADIOLOGICAL_ORIENTATION",
    "SHORTCUTS",
    "axial_when_added",
    "go_to",
    "install_shortcuts",
    "layer_slice_index",
    "set_window",
    "show_axial",
    "show_plane",
]

#: World axes as the dims sliders name them (RAS mm).
AXIS_LABELS = ("x (R)", "y (A)", "z (S)")

#: napari camera (depth, vertical, horizontal): +vertical world axis up, +horizontal world axis to
#: the left, which with the plane's axes below gives the radiological view.
RADIOLOGICAL_ORIENTATION = ("towards", "up", "left")

#: Plane -> napari ``dims.order`` (last two displayed: rows, columns) in RAS world axes.
PLANES = {
    "axial": (2, 1, 0),     # slice z; rows y (anterior up), columns x (right on the left)
    "coronal": (1, 2, 0),   # slice y; rows z (superior up), columns x
    "sagittal": (0, 2, 1),  # slice x; rows z, columns y (anterior on the left)
}

#: Key -> (what it does, argument).
SHORTCUTS = {
    "Alt-1": ("window", "abdomen"), "Alt-2": ("window", "lung"), "Alt-3": ("window", "bone"),
    "Alt-4": ("window", "brain"), "Alt-7": ("plane", "axial"), "Alt-8": ("plane", "coronal"),
    "Alt-9": ("plane", "sagittal"),
}


def _camera(viewer: Any) -> Any:
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; older versions have viewer.camera
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def show_plane(viewer: Any, plane: str = "axial", *, reset: bool = True) -> None:
    """Show ``plane`` ("axial", "coronal" or "sagittal") in radiological orientation.

    The current position is kept (the slice through the same point), so switching planes at a
    lesion shows the same lesion; ``reset`` fits the view to the data.
    """
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {', '.join(PLANES)}, not {plane!r}")
    if viewer.dims.ndim < 3:
        return
    extra = tuple(range(viewer.dims.ndim - 3))  # leading non-spatial axes stay in front
    viewer.dims.order = extra + tuple(a + len(extra) for a in PLANES[plane])
    viewer.dims.axis_labels = tuple(viewer.dims.axis_labels[: len(extra)]) + AXIS_LABELS
    _camera(viewer).orientation = RADIOLOGICAL_ORIENTATION
    if reset:
        viewer.reset_view()


def show_axial(viewer: Any) -> None:
    """The axial plane, radiological, fitted to the data."""
    show_plane(viewer, "axial")


def _ct_layers(viewer: Any) -> list[Any]:
    out = []
    for layer in viewer.layers:
        info = layer_info(layer)
        if info is not None and info.role == "image" and layer.contrast_limits is not None \
                and info.modality.upper() in ("CT", ""):
            out.append(layer)
    return out


def set_window(viewer: Any, preset: str) -> list[Any]:
    """Apply a CT window (``"abdomen"``, ``"lung"``, ``"bone"``, ``"brain"``) to the CT image
    layers (the selected ones if any are selected); returns the layers changed."""
    if preset not in CT_WINDOWS:
        raise ValueError(f"window must be one of {', '.join(CT_WINDOWS)}, not {preset!r}")
    level, width = CT_WINDOWS[preset]
    layers = _ct_layers(viewer)
    selected = [layer for layer in layers if layer in viewer.layers.selection]
    for layer in selected or layers:
        low, high = level - width / 2, level + width / 2
        range_low, range_high = layer.contrast_limits_range
        layer.contrast_limits_range = (min(range_low, low), max(range_high, high))
        layer.contrast_limits = (low, high)
    return selected or layers


def install_shortcuts(viewer: Any) -> None:
    """Bind :data:`SHORTCUTS` on ``viewer`` (again: the same bindings)."""
    for key, (what, argument) in SHORTCUTS.items():
        if what == "window":
            def action(v: Any, preset: str = argument) -> None:
                set_window(v, preset)
        else:
            def action(v: Any, plane: str = argument) -> None:
                show_plane(v, plane, reset=False)
        action.__doc__ = f"medseg: {argument} {'window' if what == 'window' else 'plane'}"
        viewer.bind_key(key, action, overwrite=True)


def go_to(viewer: Any, world_point: Any) -> None:
    """Move the slice to ``world_point`` (RAS mm) and centre the view on it (zoom unchanged)."""
    point = np.asarray(world_point, dtype=np.float64)
    ndim = viewer.dims.ndim
    lead = ndim - 3
    for axis in viewer.dims.not_displayed:
        if axis >= lead:
            viewer.dims.set_point(axis, float(point[axis - lead]))
    displayed = [a for a in viewer.dims.displayed]
    centre = tuple(float(point[a - lead]) for a in displayed)
    _camera(viewer).center = centre


def axial_when_added(viewer: Any) -> None:
    """Show the radiological axial plane as soon as this plugin's first layer enters an empty viewer
    (a reader returns data; napari adds the layers after it returns)."""
    if viewer is None or len(viewer.layers):
        return

    def on_inserted(event: Any) -> None:
        viewer.layers.events.inserted.disconnect(on_inserted)
        if layer_info(event.value) is not None and viewer.dims.ndim >= 3:
            show_plane(viewer, "axial")

    viewer.layers.events.inserted.connect(on_inserted)


def layer_slice_index(layer: Any, viewer: Any) -> tuple[int, ...]:
    """The layer's data index at the viewer's current point (rounded): which slice is shown."""
    return tuple(round(float(v)) for v in layer.world_to_data(viewer.dims.point))
