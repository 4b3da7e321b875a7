"""NRRD and MetaImage (.mha/.mhd) reading and writing through SimpleITK.

SimpleITK stores geometry as LPS origin, spacing and a row-major 3x3 direction matrix whose
columns are the axis directions; we convert to medseg's RAS affine at this boundary. Its
numpy view is ``(z, y, x)``: we transpose to medseg's ``(i, j, k)`` without copying.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import InputError
from medseg.io._checks import require_3d_shape, require_finite, require_scalar_dtype
from medseg.volume import SourceInfo, Volume, affine_from_lps, affine_problem

__all__ = ["read_itk", "read_itk_header", "write_itk", "volume_to_sitk", "sitk_to_volume"]


def _reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise InputError(path, f"is not a readable NRRD/MetaImage file ({first})",
                         "check that the file is complete") from exc
    return reader


def _geometry(dimension: int, spacing, origin, direction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3D spacing/origin/direction from ITK geometry of any dimension (2D gets a unit k axis)."""
    d = int(dimension)
    sp = np.ones(3)
    org = np.zeros(3)
    dirm = np.eye(3)
    n = min(d, 3)
    sp[:n] = np.asarray(spacing, dtype=np.float64)[:n]
    org[:n] = np.asarray(origin, dtype=np.float64)[:n]
    dirm[:n, :n] = np.asarray(direction, dtype=np.float64).reshape(d, d)[:n, :n]
    return sp, org, dirm


def read_itk_header(path: Path) -> dict:
    reader = _reader(path)
    size = tuple(int(s) for s in reader.GetSize())
    sp, org, dirm = _geometry(reader.GetDimension(), reader.GetSpacing(), reader.GetOrigin(),
                              reader.GetDirection())
    affine = affine_from_lps(sp, org, dirm)
    bad = affine_problem(affine)
    return {"shape": size, "components": reader.GetNumberOfComponents(), "affine": affine,
            "problems": [f"unusable geometry: {bad}"] if bad else []}


def sitk_to_volume(image: sitk.Image, where: str, *, modality: str = "", source: SourceInfo | None = None,
                   allow_2d: bool = False) -> Volume:
    """Convert a SimpleITK image to a Volume (array transposed to (i, j, k), LPS -> RAS)."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(where, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                         "(a colour or vector image)", "give a grey-level volume or label map")
    shape = require_3d_shape(tuple(image.GetSize()), where, allow_2d=allow_2d)
    array = sitk.GetArrayFromImage(image)
    require_scalar_dtype(array.dtype, where)
    array = array.reshape(shape[::-1]).transpose(2, 1, 0)
    require_finite(array, where)
    sp, org, dirm = _geometry(image.GetDimension(), image.GetSpacing(), image.GetOrigin(),
                              image.GetDirection())
    affine = affine_from_lps(sp, org, dirm)
    bad = affine_problem(affine)
    if bad:
        raise InputError(where, f"has unusable geometry in its header: {bad}",
                         "fix the spacing/direction in the tool that wrote it")
    return Volume(array, affine, modality, source or SourceInfo(path=where))


def read_itk(path: Path, *, allow_2d: bool = False) -> Volume:
    """Read NRRD/MHA/MHD into a :class:`Volume`."""
    reader = _reader(path)
    where = str(path)
    if reader.GetNumberOfComponents() != 1:
        raise InputError(where, f"has {reader.GetNumberOfComponents()} components per voxel "
                         "(a colour or vector image)", "give a grey-level volume or label map")
    require_3d_shape(tuple(reader.GetSize()), where, allow_2d=allow_2d)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(where, "voxel data cannot be read (truncated or damaged file)",
                         "re-export the file") from exc
    fmt = "nrrd" if where.lower().endswith((".nrrd", ".nhdr")) else "mha"
    modality = ""
    if reader.HasMetaDataKey("Modality"):
        modality = reader.GetMetaData("Modality").replace("MET_MOD_", "")
    return sitk_to_volume(image, where, modality=modality, source=SourceInfo(path=where, format=fmt),
                          allow_2d=allow_2d)


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with the volume's voxels and LPS geometry."""
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in volume.spacing])
    image.SetOrigin([float(o) for o in volume.origin_lps])
    image.SetDirection([float(d) for d in volume.direction_lps.ravel()])
    return image


def write_itk(volume: Volume, path: Path) -> None:
    """Write NRRD or MHA (compressed), chosen by ``path``'s suffix."""
    sitk.WriteImage(volume_to_sitk(volume), str(path), useCompression=True)
