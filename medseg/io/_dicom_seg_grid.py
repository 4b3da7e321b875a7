"""Where a DICOM SEG's frames go: on the source series' grid (checked), or on the SEG's own grid.

With the source series, every frame is placed on the slice of the source image it names
(``ReferencedSOPInstanceUID``, or ``ReferencedFrameNumber`` of a multi-frame source), after
checking that the SEG refers to that series and that each frame lies where its image lies
(position within a quarter voxel, orientation, pixel spacing, frame size). Frames come from
:mod:`medseg.io._dicom_seg_frames` (read directly) or from highdicom (:func:`highdicom_fetcher`,
for SEGs that reader leaves to it); without the source series, highdicom gives the SEG's own grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError, option
from medseg.volume import LPS_TO_RAS, Volume

__all__ = ["check_references", "frame_items", "highdicom_fetcher", "own_grid", "referenced_instances", "slices_of"]


def referenced_instances(seg) -> list[tuple[str, str]]:
    """(SeriesInstanceUID, SOPInstanceUID) of every image the SEG references, as highdicom's
    ``get_source_image_uids`` lists them (ReferencedSeriesSequence and the evidence sequences)."""
    out: list[tuple[str, str]] = []
    for holder in (seg, *seg.get("StudiesContainingOtherReferencedInstancesSequence", []),
                   *seg.get("SourceImageEvidenceSequence", [])):
        for series in holder.get("ReferencedSeriesSequence", []):
            instances = series.get("ReferencedSOPSequence") or series.get("ReferencedInstanceSequence") or []
            out += [(str(series.SeriesInstanceUID), str(item.ReferencedSOPInstanceUID)) for item in instances]
    return list(dict.fromkeys(out))


def frame_items(seg, per_frame=None) -> list[tuple[str, int | None, np.ndarray | None]]:
    """(referenced SOP instance UID, referenced frame number or None, LPS position or None) per frame.

    ``per_frame``: the same read directly (positions None where the frame has none of its own);
    otherwise read from the data set's PerFrameFunctionalGroupsSequence.
    """
    shared = (seg.get("SharedFunctionalGroupsSequence") or [None])[0]
    shared_pos = shared.PlanePositionSequence[0].ImagePositionPatient \
        if shared is not None and "PlanePositionSequence" in shared else None
    shared_pos = None if shared_pos is None else np.asarray(shared_pos, dtype=np.float64)
    if per_frame is not None:
        return [(uid, frame, shared_pos if pos is None else pos) for uid, frame, pos in per_frame]
    out = []
    for item in seg.get("PerFrameFunctionalGroupsSequence", []):
        uid, frame, pos = "", None, shared_pos
        for derivation in item.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                uid = str(source.ReferencedSOPInstanceUID)
                frame = int(source.ReferencedFrameNumber) if "ReferencedFrameNumber" in source else None
                break
        if "PlanePositionSequence" in item:
            pos = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
        out.append((uid, frame, pos))
    return out


def _shared_attribute(seg, sequence: str, keyword: str):
    for groups in (seg.get("SharedFunctionalGroupsSequence"), (seg.get("PerFrameFunctionalGroupsSequence") or [None])[:1]):
        if groups and groups[0] is not None and sequence in groups[0]:
            return getattr(groups[0][sequence][0], keyword, None)
    return None


def check_references(seg, grid: Volume, path: Path, where_source: str) -> None:
    """The SEG refers to this series' images, and only to images the series holds."""
    references = referenced_instances(seg)
    referenced = {sop for _, sop in references}
    series = sorted({series_uid for series_uid, _ in references})
    have = set(grid.source.sop_instance_uids)
    if referenced and not referenced & have:
        raise InputError(path, f"references series {', '.join(series) or '?'} ({len(referenced)} images), not the "
                         f"series in {where_source} ({grid.source.series_uid or 'no SeriesInstanceUID'})",
                         f"give the series the SEG was made on with {option('dicom')}")
    if referenced - have:
        raise InputError(path, f"references {len(referenced - have)} of its {len(referenced)} source images that are "
                         f"not in {where_source}", "give the whole series the SEG was made on")


def slices_of(seg, items: list, grid: Volume, path: Path, where_source: str) -> np.ndarray:
    """The slice k of each frame (-1: names no image of the grid), checking every frame lies on it."""
    n_i, n_j, _ = grid.shape
    if (int(seg.Columns), int(seg.Rows)) != (n_i, n_j):
        raise InputError(path, f"has {seg.Columns}x{seg.Rows}-pixel frames but the source images in {where_source} "
                         f"are {n_i}x{n_j}", "give the series the SEG was made on")
    orientation = _shared_attribute(seg, "PlaneOrientationSequence", "ImageOrientationPatient")
    if orientation is not None and not np.allclose(np.reshape(np.asarray(orientation, float), (2, 3)).T,
                                                   grid.direction_lps[:, :2], atol=1e-3):
        raise InputError(path, f"is oriented {list(orientation)}, not as the series in {where_source}",
                         "give the series the SEG was made on")
    spacing = _shared_attribute(seg, "PixelMeasuresSequence", "PixelSpacing")
    if spacing is not None and not np.allclose([float(spacing[1]), float(spacing[0])], grid.spacing[:2], rtol=1e-3):
        raise InputError(path, f"has pixel spacing {list(spacing)} mm, the series in {where_source} "
                         f"{grid.spacing[1]:.6g}/{grid.spacing[0]:.6g} mm", "give the series the SEG was made on")
    k_of_uid = {uid: k for k, uid in enumerate(grid.source.sop_instance_uids) if uid}
    k_of_frame = {n: k for k, n in enumerate(grid.source.extra.get("frame_numbers") or [])}
    tolerance = 0.25 * float(min(grid.spacing))
    out = np.full(len(items), -1, np.int64)
    for index, (uid, frame, position) in enumerate(items):
        k = k_of_frame.get(frame) if frame is not None and k_of_frame else k_of_uid.get(uid)
        if k is None:
            continue
        out[index] = k
        if position is None:
            continue
        expected = grid.affine_lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + grid.affine_lps[:3, 3]
        if np.linalg.norm(position - expected) > tolerance:
            raise InputError(path, f"frame {index + 1} lies at {np.round(position, 3).tolist()} mm (LPS) but names "
                             f"the source slice at {np.round(expected, 3).tolist()} mm: its frames are not on the "
                             "source grid", "give the series the SEG was made on, or read it without the source")
    return out


def _read_by_highdicom(path: Path, read, *args, **kwargs):
    """``read(...)`` of highdicom: its RuntimeError (overlapping segments) as it is, damage as one InputError."""
    try:
        return read(*args, **kwargs)
    except RuntimeError:
        raise
    except Exception as exc:  # highdicom and pydicom raise many types for damaged frames
        raise InputError(path, f"cannot be read as a DICOM SEG ({type(exc).__name__}: {exc})",
                         "check the file; re-export it from the tool that wrote it") from exc


def highdicom_fetcher(seg, grid: Volume, path: Path):
    """fetch(segment_numbers, combine) -> (array on ``grid`` in (k, j, i[, segment]) order, None), by highdicom."""
    uids = list(grid.source.sop_instance_uids)
    present = [k for k, uid in enumerate(uids) if uid]
    multiframe = len({uids[k] for k in present}) == 1 and len(present) > 1
    frame_numbers = grid.source.extra.get("frame_numbers") or []

    def fetch(numbers: list[int], combine: bool) -> np.ndarray:
        options = {"segment_numbers": numbers, "combine_segments": combine, "ignore_spatial_locations": True,
                   "assert_missing_frames_are_empty": True}
        if multiframe:
            array = _read_by_highdicom(path, seg.get_pixels_by_source_frame, uids[present[0]],
                                       [frame_numbers[k] for k in present], **options)
        else:
            array = _read_by_highdicom(path, seg.get_pixels_by_source_instance, [uids[k] for k in present], **options)
        if len(present) == grid.shape[2]:
            return np.ascontiguousarray(array), None
        out = np.zeros((grid.shape[2], *array.shape[1:]), array.dtype)
        out[present] = array
        return out, None

    return fetch


def own_grid(seg, path: Path):
    """The SEG's own grid (from its plane positions) and a highdicom fetch function on it."""
    from medseg.volume import SourceInfo

    geometry = seg.get_volume_geometry() if seg.get("FrameOfReferenceUID") else None
    if geometry is None:
        raise InputError(path, "has no regular 3D grid of its own (its frames are not evenly spaced parallel slices)",
                         f"give the series it was made on with {option('dicom')}")
    to_ijk = np.zeros((4, 4))
    to_ijk[0, 2] = to_ijk[1, 1] = to_ijk[2, 0] = to_ijk[3, 3] = 1.0  # (slice, row, column) <- (i, j, k)
    affine_lps = np.asarray(geometry.affine, dtype=np.float64) @ to_ijk
    shape = tuple(int(s) for s in geometry.spatial_shape)[::-1]
    # medseg's axis convention: k runs along the slice normal (highdicom may sort the other way).
    flip = float(np.dot(affine_lps[:3, 2], np.cross(affine_lps[:3, 0], affine_lps[:3, 1]))) < 0
    if flip:
        affine_lps[:3, 3] += affine_lps[:3, 2] * (shape[2] - 1)
        affine_lps[:3, 2] *= -1
    affine = LPS_TO_RAS @ affine_lps
    references = referenced_instances(seg)
    source = SourceInfo(path=str(path), format="dicom-seg",
                        series_uid=(references[0][0] if references else ""), study_uid=str(seg.StudyInstanceUID),
                        frame_of_reference_uid=str(seg.get("FrameOfReferenceUID", "")))
    grid = Volume(np.broadcast_to(np.zeros((), np.uint8), shape), affine, "SEG", source)

    def fetch(numbers: list[int], combine: bool) -> np.ndarray:
        array = _read_by_highdicom(path, seg.get_volume, segment_numbers=numbers, combine_segments=combine).array
        if array.shape[:3] != shape[::-1]:  # pragma: no cover - highdicom computes both from the same frames
            raise InputError(path, f"segments {numbers} span another grid than the whole SEG", "report this file")
        return (np.ascontiguousarray(array[::-1]) if flip else array), None

    return grid, fetch
