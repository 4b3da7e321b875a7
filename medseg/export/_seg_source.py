"""The source series of a DICOM SEG: its grid (without decoding pixels) and the headers highdicom needs.

highdicom's Segmentation copies patient and study from the first source image and references
every image by its UIDs; for the geometry it needs each image's position, orientation and pixel
spacing. Reading only those attributes of images 2..n (``specific_tags``) makes a 300-slice
series cost ~0.1 s instead of parsing every header in full, and gives highdicom small datasets
it walks quickly.

Some real series have their UIDs only in the file meta (``example_ct_dicom`` of TotalSegmentator
has empty SOPInstanceUID, SeriesInstanceUID and StudyInstanceUID elements). A SEG must name its
source images; the SOP UIDs are taken from the file meta (as medseg's reader does) and a missing
study or series UID is derived from the images' SOP UIDs, so every export of that series names
the same UIDs. The export reports it as a warning.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.volume import Volume

__all__ = ["SourceSeries", "derived_uid", "describe_grid", "read_source"]

#: What highdicom reads from each source image besides the first (geometry and references).
_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
         "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns",
         "Modality", "NumberOfFrames"]


def derived_uid(*parts: object) -> str:
    """A ``2.25`` UID derived from ``parts`` (a name-based UUID, ITU-T X.667): same parts, same UID."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'medseg/' + '/'.join(str(p) for p in parts)).int}"


def describe_grid(volume: Volume) -> str:
    """``512x512x20 voxels of 0.977x0.977x2 mm, LPS, first voxel at (x, y, z) mm RAS``."""
    spacing = "x".join(f"{s:.4g}" for s in volume.spacing)
    origin = ", ".join(f"{o:.2f}" for o in volume.origin)
    return f"{'x'.join(map(str, volume.shape))} voxels of {spacing} mm, {volume.orientation}, first voxel at ({origin}) mm RAS"


class SourceSeries:
    """A source series read for a SEG: ``grid`` (header-only :class:`Volume`), ``datasets`` for
    highdicom, the ``series_uid``/``study_uid`` they carry (derived where the files have none)
    and ``warnings``."""

    def __init__(self, grid: Volume, datasets: list, warnings: list[str]):
        self.grid = grid
        self.datasets = datasets
        self.warnings = warnings
        self.series_uid = str(datasets[0].SeriesInstanceUID)
        self.study_uid = str(datasets[0].StudyInstanceUID)


def read_source(source: str | os.PathLike | Volume, series: str | int | None = None, *,
                allow_gaps: bool = False) -> SourceSeries:
    """Read the source series (a DICOM folder/file, or a volume read from DICOM) for an export."""
    from medseg.io._dicom_seg import series_plan

    plan = None
    if isinstance(source, Volume):
        grid = source
        where = source.source.path or "the source volume"
        if grid.source.format != "dicom" or not grid.source.extra.get("files"):
            raise InputError(where, "was not read from DICOM files, so a SEG cannot refer to its images",
                             "give the DICOM series the labels were made on")
    else:
        where = str(source)
        grid, plan = series_plan(source, series, allow_gaps=allow_gaps, allow_2d=True)
    return SourceSeries(grid, *_datasets(grid, where, plan))


def _from_frames(plan, first) -> list:
    """Datasets for images 2..n from the reader's parsed headers (no second parse of every file)."""
    from pydicom.dataset import Dataset

    out = []
    first = Path(first).resolve()
    for frame in plan.frames:
        if Path(frame.path).resolve() == first:
            continue
        meta = frame.meta
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = meta.sop_class_uid, meta.sop_instance_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = meta.study_uid, meta.series_uid
        ds.FrameOfReferenceUID, ds.Modality = meta.frame_of_reference_uid, meta.modality
        ds.ImagePositionPatient = [float(v) for v in frame.ipp]
        ds.ImageOrientationPatient = [float(v) for v in frame.iop]
        ds.PixelSpacing = [float(v) for v in frame.pixel_spacing]
        ds.Rows, ds.Columns = frame.rows, frame.cols
        out.append(ds)
    return out


def _datasets(grid: Volume, where: str, plan=None) -> tuple[list, list[str]]:
    import pydicom

    src = grid.source
    root = Path(src.path)
    files = [root / name if root.is_dir() else root for name in src.extra["files"] if name]
    ordered = list(dict.fromkeys(files))  # a multi-frame file names every slice
    warnings: list[str] = []
    try:
        if len(ordered) == 1 and len(files) > 1:  # one multi-frame image: highdicom needs it whole
            datasets = [pydicom.dcmread(ordered[0], stop_before_pixels=True)]
        else:
            datasets = [pydicom.dcmread(ordered[0], stop_before_pixels=True)]
            if plan is not None and all(f.layout == "single" and f.ipp is not None and f.iop is not None
                                        and f.pixel_spacing is not None for f in plan.frames):
                datasets += _from_frames(plan, str(ordered[0]))
            else:
                datasets += [pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_TAGS) for f in ordered[1:]]
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InputError(where, f"cannot be read again ({exc})", "check that the series was not moved or changed") \
            from exc
    if "SpecificCharacterSet" in datasets[0] and not str(datasets[0].SpecificCharacterSet or "").strip("\\ "):
        del datasets[0].SpecificCharacterSet  # empty means the default repertoire (GE writes it so)
    for ds in datasets:
        meta = getattr(ds, "file_meta", None)
        for element, fallback in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
                                  ("SOPClassUID", "MediaStorageSOPClassUID")):
            if not str(ds.get(element, "") or "") and meta is not None and meta.get(fallback):
                setattr(ds, element, str(meta.get(fallback)))
    sops = [str(ds.SOPInstanceUID) for ds in datasets]
    for element, name in (("StudyInstanceUID", "study"), ("SeriesInstanceUID", "series")):
        if not all(str(ds.get(element, "") or "") for ds in datasets):
            uid = derived_uid(f"source {name}", src.frame_of_reference_uid, *sorted(sops))
            for ds in datasets:
                setattr(ds, element, uid)
            warnings.append(f"{where}: the images have no {element}; the SEG refers to them with {uid}, derived from "
                            "their SOPInstanceUIDs (the same for every export of this series)")
    _check_positions(grid, datasets, where)
    return datasets, warnings


def _check_positions(grid: Volume, datasets: list, where: str) -> None:
    """Each single-frame image lies where the grid puts its slice (the reader sorted them)."""
    if len(datasets) != grid.shape[2]:
        return  # multi-frame source, or a series read with gaps: highdicom matches by position
    k_of = {uid: k for k, uid in enumerate(grid.source.sop_instance_uids)}
    for ds in datasets:
        k = k_of.get(str(ds.SOPInstanceUID))
        if k is None or "ImagePositionPatient" not in ds:
            raise InputError(where, f"image {ds.SOPInstanceUID} is not one of the series' slices",
                             "check that the series was not changed since it was read")
        expected = grid.affine_lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + grid.affine_lps[:3, 3]
        if np.linalg.norm(np.asarray(ds.ImagePositionPatient, float) - expected) > 0.25 * float(min(grid.spacing)):
            raise InputError(where, f"image {ds.SOPInstanceUID} lies at {list(ds.ImagePositionPatient)} mm, not on "
                             "the series' grid", "check that the series was not changed since it was read")
