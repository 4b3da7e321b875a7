"""napari writer: a label layer (and the scan's lesions) as a DICOM SEG that references its DICOM series.

File > Save Selected Layers with a ``.dcm`` name calls :func:`write_dicom_seg`, which calls
:func:`medseg.export.dicom_seg.export_seg` (highdicom: segments with SNOMED codes, lesions with
stable tracking UIDs; written atomically, never over an input). The labels must lie on a DICOM
series: their own source when they were computed on or read with it, else an open DICOM image on
the same grid. Anything else is one notification and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.errors import InputError, MedsegError
from napari_plugin._geometry import same_world_grid
from napari_plugin._layers import layer_info, volume_from_layer
from napari_plugin._notify import notify_error, notify_info
from napari_plugin._writer import _contiguous, _info, _named

__all__ = ["write_dicom_seg"]


def _viewer_layers() -> list[Any]:
    try:
        from napari import current_viewer

        viewer = current_viewer()
    except ImportError:  # pragma: no cover - napari is what calls this
        return []
    return list(viewer.layers) if viewer is not None else []


def write_dicom_seg(path: str, data: Any, meta: dict, *, layers: list[Any] | None = None) -> list[str]:
    """npe2 single-layer writer: a labels layer to a DICOM SEG at ``path``.

    ``layers``: the viewer's layers (default: the current viewer's), searched for the DICOM image the
    labels lie on and for the scan's lesions layer.
    """
    from medseg.export.dicom_seg import export_seg

    name = str(meta.get("name", "labels"))
    try:
        info = _info((data, meta))
        if info is None:
            raise InputError(name, "was not opened or made by medseg, so the DICOM series it belongs to is unknown",
                             "draw labels on a layer made from the DICOM image, or save them as NIfTI")
        if info.role == "lesions":
            raise InputError(name, "is a lesions layer; a DICOM SEG is written from the organ labels (the scan's "
                             "lesions go with them)", "select the organ labels layer and save that")
        layers = _viewer_layers() if layers is None else layers
        on_grid = [layer for layer in layers if layer_info(layer) is not None
                   and same_world_grid(layer_info(layer).geometry, info.geometry)]
        grid: Any = None
        dicom = None
        if info.source.format != "dicom" or not any(info.source.sop_instance_uids):
            image = next((layer for layer in on_grid if layer_info(layer).role == "image"
                          and layer_info(layer).source.format == "dicom"), None)
            if image is None:
                where = info.source.path or "memory"
                raise InputError(name, f"was not made on a DICOM series (it comes from {where}) and no DICOM image "
                                 "of its grid is open", "open the DICOM series the labels belong to, or save them "
                                 "as .nii.gz")
            grid, dicom = image, _contiguous(volume_from_layer(image))
        labels = _named(_contiguous(volume_from_layer((data, meta), grid=grid)))
        lesions_layer = next((layer for layer in on_grid if layer_info(layer).role == "lesions"), None)
        lesions = (_contiguous(volume_from_layer(lesions_layer, grid=grid if grid is not None else (data, meta)))
                   if lesions_layer is not None and lesions_layer.data.any() else None)
        export_seg(labels, dicom, path, lesions=lesions, kind="correction", provenance=info.provenance or None)
    except MedsegError as error:
        notify_error(error)
        return []
    notify_info(f"medseg: wrote DICOM SEG {path}" + (" with the lesions" if lesions is not None else ""))
    return [str(Path(path))]
