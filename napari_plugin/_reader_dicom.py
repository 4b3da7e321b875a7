"""DICOM SEG and RTSTRUCT files as layers (called by :mod:`napari_plugin._reader`).

* **DICOM SEG** (:func:`medseg.io._dicom_seg.read_seg`): read on the grid of an open DICOM image
  it references (every open DICOM image layer is tried; one the SEG does not reference is skipped),
  else on the SEG's own grid (the slab its frames cover, said in a notification). One labels layer
  per class map (segments that overlap are spread over several maps), named after its segments,
  plus the lesions as a lesions layer when the SEG holds medseg lesion segments.
* **RTSTRUCT** (:func:`medseg.io._rtstruct.read_rtstruct`): the CT series beside it is found and
  read; the CT, the label map and the lesions become layers, each warning a notification, and the
  contours as drawn in the file a Shapes layer (polygons on their slices, placed like the CT).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from napari_plugin._layers import layer_data_from_volume, layer_info, volume_from_layer
from napari_plugin._notify import notify_warning

__all__ = ["MAX_CONTOURS", "contour_shapes", "read_rtstruct_layers", "read_seg_layers"]

#: More contours than this are left out of the Shapes layer (napari draws each polygon as an object).
MAX_CONTOURS = 3000


def _stem(path: Path) -> str:
    name = path.name
    return name[:-4] if name.lower().endswith(".dcm") else name


def read_seg_layers(path: str | os.PathLike, viewer: Any = None) -> list[tuple]:
    """Layer data of a DICOM SEG (see the module docstring)."""
    from medseg.io._dicom_seg import read_seg

    path = Path(path)
    result = None
    for layer in list(getattr(viewer, "layers", [])):
        info = layer_info(layer)
        if info is None or info.role != "image" or info.source.format != "dicom":
            continue
        try:
            result = read_seg(path, volume_from_layer(layer), split_overlapping=True)
            break
        except InputError as error:
            if "references" not in error.problem:
                raise
    if result is None:
        result = read_seg(path, None, split_overlapping=True)
    for warning in result.warnings:
        notify_warning(warning)
    stem = _stem(path)
    out = []
    for index, volume in enumerate(result.maps):
        names = [lab.name for lab in volume.label_set if lab.value] if volume.label_set is not None else []
        shown = ", ".join(names[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")
        name = f"{stem} {shown}" if shown else f"{stem} [{index + 1}]"
        out.append(layer_data_from_volume(volume, name, kind="labels"))
    if result.lesions is not None:
        out.append(layer_data_from_volume(result.lesions.with_labels(None), f"{stem} lesions", kind="lesions"))
    return out


def contour_shapes(result: Any, geometry: Any, ks: Any = None) -> tuple[list[np.ndarray], list[tuple], list[str]]:
    """Polygons (layer data indices of the CT's layer), edge colours and ROI names of the contours on
    slices ``ks`` (default: all, up to :data:`MAX_CONTOURS`)."""
    from medseg.io._rtstruct import slice_contours

    if ks is None:
        ks = sorted({contour.k for roi in result.rois for contour in roi.contours})
    polygons, colours, names = [], [], []
    for k in ks:
        for item in slice_contours(result, int(k)):
            polygons.append(geometry.layer_index(np.asarray(item["points"], dtype=np.float64)))
            colours.append((*item["colour"], 1.0))
            names.append(item["name"])
            if len(polygons) >= MAX_CONTOURS:
                return polygons, colours, names
    return polygons, colours, names


def read_rtstruct_layers(path: str | os.PathLike) -> list[tuple]:
    """Layer data of an RTSTRUCT and the CT it was drawn on (see the module docstring)."""
    from medseg.io._rtstruct import read_rtstruct

    path = Path(path)
    result = read_rtstruct(path)
    for warning in result.warnings:
        notify_warning(f"{path.name}: {warning}")
    stem = _stem(path)
    image = layer_data_from_volume(result.image, f"{stem} CT", kind="image")
    out = [image, layer_data_from_volume(result.labels, f"{stem} labels", kind="labels")]
    if result.lesions is not None:
        out.append(layer_data_from_volume(result.lesions, f"{stem} lesions", kind="lesions"))
    geometry = image[1]["metadata"]["medseg"].geometry
    polygons, colours, names = contour_shapes(result, geometry)
    n_all = sum(len(roi.contours) for roi in result.rois)
    if polygons:
        if len(polygons) < n_all:
            notify_warning(f"{path.name}: {n_all} contours; the first {len(polygons)} are drawn as shapes (the label "
                           "layers hold all of them)")
        out.append((polygons, {"name": f"{stem} contours", "shape_type": "polygon", "edge_color": colours,
                               "face_color": "transparent", "edge_width": 0.5, "features": {"roi": names},
                               **geometry.layer_kwargs()}, "shapes"))
    elif n_all == 0:
        raise InputError(path, "holds no contours", "open the structure set that has the drawn ROIs")
    return out
