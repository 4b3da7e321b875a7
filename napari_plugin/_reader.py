"""napari reader: DICOM folders/files, NIfTI, NRRD and MHA through ``medseg.io.load_volume``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from medseg.io._formats import guess_format

__all__ = ["get_reader", "read"]


def get_reader(path: str | list[str]) -> Callable | None:
    """Return :func:`read` if medseg can open ``path`` (napari tries the next reader otherwise)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read if guess_format(path) in ("nifti", "nrrd", "mha", "dicom", "dicom-folder") else None


def read(path: str | list[str]) -> list[tuple]:
    """Load one volume; errors surface in napari as a notification carrying medseg's one line."""
    from medseg.io import load_volume
    from napari_plugin._view import layer_data_from_volume

    path = path[0] if isinstance(path, list) else path
    volume = load_volume(path)
    name = Path(os.fspath(path).rstrip("/")).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return [layer_data_from_volume(volume, name)]
