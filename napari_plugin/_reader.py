"""napari reader: DICOM folders and files, NIfTI, NRRD, MHA, and medseg case folders.

Everything is read by :func:`medseg.io.load_volume` / :func:`medseg.case.read_case` (geometry,
names and DICOM UIDs attached once, at the IO boundary) and becomes layers through
:func:`napari_plugin._layers.layer_data_from_volume`.

* A **case folder** opens as image + organ labels + lesion instances in one go.
* A **DICOM folder holding several series** opens a series picker docked in the viewer
  (:class:`napari_plugin._widgets.series.SeriesPicker`); nothing is read until one is chosen.
* A **label map** opened over images must lie on the grid of one of them; otherwise nothing is
  added (labels shifted by millimetres would be read as wrong anatomy, silently).
* A **DICOM SEG** opens on the grid of the open DICOM image it references (else on its own grid),
  an **RTSTRUCT** with the CT series beside it (:mod:`napari_plugin._reader_dicom`).
* **Bad input** (no image in a folder, a damaged case, an unreadable file) gives one notification
  with medseg's message and adds nothing (``[(None,)]``, napari's "nothing to add").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.errors import InputError, MedsegError
from medseg.io._formats import guess_format
from medseg.volume import Volume
from napari_plugin._geometry import layer_geometry, same_world_grid
from napari_plugin._layers import (
    LayerInfo,
    layer_data_from_volume,
    layer_info,
    looks_like_labels,
    rows_from_records,
)
from napari_plugin._notify import notify_error, notify_warning
from napari_plugin._view import axial_when_added

__all__ = [
    "NOTHING",
    "announce",
    "check_labels_grid",
    "get_reader",
    "layer_name",
    "read",
    "read_case_layers",
    "read_volume_layers",
]

#: napari's sentinel for "read fine, nothing to add" (no second reader is tried).
NOTHING = [(None,)]

_FILE_FORMATS = ("nifti", "nrrd", "mha", "dicom")


def get_reader(path: str | list[str]) -> Callable | None:
    """Return :func:`read` if medseg should open ``path`` (napari tries the next reader otherwise).

    Files are claimed by format; folders always (DICOM, case, or a clear "no image here"),
    except a Zarr store, which is another reader's.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(os.fspath(path))
    if p.is_dir():
        if any((p / marker).exists() for marker in (".zarray", ".zgroup", "zarr.json")):
            return None
        return read
    return read if guess_format(p) in _FILE_FORMATS else None


def layer_name(path: str | os.PathLike) -> str:
    """A layer name from a path: the file name without its image suffix."""
    name = Path(os.fspath(path).rstrip("/\\")).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _viewer() -> Any:
    try:
        from napari import current_viewer

        return current_viewer()
    except ImportError:  # pragma: no cover - napari is what calls this module
        return None


def read(path: str | list[str]) -> list[tuple]:
    """Read ``path`` into layer data; errors become one notification and nothing is added."""
    path = path[0] if isinstance(path, list) else path
    viewer = _viewer()
    try:
        out = _read(Path(os.fspath(path)), viewer)
    except MedsegError as error:
        notify_error(error)
        return NOTHING
    announce(out)
    if out is not NOTHING:
        axial_when_added(viewer)
    return out


def announce(layer_data: list[tuple]) -> None:
    """Tell the user what napari cannot show exactly (oblique grids) or what was changed (ids)."""
    for data in layer_data:
        if len(data) < 2 or not isinstance(data[1].get("metadata", {}).get("medseg"), LayerInfo):
            continue  # nothing, or not a medseg layer (RTSTRUCT contours)
        info = data[1]["metadata"]["medseg"]
        if info.geometry.problem():
            notify_warning(f"{data[1]['name']}: {info.geometry.problem()}")
        if info.renumbered:
            notify_warning(f"{data[1]['name']}: lesion ids had gaps and were renumbered 1..{len(info.renumbered)} "
                           "(napari sizes its colour table by the largest id)")


def _read(path: Path, viewer: Any) -> list[tuple]:
    from medseg.case import CASE_FILE, FILES, is_case

    if path.is_dir():
        if is_case(path) or (path / CASE_FILE).is_file():
            return read_case_layers(path)
        if (path / FILES["labels"]).is_file() and (path / FILES["names"]).is_file():
            return read_case_layers(path, require_manifest=False)
        return _read_dicom_folder(path, viewer)
    if guess_format(path) == "dicom":
        from medseg.io._formats import is_dicom_seg
        from medseg.io._rtstruct import is_rtstruct

        if is_dicom_seg(path):
            from napari_plugin._reader_dicom import read_seg_layers

            return read_seg_layers(path, viewer)
        if is_rtstruct(path):
            from napari_plugin._reader_dicom import read_rtstruct_layers

            return read_rtstruct_layers(path)
    return read_volume_layers(path, viewer)


def _read_dicom_folder(path: Path, viewer: Any) -> list[tuple]:
    from medseg.io import scan

    try:
        infos = scan(path)
    except InputError as error:
        if "no DICOM" not in error.problem:
            raise
        infos = []
    readable = [info for info in infos if info.readable]
    if not infos:
        files = sorted(p.name for p in path.iterdir())[:3] if path.is_dir() else []
        raise InputError(path, f"holds no image: no DICOM series, and it is not a medseg case folder (no case.json)"
                         f"{'; it holds ' + ', '.join(files) if files else '; it is empty'}",
                         "open a DICOM series folder, a case folder, or a NIfTI/NRRD/MHA file")
    if len(readable) > 1 and viewer is not None and getattr(viewer, "window", None) is not None:
        from napari_plugin._widgets.series import SeriesPicker

        picker = SeriesPicker(viewer, path, infos)
        viewer.window.add_dock_widget(picker, name=f"Series in {path.name}", area="right")
        return NOTHING
    # One series, or no window to pick in: load_volume picks the only one or lists them in its error.
    return read_volume_layers(path, viewer)


def read_volume_layers(path: str | os.PathLike, viewer: Any = None, *, series: str | int | None = None,
                       name: str | None = None) -> list[tuple]:
    """Layer data for one image or label file (or DICOM series).

    Raises
    ------
    InputError
        Unreadable input, or a label map that lies on none of the open images' grids.
    """
    from medseg.io import load_volume

    volume = load_volume(path, series)
    name = name or layer_name(path)
    if volume.source.series_description and guess_format(path) == "dicom-folder" and series is not None:
        name = f"{name} {volume.source.series_description}"
    if looks_like_labels(volume, name):
        check_labels_grid(volume, viewer, name)
        return [layer_data_from_volume(volume, name)]
    return [layer_data_from_volume(volume, name, kind="image")]


def check_labels_grid(volume: Volume, viewer: Any, name: str) -> None:
    """Refuse a label map whose voxel centres are not those of any image open in ``viewer``.

    The same voxels stored in another order (a DICOM series read LPS, its labels written LAS) are
    the same grid: napari shows both on one lattice and the case save reorders exactly.
    """
    import numpy as np

    images = [(layer.name, layer_info(layer).geometry) for layer in getattr(viewer, "layers", [])
              if layer_info(layer) is not None and layer_info(layer).role == "image"]
    if not images:
        return
    mine = layer_geometry(volume.affine, volume.shape)
    if any(same_world_grid(mine, geometry) for _, geometry in images):
        return
    image_name, geo = images[-1]
    spacing = np.linalg.norm(geo.affine[:3, :3], axis=0)

    def grid(shape: Any, spacing_mm: Any, origin: Any) -> str:
        return (f"{'x'.join(str(int(s)) for s in shape)} voxels of {'x'.join(f'{s:g}' for s in spacing_mm)} mm "
                f"from ({', '.join(f'{o:.1f}' for o in origin)}) mm")

    raise InputError(name, f"lies on another grid ({grid(volume.shape, volume.spacing, volume.origin)}) than "
                     f"the image {image_name} ({grid(geo.volume_shape, spacing, geo.affine[:3, 3])}); nothing "
                     "was added", "open the label map made on this image, or resample it onto the image first")


def read_case_layers(path: str | os.PathLike, *, require_manifest: bool = True) -> list[tuple]:
    """Image, organ labels and lesion instances of a case folder, with its provenance on the layers."""
    from medseg.case import read_case

    case = read_case(path, require_manifest=require_manifest)
    name = Path(os.fspath(path).rstrip("/\\")).name
    labels = case.labels
    image = case.image
    lesions = case.lesions
    notes = []
    if image is not None and not labels.same_grid(image):
        raise InputError(case.image_path or path, f"is not on the grid of the case's labels ({image.shape} vs "
                         f"{labels.shape})", "the case refers to another image; open the labels file alone")
    if image is None:
        where = case.provenance.get("source_image") or "image.nii.gz"
        notes.append(f"{name}: the image ({where}) was not found; showing the labels only")
        notify_warning(notes[-1])
    provenance = dict(case.provenance)
    provenance.setdefault("case_version", case.version)
    out = []
    if image is not None:
        out.append(layer_data_from_volume(image, f"{name} image", kind="image"))
    out.append(layer_data_from_volume(labels, f"{name} labels", kind="labels", provenance=provenance,
                                      case_path=str(case.path), notes=notes))
    if lesions is not None:
        out.append(layer_data_from_volume(lesions, f"{name} lesions", kind="lesions", provenance=provenance,
                                          case_path=str(case.path)))
        info = out[-1][1]["metadata"]["medseg"]
        reviewed = (provenance.get("review") or {}).get("reviewed_lesions") or []
        info.reviewed = {int(i) for i in reviewed}
        if case.lesion_rows and not info.renumbered:
            info.lesion_rows = rows_from_records(case.lesion_rows)
    return out
