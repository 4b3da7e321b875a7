"""How medseg volumes become napari layers, and the radiological axial view.

Kept free of Qt imports: layer data tuples are plain Python, so the core can be tested without a
display and the reader works in headless napari too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.volume import Volume

__all__ = ["layer_data_from_volume", "looks_like_labels", "show_axial", "RADIOLOGICAL_ORIENTATION"]

#: napari camera (depth, vertical, horizontal) for axial slices in radiological convention:
#: anterior at the top (+y up) and the patient's right on the screen's left (+x to the left).
RADIOLOGICAL_ORIENTATION = ("towards", "up", "left")

# CT soft-tissue window (level 40 HU, width 400 HU): what a radiologist expects for an abdomen.
_CT_WINDOW = (-160.0, 240.0)


def looks_like_labels(volume: Volume, name: str = "") -> bool:
    """Integer data with few non-negative values, or a file named like a label map."""
    array = volume.array
    if array.dtype.kind not in "biu":
        return False
    lowered = name.lower()
    if any(word in lowered for word in ("label", "seg", "mask", "lesion", "organ")):
        return True
    if volume.modality in ("CT", "MR", "PT"):
        return False
    sample = array[:: max(1, array.shape[0] // 32), :: max(1, array.shape[1] // 32), :]
    values = np.unique(sample)
    return bool(values.min() >= 0 and values.size <= 64 and values.max() < 4096)


def layer_data_from_volume(volume: Volume, name: str, *, kind: str | None = None) -> tuple[Any, dict, str]:
    """A napari LayerData tuple ``(data, kwargs, layer_type)`` placing ``volume`` in RAS mm."""
    kind = kind or ("labels" if looks_like_labels(volume, name) else "image")
    kwargs: dict[str, Any] = {
        "name": name,
        "affine": np.asarray(volume.affine),
        "metadata": {"medseg_source": volume.source.path, "medseg_modality": volume.modality,
                     "medseg_orientation": volume.orientation},
    }
    if kind == "labels":
        data = volume.array if volume.array.dtype.kind in "iu" else volume.array.astype(np.uint8)
        return data, kwargs, "labels"
    if volume.modality == "CT" or (volume.array.min() < -500 and volume.array.max() > 200):
        kwargs["contrast_limits"] = _CT_WINDOW
    kwargs["colormap"] = "gray"
    return volume.array, kwargs, "image"


def show_axial(viewer: Any) -> None:
    """Slice along world z (S-I) and orient the camera radiologically; centre the view."""
    if viewer.dims.ndim >= 3:
        order = list(range(viewer.dims.ndim))
        z = viewer.dims.ndim - 1  # world axes are (x, y, z) in RAS
        viewer.dims.order = tuple([a for a in order if a not in (z, z - 1, z - 2)] + [z, z - 1, z - 2])
        # napari >= 0.9 moved the camera to viewer.scene; older versions have viewer.camera.
        scene = getattr(viewer, "scene", None)
        camera = scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
        camera.orientation = RADIOLOGICAL_ORIENTATION
    viewer.reset_view()
