"""Reading and writing volumes: one entry point each way, geometry attached at this boundary.

>>> from medseg.io import load_volume, save_volume, scan     # doctest: +SKIP
>>> vol = load_volume("ct_folder/", series=0)                   # doctest: +SKIP
>>> save_volume(vol, "ct.nii.gz")                               # doctest: +SKIP

Readers: DICOM (a file, a folder or a tree of studies/series; classic and enhanced
multi-frame; compressed transfer syntaxes through pylibjpeg), NIfTI (nibabel), NRRD and
MetaImage (SimpleITK). Writers: NIfTI, NRRD, MHA; every write is atomic and refuses to
replace an input file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from medseg.errors import InputError, option
from medseg.io._atomic import atomic_output, refuse_overwriting_inputs, write_text_atomic
from medseg.io._formats import WRITABLE_SUFFIXES, guess_format, is_dicom_seg
from medseg.io._series import SeriesInfo
from medseg.progress import CancelToken, ProgressCallback
from medseg.volume import Volume

__all__ = [
    "load_volume",
    "save_volume",
    "scan",
    "SeriesInfo",
    "atomic_output",
    "write_text_atomic",
    "refuse_overwriting_inputs",
]


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            try:
                os.stat(p)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InputError(p, "is a symbolic link that points back to itself",
                                     "fix or remove the looping link") from exc
            raise InputError(p, f"is a symbolic link to {os.readlink(p)}, which does not exist", "fix the link")
        raise InputError(p, "does not exist", "check the path")
    if p.is_dir():
        try:
            next(p.iterdir(), None)
        except PermissionError as exc:
            raise InputError(p, "cannot be read (permission denied)", "check its permissions") from exc
    elif not os.access(p, os.R_OK):
        raise InputError(p, "cannot be read (permission denied)", "check its permissions")
    return p


def scan(path: str | os.PathLike, *, progress: ProgressCallback | None = None) -> list[SeriesInfo]:
    """List every image found at ``path`` without reading voxel data where the format allows.

    A DICOM folder gives one :class:`SeriesInfo` per series (or per part of a series that mixes
    orientations, image types or echoes); an image file gives one.
    """
    p = _existing(path)
    fmt = guess_format(p)
    if fmt in ("dicom", "dicom-folder"):
        from medseg.io import _dicom

        return _dicom.scan_dicom(p, progress=progress)
    if fmt == "nifti":
        from medseg.io._nifti import read_nifti_header

        header = read_nifti_header(p)
        return [_file_info(p, fmt, header["shape"], header["affine"], header["problems"], header["notes"])]
    if fmt in ("nrrd", "mha"):
        from medseg.io._itk import read_itk_header

        header = read_itk_header(p)
        return [_file_info(p, fmt, header["shape"], header["affine"], header["problems"])]
    raise InputError(p, "is not a recognised image (DICOM, NIfTI, NRRD or MHA)",
                     "give a .nii/.nii.gz/.nrrd/.mha file or a DICOM file or folder")


def _file_info(path: Path, fmt: str, shape: tuple[int, ...], affine, problems=(), notes=()) -> SeriesInfo:
    import numpy as np
    from nibabel.orientations import aff2axcodes

    problems = list(problems)
    if len(shape) < 3 or (len(shape) == 3 and shape[2] == 1):
        problems.append("2D image: a 3D volume is needed")
    if len([s for s in shape[3:] if s != 1]) > 0:
        problems.append(f"{len(shape)}D image: medseg reads 3D volumes")
    spacing = tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    try:
        orientation = "".join(aff2axcodes(affine)) if np.all(np.isfinite(affine)) else "???"
    except (ValueError, np.linalg.LinAlgError):  # a singular affine: reported among the problems
        orientation = "???"
    return SeriesInfo(index=0, key=path.name, path=str(path), format=fmt, shape=tuple(shape),
                      spacing_mm=spacing, orientation=orientation,
                      n_slices=int(shape[2]) if len(shape) > 2 else 1, n_files=1,
                      problems=tuple(problems), notes=tuple(notes), readable=not problems)


def load_volume(
    path: str | os.PathLike,
    series: str | int | None = None,
    *,
    allow_gaps: bool = False,
    allow_2d: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Volume:
    """Read one 3D volume from a DICOM file/folder, NIfTI, NRRD or MHA file.

    Parameters
    ----------
    path : path-like
        A file, or a folder searched recursively for DICOM.
    series : str or int, optional
        Which series to read when ``path`` holds several: the index shown by :func:`scan`
        (``medseg info``) or the SeriesInstanceUID/key. Required when there are several.
    allow_gaps : bool
        Read a DICOM series with missing slices anyway (the gap stays in the geometry as
        non-uniform spacing is not representable, so the slices are placed on the regular grid
        and the missing ones are filled with the minimum value). Default: refuse, naming the gap.
    allow_2d : bool
        Accept a single slice as a volume of depth 1.
    progress, cancel
        See :mod:`medseg.progress`.

    Returns
    -------
    Volume
        HU for CT; geometry in RAS (see :mod:`medseg.volume` for the axis order).

    Raises
    ------
    InputError
        With one line naming the file, the problem and what to do.
    """
    p = _existing(path)
    fmt = guess_format(p)
    if fmt == "dicom" and series in (None, 0, "0") and is_dicom_seg(p):
        # A DICOM SEG file: its class map on the SEG's own grid, with segment labels as names
        # (medseg.io._dicom_seg.read_seg with the source series gives the series' whole grid).
        from medseg.io._dicom_seg import read_seg

        found = read_seg(p)
        return found.labels if found.labels is not None else found.lesions
    if fmt in ("dicom", "dicom-folder"):
        from medseg.io import _dicom

        return _dicom.read_dicom(p, series, allow_gaps=allow_gaps, allow_2d=allow_2d,
                                 progress=progress, cancel=cancel)
    if series not in (None, 0, "0"):
        raise InputError(p, f"is a single {fmt or 'image'} file; {option('series', series)} does not apply",
                         f"leave out {option('series')}")
    if fmt == "nifti":
        from medseg.io._nifti import read_nifti

        return _with_label_table(read_nifti(p, allow_2d=allow_2d), p)
    if fmt in ("nrrd", "mha"):
        from medseg.io._itk import read_itk

        return _with_label_table(read_itk(p, allow_2d=allow_2d), p)
    raise InputError(p, "is not a recognised image (DICOM, NIfTI, NRRD or MHA)",
                     "give a .nii/.nii.gz/.nrrd/.mha file or a DICOM file or folder")


def _with_label_table(volume: Volume, path: Path) -> Volume:
    """Attach the value -> name table beside an integer label file (``X.nii.gz`` -> ``X.json``)."""
    if volume.array.dtype.kind not in "iub":
        return volume
    from medseg.labels import find_label_table

    label_set = find_label_table(path)
    return volume if label_set is None else volume.with_labels(label_set)


def save_volume(volume: Volume, path: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = (),
                label_table: bool = True) -> Path:
    """Write ``volume`` to NIfTI (.nii/.nii.gz), NRRD (.nrrd) or MetaImage (.mha), atomically.

    The file appears only when complete. Refuses to write over the volume's own source file
    or any path in ``inputs``. A label map with a ``label_set`` also gets its names beside it
    (``X.nii.gz`` -> ``X.json``, and the 3D Slicer / ITK-SNAP colour tables ``X.ctbl`` and
    ``X.itksnap.txt``; ``label_table=False`` to skip).

    Returns
    -------
    Path
        The written file.
    """
    out = Path(path)
    name = out.name.lower()
    suffix = next((s for s in WRITABLE_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise InputError(out, "has an unknown output format",
                         f"use one of {', '.join(WRITABLE_SUFFIXES)}")
    if out.is_dir():
        raise InputError(out, "is a folder", "give a file name such as out.nii.gz")
    refuse_overwriting_inputs(out, (volume.source.path, *inputs))
    with atomic_output(out) as tmp:
        if suffix in (".nii.gz", ".nii"):
            from medseg.io._nifti import write_nifti

            write_nifti(volume, tmp)
        else:
            from medseg.io._itk import write_itk

            write_itk(volume, tmp)
    if label_table and volume.label_set is not None:
        from medseg.labels import label_table_path, write_label_table

        sidecar = label_table_path(out)
        refuse_overwriting_inputs(sidecar, (volume.source.path, *inputs))
        write_label_table(volume.label_set, sidecar)
        from medseg.export.colour_tables import write_colour_tables

        # Names and colours for 3D Slicer (X.ctbl) and ITK-SNAP (X.itksnap.txt) beside the map too.
        write_colour_tables(volume.label_set, out, inputs=(volume.source.path, *inputs))
    return out
