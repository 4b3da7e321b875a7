"""NIfTI-1/2 reading and writing with nibabel.

Geometry is nibabel's resolved ``img.affine`` (sform if its code is set, else qform, else the
pixdim fall-back), which is what every NIfTI tool in the field uses. The reader keeps the
stored integer type when the file has no scaling, so a CT in int16 stays int16 (half the
memory of float32) and label maps stay integers.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.errors import InputError
from medseg.io._checks import require_3d_shape, require_finite, require_scalar_dtype
from medseg.volume import SourceInfo, Volume, affine_problem

__all__ = ["read_nifti", "read_nifti_header", "write_nifti", "nifti_problems"]

#: sform and qform further apart than this (mm, at any corner of the grid) are reported.
FORM_DISAGREEMENT_MM = 0.1


def _load(path: Path) -> nib.Nifti1Image:
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for damaged files
        raise InputError(path, f"is not a readable NIfTI file ({exc})",
                         "check that the file is complete and really NIfTI") from exc


def _affine(img: nib.Nifti1Image) -> np.ndarray:
    """nibabel's resolved affine; NaN where the header's forms cannot even be decoded (a NaN
    quaternion makes nibabel's SVD fail), so :func:`affine_problem` reports it in one line."""
    try:
        return np.asarray(img.affine, dtype=np.float64)
    except Exception:  # noqa: BLE001 - numpy.linalg.LinAlgError, ValueError from broken forms
        return np.full((4, 4), np.nan)


def read_nifti_header(path: Path) -> dict:
    """Shape, spacing and orientation without reading voxel data (for ``medseg info``)."""
    img = _load(path)
    return {
        "shape": tuple(int(s) for s in img.shape),
        "dtype": img.get_data_dtype(),
        "affine": _affine(img),
        "sform_code": int(img.header["sform_code"]) if "sform_code" in img.header else 0,
        "qform_code": int(img.header["qform_code"]) if "qform_code" in img.header else 0,
        "problems": nifti_problems(path, img),
        "notes": _form_notes(img),
    }


def _form_notes(img: nib.Nifti1Image) -> list[str]:
    """sform and qform both set but placing the grid differently: say by how much, and which wins."""
    header = img.header
    if int(header.get("sform_code", 0)) <= 0 or int(header.get("qform_code", 0)) <= 0:
        return []
    try:
        sform, qform = header.get_sform(), header.get_qform()
    except Exception:  # noqa: BLE001 - a qform nibabel cannot decode is reported by the geometry check
        return []
    corners = np.array([[i, j, k, 1.0] for i in (0, img.shape[0] - 1) for j in (0, img.shape[1] - 1)
                        for k in (0, (img.shape[2] - 1) if len(img.shape) > 2 else 0)])
    gap = float(np.max(np.linalg.norm((corners @ sform.T - corners @ qform.T)[:, :3], axis=1)))
    if not np.isfinite(gap) or gap <= FORM_DISAGREEMENT_MM:
        return []
    return [f"sform and qform disagree by up to {gap:.1f} mm; medseg (like nibabel, ITK-SNAP and MONAI) uses "
            "the sform, tools that read the qform place the image elsewhere"]


def _expected_bytes(img: nib.Nifti1Image) -> int:
    # The proxy knows where the voxels start (the header field may say 0 for a single-file .nii).
    offset = int(getattr(img.dataobj, "offset", 0) or img.header.get_data_offset())
    return offset + int(np.prod(img.shape, dtype=np.int64)) * img.get_data_dtype().itemsize


def nifti_problems(path: Path, img: nib.Nifti1Image | None = None) -> list[str]:
    """What makes a NIfTI unreadable that its header alone does not show: a broken affine, or a
    file shorter than its header says (checked from the size, or a .nii.gz's gzip trailer)."""
    import gzip

    img = img if img is not None else _load(path)
    problems = []
    bad = affine_problem(_affine(img))
    if bad:
        problems.append(f"unusable geometry: {bad}")
    expected = _expected_bytes(img)
    size = path.stat().st_size
    if not str(path).lower().endswith(".gz"):
        if size < expected:
            problems.append(f"truncated: {size} bytes, the header needs {expected}")
        return problems
    with open(path, "rb") as handle:  # ISIZE: the uncompressed size mod 2^32, the last 4 bytes
        handle.seek(max(size - 4, 0))
        trailer = int.from_bytes(handle.read(4), "little")
    if trailer == expected % (1 << 32):
        return problems
    try:  # no match (several gzip members, or damage): decompress to be sure
        with gzip.open(path, "rb") as handle:
            total = 0
            while chunk := handle.read(1 << 24):
                total += len(chunk)
        if total < expected:
            problems.append(f"truncated: {total} bytes after decompression, the header needs {expected}")
    except (OSError, EOFError) as exc:
        problems.append(f"truncated or damaged gzip stream ({exc})")
    return problems


def _scaled_array(img: nib.Nifti1Image, where: str) -> np.ndarray:
    """Voxel values with the header's scl_slope/scl_inter applied, in the narrowest exact dtype."""
    proxy = img.dataobj
    slope = getattr(proxy, "slope", 1.0)
    inter = getattr(proxy, "inter", 0.0)
    slope = 1.0 if slope is None or not np.isfinite(slope) else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    try:
        raw = np.asarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asarray(proxy)
    except Exception as exc:
        raise InputError(where, f"voxel data cannot be read ({exc})",
                         "the file is probably truncated; re-export it") from exc
    if slope == 1.0 and inter == 0.0:
        return np.array(raw, copy=True) if isinstance(raw, np.memmap) else raw
    if raw.dtype.kind in "iu" and slope.is_integer() and inter.is_integer():
        # Integer scaling stays integer: keep the smallest integer type that holds the result.
        lo, hi = (raw.min(), raw.max()) if raw.size else (0, 0)
        ends = np.array([lo, hi], dtype=np.int64) * int(slope) + int(inter)
        for dtype in (np.int16, np.int32, np.int64):
            info = np.iinfo(dtype)
            if info.min <= ends.min() and ends.max() <= info.max:
                return (raw.astype(dtype) * dtype(slope) + dtype(inter)).astype(dtype, copy=False)
    return img.get_fdata(dtype=np.float32)


def read_nifti(path: Path, *, allow_2d: bool = False) -> Volume:
    """Read a .nii/.nii.gz file as a :class:`Volume` (RAS affine as nibabel resolves it)."""
    where = str(path)
    img = _load(path)
    bad = affine_problem(_affine(img))
    if bad:
        raise InputError(where, f"has unusable geometry in its header: {bad}",
                         "fix the sform/qform or pixdim in the tool that wrote it")
    require_scalar_dtype(img.get_data_dtype(), where)
    shape = require_3d_shape(img.shape, where, allow_2d=allow_2d)
    array = _scaled_array(img, where)
    if array.shape != shape:  # 2D, or 4D with one volume: only singleton axes are added/dropped
        array = array.reshape(shape)
    require_finite(array, where)
    warnings: list[str] = []
    header = img.header
    if int(header.get("sform_code", 0)) == 0 and int(header.get("qform_code", 0)) == 0:
        warnings.append("no sform/qform in the header: geometry comes from pixdim alone")
    warnings += _form_notes(img)
    descrip = header["descrip"].item() if "descrip" in header else b""
    source = SourceInfo(path=where, format="nifti", warnings=tuple(warnings),
                        series_description=descrip.decode("latin-1", "replace").strip("\x00 "))
    return Volume(array, np.asarray(img.affine, dtype=np.float64), "", source)


def _storable(array: np.ndarray) -> np.ndarray:
    """NIfTI has no bool, and int64 labels confuse many viewers: pick a narrower exact type."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype in (np.int64, np.uint64) and array.size:
        lo, hi = int(array.min()), int(array.max())
        for dtype in (np.uint8, np.int16, np.uint16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return array.astype(dtype)
    return array


def write_nifti(volume: Volume, path: Path) -> None:
    """Write ``volume`` to ``path`` (.nii or .nii.gz) with sform and qform both set (code 1).

    Both codes set is what dcm2niix writes; viewers that honour only the qform (some older
    ones) then see the same geometry as those that honour the sform.
    """
    img = nib.Nifti1Image(_storable(volume.array), volume.affine)
    img.set_sform(volume.affine, code=1)
    img.set_qform(volume.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if volume.source.series_description:
        img.header["descrip"] = volume.source.series_description[:79].encode("ascii", "replace")
    # Label maps must not be rescaled on write; nibabel leaves integer data unscaled.
    if volume.array.dtype.kind in "iub":
        img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, str(path))
