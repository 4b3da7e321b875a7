"""DICOM SEG in: segments back to label maps on the source series' exact grid, with their names.

:func:`read_seg` reads any Segmentation object (BINARY, FRACTIONAL, LABELMAP; highdicom,
dcmqi, medseg or a PACS wrote it) through highdicom. With the source series it indexes frames
by the source images they were derived from (``get_pixels_by_source_instance``, in the series'
own slice order), checks that every frame lies where its source image lies, and returns maps on
the series' grid; without it, the SEG's own plane positions give the grid (the slab that holds
segments). Segment labels become class names.

One label map holds one class per voxel, so overlapping segments are refused with their names,
or (``split_overlapping=True``) spread over as few maps as hold them without overlap. A SEG
medseg wrote (organs and lesions, which overlap where a lesion lies in an organ) comes back as
what it was made from: the class map with its label values and names, and the lesion instance
map with its ids (see ``medseg.export.dicom_seg`` for how segments describe them).

:func:`read_series_header` reads a DICOM series' geometry and UIDs without decoding pixels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import InputError, option
from medseg.io._formats import SEG_SOP_CLASSES, is_dicom_seg
from medseg.labels import LabelSet, canonical_name
from medseg.volume import LPS_TO_RAS, Volume

__all__ = [
    "SEG_SOP_CLASSES",
    "SegImport",
    "SegmentInfo",
    "is_dicom_seg",
    "quiet_pydicom",
    "read_seg",
    "read_series_header",
    "series_plan",
    "value_counts",
]

#: How medseg's exporter marks its segment descriptions (see medseg.export.dicom_seg).
MEDSEG_MARK = "[medseg]"


def value_counts(array: np.ndarray) -> np.ndarray:
    """Voxels per value (index = value) of a non-negative integer array, in 4 M-voxel chunks.

    ``np.bincount`` converts its input to int64 first: on a 512x512x300 map that is a 630 MB
    temporary; chunks keep it at 32 MB and are as fast.
    """
    flat = np.ravel(array, order="K")  # a view for C- or F-ordered arrays
    if flat.dtype.kind not in "iub" or not flat.size:
        return np.bincount(flat.astype(np.int64)) if flat.size else np.zeros(1, np.int64)
    top = int(flat.max())
    out = np.zeros(top + 1, np.int64)
    for start in range(0, flat.size, 1 << 22):
        out += np.bincount(flat[start:start + (1 << 22)], minlength=top + 1)
    return out


@contextlib.contextmanager
def quiet_pydicom():
    """Skip pydicom's re-validation of every value it reads and writes, and silence library notes.

    highdicom validates what it builds, and a SEG's thousands of per-frame items make pydicom's
    own checks about a third of reading and writing time. Notes about the *source's* values
    ("Anonymous" is a one-part person name) are not the user's business here and would break
    the one-line rule. The setting is process-wide while the block runs.
    """
    import pydicom

    settings = pydicom.config.settings
    before = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = before


def read_series_header(path: str | os.PathLike, series: str | int | None = None, *, allow_gaps: bool = False,
                       allow_2d: bool = False) -> Volume:
    """A DICOM series' grid and UIDs, without decoding its pixels.

    The same choice of series, slice order, geometry and :class:`~medseg.volume.SourceInfo` as
    :func:`medseg.io.load_volume`; the array is a read-only view of zeros of the series' shape.
    """
    return series_plan(path, series, allow_gaps=allow_gaps, allow_2d=allow_2d)[0]


def series_plan(path: str | os.PathLike, series: str | int | None = None, *, allow_gaps: bool = False,
                allow_2d: bool = False):
    """(header-only Volume, the reader's VolumePlan with every slice's parsed header)."""
    from medseg.io import _dicom
    from medseg.io._series import select_series

    path = Path(path)
    where = str(path)
    # The selection below is load_volume's (medseg.io._dicom.read_dicom) without the decode.
    scan, plans, infos = _dicom._scan(path, None)
    allowed = ({"2d"} if allow_2d else set()) | ({"gaps"} if allow_gaps else set())
    adjusted = [dataclasses.replace(i, readable=not (set(i.extra["problem_codes"]) - allowed)) for i in infos]
    images = [i for i in adjusted if i.extra.get("image")]
    readable = [i for i in adjusted if i.readable]
    if series is None and len(readable) != 1:
        if len(images) == 1:
            readable = images
        else:
            four_d = _dicom._four_d(readable or images, where)
            if four_d is not None:
                raise four_d
    chosen = readable[0] if series is None and len(readable) == 1 else select_series(adjusted, series, where)
    if not chosen.extra.get("image"):
        raise InputError(where, f"series {chosen.index} ({chosen.key}) is {chosen.problems[0]}",
                         "choose an image series (see `medseg info`)")
    plan = plans[chosen.index]
    if not chosen.readable:
        raise _dicom._explain(chosen, plan, where, scan, allowed)
    shape = (plan.frames[0].cols, plan.frames[0].rows, plan.geometry.n_slices)
    zeros = np.broadcast_to(np.zeros((), np.int16), shape)
    volume = Volume(zeros, plan.geometry.affine, plan.frames[0].meta.modality, _dicom._source(plan, chosen, scan))
    return volume, plan


@dataclass(frozen=True)
class SegmentInfo:
    """One segment of a SEG, as read.

    ``kind`` is ``"class"`` (its voxels get label ``value`` in the class map) or ``"lesion"``
    (instance ``lesion_id`` of the lesion map; with ``value`` when its voxels are also that class).
    Codes are ``(value, scheme, meaning)`` tuples; ``colour`` is RGB in 0..1 or ``None``.
    """

    number: int
    label: str
    kind: str
    value: int | None
    lesion_id: int | None = None
    class_name: str = ""
    category: tuple[str, str, str] | None = None
    type: tuple[str, str, str] | None = None
    modifier: tuple[str, str, str] | None = None
    algorithm_type: str = ""
    algorithm_name: str = ""
    tracking_id: str = ""
    tracking_uid: str = ""
    colour: tuple[float, float, float] | None = None
    voxels: int = 0


@dataclass
class SegImport:
    """What :func:`read_seg` returns.

    Attributes
    ----------
    labels : Volume or None
        Class map (values as in the SEG: medseg's label values, else segment numbers) with its
        ``label_set``; ``None`` when the SEG holds only lesions.
    lesions : Volume or None
        Lesion instance map (ids as in the SEG) when the SEG holds medseg lesion segments.
    layers : list of Volume
        With ``split_overlapping``: further class maps for segments that overlap ``labels``.
    segments : list of SegmentInfo
    segmentation_type : str
        ``"BINARY"``, ``"FRACTIONAL"`` or ``"LABELMAP"``.
    referenced_series_uids : tuple of str
    warnings : list of str
    """

    labels: Volume | None
    lesions: Volume | None
    layers: list[Volume] = field(default_factory=list)
    segments: list[SegmentInfo] = field(default_factory=list)
    segmentation_type: str = ""
    referenced_series_uids: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)

    @property
    def maps(self) -> list[Volume]:
        """Every class map: ``labels`` then ``layers``."""
        return [m for m in (self.labels, *self.layers) if m is not None]


def _describe(seg) -> list[SegmentInfo]:
    """Segments with medseg's label values and lesion ids where the SEG is medseg's own."""
    from highdicom.color import CIELabColor

    ours = str(seg.get("Manufacturer", "")) == "medseg"
    background = seg.get("PixelPaddingValue") if seg.segmentation_type.value == "LABELMAP" else None
    out = []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        if seg.segmentation_type.value == "LABELMAP" and (number == 0 or number == background):
            continue  # the LABELMAP IOD's background segment
        text = str(item.get("SegmentDescription", ""))
        label = str(item.get("SegmentLabel", "")) or f"segment {number}"
        value, lesion_id, kind, class_name = number, None, "class", label
        if ours and MEDSEG_MARK in text:
            found_value = re.search(r"label value (\d+)", text)
            found_lesion = re.search(r"instance (\d+)", text)
            found_class = re.search(r"of class (.*), label value", text)
            value = int(found_value.group(1)) if found_value else None
            if found_lesion:
                kind, lesion_id = "lesion", int(found_lesion.group(1))
                class_name = found_class.group(1) if found_class else ""
        types = item.get("SegmentedPropertyTypeCodeSequence") or [None]
        modifier = (types[0].get("SegmentedPropertyTypeModifierCodeSequence") or [None])[0] if types[0] else None
        algorithm = (item.get("SegmentationAlgorithmIdentificationSequence") or [None])[0]
        colour = None
        if "RecommendedDisplayCIELabValue" in item:
            rgb = CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb(clip=True)
            colour = tuple(round(c / 255.0, 4) for c in rgb)
        out.append(SegmentInfo(
            number, label, kind, value, lesion_id, class_name,
            _code_item((item.get("SegmentedPropertyCategoryCodeSequence") or [None])[0]), _code_item(types[0]),
            _code_item(modifier), str(item.get("SegmentAlgorithmType", "")),
            str(algorithm.get("AlgorithmName", "")) if algorithm else "", str(item.get("TrackingID", "")),
            str(item.get("TrackingUID", "")), colour))
    return out


def _code_item(item) -> tuple[str, str, str] | None:
    if item is None:
        return None
    return (str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", "")),
            str(item.get("CodeMeaning", "")))


def _open(path: Path):
    import highdicom as hd

    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file",
                         "give a DICOM SEG file (.dcm)")
    if not is_dicom_seg(path):
        raise InputError(path, "is not a DICOM Segmentation object (SEG)",
                         "give a DICOM SEG file; images are read with load_volume")
    try:
        return hd.seg.segread(path)
    except Exception as exc:  # highdicom and pydicom raise many types for damaged objects
        raise InputError(path, f"cannot be read as a DICOM SEG ({type(exc).__name__}: {exc})",
                         "check the file; re-export it from the tool that wrote it") from exc


def _frame_items(seg):
    """(referenced SOP instance UID, referenced frame number or None, LPS position or None) per frame."""
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    shared_pos = shared.PlanePositionSequence[0].ImagePositionPatient \
        if shared is not None and "PlanePositionSequence" in shared else None
    out = []
    for item in seg.get("PerFrameFunctionalGroupsSequence", []):
        uid, frame, pos = "", None, shared_pos
        for derivation in item.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                uid = str(source.ReferencedSOPInstanceUID)
                frame = int(source.ReferencedFrameNumber) if "ReferencedFrameNumber" in source else None
                break
        if "PlanePositionSequence" in item:
            pos = item.PlanePositionSequence[0].ImagePositionPatient
        out.append((uid, frame, None if pos is None else np.asarray(pos, dtype=np.float64)))
    return out


def _shared_attribute(seg, sequence: str, keyword: str):
    for groups in (seg.get("SharedFunctionalGroupsSequence"), (seg.get("PerFrameFunctionalGroupsSequence") or [None])[:1]):
        if groups and groups[0] is not None and sequence in groups[0]:
            return getattr(groups[0][sequence][0], keyword, None)
    return None


def _check_on_grid(seg, grid: Volume, path: Path, where_source: str) -> None:
    """Every frame of the SEG lies on the slice of the source image it names, pixel for pixel."""
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
    for index, (uid, frame, position) in enumerate(_frame_items(seg)):
        k = k_of_frame.get(frame) if frame is not None and k_of_frame else k_of_uid.get(uid)
        if k is None or position is None:
            continue
        expected = grid.affine_lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + grid.affine_lps[:3, 3]
        if np.linalg.norm(position - expected) > tolerance:
            raise InputError(path, f"frame {index + 1} lies at {np.round(position, 3).tolist()} mm (LPS) but names "
                             f"the source slice at {np.round(expected, 3).tolist()} mm: its frames are not on the "
                             "source grid", "give the series the SEG was made on, or read it without the source")


def _source_fetcher(seg, grid: Volume, path: Path, where_source: str):
    """fetch(segment_numbers, combine) -> array on ``grid`` in highdicom's (k, j, i[, segment]) order."""
    uids = list(grid.source.sop_instance_uids)
    present = [k for k, uid in enumerate(uids) if uid]
    references = seg.get_source_image_uids()
    referenced = {sop for _, _, sop in references}
    series = sorted({series_uid for _, series_uid, _ in references})
    have = set(uids)
    if referenced and not referenced & have:
        raise InputError(path, f"references series {', '.join(series) or '?'} ({len(referenced)} images), not the "
                         f"series in {where_source} ({grid.source.series_uid or 'no SeriesInstanceUID'})",
                         f"give the series the SEG was made on with {option('dicom')}")
    if referenced - have:
        raise InputError(path, f"references {len(referenced - have)} of its {len(referenced)} source images that are "
                         f"not in {where_source}", "give the whole series the SEG was made on")
    _check_on_grid(seg, grid, path, where_source)
    multiframe = len({uids[k] for k in present}) == 1 and len(present) > 1
    frame_numbers = grid.source.extra.get("frame_numbers") or []

    def fetch(numbers: list[int], combine: bool) -> np.ndarray:
        options = {"segment_numbers": numbers, "combine_segments": combine, "ignore_spatial_locations": True,
                   "assert_missing_frames_are_empty": True}
        if multiframe:
            array = seg.get_pixels_by_source_frame(uids[present[0]], [frame_numbers[k] for k in present], **options)
        else:
            array = seg.get_pixels_by_source_instance([uids[k] for k in present], **options)
        if len(present) == grid.shape[2]:
            return np.ascontiguousarray(array)
        out = np.zeros((grid.shape[2], *array.shape[1:]), array.dtype)
        out[present] = array
        return out

    return fetch


def _own_grid(seg, path: Path):
    """The SEG's own grid (from its plane positions) and a fetch function on it."""
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
    references = seg.get_source_image_uids()
    source = SourceInfo(path=str(path), format="dicom-seg",
                        series_uid=(references[0][1] if references else ""), study_uid=str(seg.StudyInstanceUID),
                        frame_of_reference_uid=str(seg.get("FrameOfReferenceUID", "")))
    grid = Volume(np.broadcast_to(np.zeros((), np.uint8), shape), affine, "SEG", source)

    def fetch(numbers: list[int], combine: bool) -> np.ndarray:
        array = seg.get_volume(segment_numbers=numbers, combine_segments=combine).array
        if array.shape[:3] != shape[::-1]:  # pragma: no cover - highdicom computes both from the same frames
            raise InputError(path, f"segments {numbers} span another grid than the whole SEG", "report this file")
        return np.ascontiguousarray(array[::-1]) if flip else array

    return grid, fetch



def _smallest_uint(maximum: int) -> np.dtype:
    return np.dtype(np.uint8 if maximum <= 255 else np.uint16 if maximum <= 65535 else np.uint32)


def _paint(fetch, segments: list[SegmentInfo], values: list[int], *, fractional: bool, threshold: float,
           split: bool, path: Path, counts: dict[int, int], sparse: bool = False) -> list[tuple[np.ndarray, list[int]]]:
    """Label maps in (k, j, i) order with ``values[n]`` for segment n, and the segments each holds.

    ``sparse``: few voxels are set (lesions), so only those are read after one scan for them.
    """
    dtype = _smallest_uint(max(values))
    numbers = [s.number for s in segments]
    if not fractional:
        try:
            combined = fetch(numbers, True)
        except RuntimeError:  # highdicom: the segments overlap
            combined = None
        if combined is not None and sparse:
            where = np.flatnonzero(combined.reshape(-1))
            found = np.bincount(combined.reshape(-1)[where], minlength=max(numbers) + 1)
            counts.update({n: int(found[n]) for n in numbers})
            lut = np.zeros(len(found), dtype)
            lut[numbers] = values
            out = np.zeros(combined.shape, dtype)
            out.reshape(-1)[where] = lut[combined.reshape(-1)[where]]
            return [(out, list(range(len(segments))))]
        if combined is not None:
            found = value_counts(combined)
            counts.update({n: int(found[n]) if n < len(found) else 0 for n in numbers})
            if numbers == values and combined.dtype == dtype:
                return [(combined, list(range(len(segments))))]
            lut = np.zeros(max(max(numbers), len(found) - 1) + 1, dtype)
            lut[numbers] = values
            return [(lut[combined], list(range(len(segments))))]
    layers: list[tuple[np.ndarray, list[int]]] = []
    for index, (segment, value) in enumerate(zip(segments, values)):
        stack = fetch([segment.number], False)[..., 0]
        mask = stack >= threshold if fractional else stack > 0
        counts[segment.number] = int(np.count_nonzero(mask))
        for layer, members in layers:
            if not np.any(layer[mask]):
                layer[mask] = value
                members.append(index)
                break
        else:
            if layers and not split:
                first, held = layers[0]
                under = first[mask]
                other = next(segments[i] for i in held if np.any(under == values[i]))
                shared = int(np.count_nonzero(under == values[segments.index(other)]))
                raise InputError(path, f"segments {other.number} {other.label!r} and {segment.number} "
                                 f"{segment.label!r} overlap ({shared} voxels): one label map cannot hold both",
                                 f"read them as separate label maps with {option('split_overlapping')}")
            layer = np.zeros(mask.shape, dtype)
            layer[mask] = value
            layers.append((layer, [index]))
    return layers


def _label_set(segments: list[SegmentInfo], values: list[int], extra: dict[int, str] | None = None) -> LabelSet:
    """value -> segment label; a repeated name gets its segment number, so every class stays distinct."""
    table: dict[int, str] = {}
    used: set[str] = {"background"}
    entries = [*((s.label, s.number, v) for s, v in zip(segments, values)),
               *((name, value, value) for value, name in (extra or {}).items())]
    for name, number, value in entries:
        if value in table:
            continue
        if canonical_name(name) in used:
            name = f"{name} (segment {number})"
        used.add(canonical_name(name))
        table[value] = name
    return LabelSet({0: "background", **table})


def _add_lesion_classes(layers, lesion_raw: np.ndarray, lesions: list[SegmentInfo]) -> None:
    """Give lesion voxels their class where no class segment holds them (medseg leaves the class
    segment out where the lesion instances hold its voxels). Works on the lesion voxels only."""
    claims = {s.lesion_id: s.value for s in lesions if s.value}
    if not claims:
        return
    lut = np.zeros(int(max(s.lesion_id for s in lesions)) + 1, _smallest_uint(max(claims.values())))
    for lesion_id, value in claims.items():
        lut[lesion_id] = value
    if not layers:
        layers.append((np.zeros(lesion_raw.shape, lut.dtype), []))
    base, members = layers[0]
    if base.dtype.itemsize < lut.dtype.itemsize:
        base = base.astype(lut.dtype)
    flat_base = base.reshape(-1)  # both C-contiguous (k, j, i): views
    where = np.flatnonzero(lesion_raw.reshape(-1))
    claimed = lut[lesion_raw.reshape(-1)[where]]
    free = (flat_base[where] == 0) & (claimed > 0)
    flat_base[where[free]] = claimed[free]
    layers[0] = (base, members)


def read_seg(path: str | os.PathLike, dicom: str | os.PathLike | Volume | None = None, *,
             series: str | int | None = None, split_overlapping: bool = False, fraction_threshold: float = 0.5,
             allow_gaps: bool = False) -> SegImport:
    """Read a DICOM SEG into label maps on the source series' grid.

    Parameters
    ----------
    path : path-like
        The SEG file.
    dicom : path-like or Volume, optional
        The source series the SEG was made on (a DICOM folder or file, or a volume read from it). Maps
        are then on its whole grid, and a SEG of another series is refused. Without it, maps are
        on the SEG's own grid (the slab its frames cover).
    series : str or int, optional
        Which series of ``dicom`` (as :func:`medseg.io.load_volume`).
    split_overlapping : bool
        Put segments that overlap into further maps (``SegImport.layers``) instead of refusing.
    fraction_threshold : float
        FRACTIONAL segments: a voxel belongs to the segment when its fraction is at least this.
    allow_gaps : bool
        Read a source series with missing slices (as :func:`medseg.io.load_volume`).

    Returns
    -------
    SegImport

    Raises
    ------
    InputError
        Not a SEG, a SEG of another series or not on its grid, overlapping segments without
        ``split_overlapping``, a source that is not a DICOM series.

    Examples
    --------
    >>> result = read_seg("seg.dcm", "ct_dicom/")                   # doctest: +SKIP
    >>> result.labels.label_set.names, result.labels.same_grid(load_volume("ct_dicom/"))  # doctest: +SKIP
    (('background', 'liver', 'spleen'), True)
    """
    path = Path(path)
    with quiet_pydicom():
        seg = _open(path)
        segments = _describe(seg)
        if not segments:
            raise InputError(path, "holds no segments", "export the segmentation again")
        warnings: list[str] = []
        if dicom is None:
            grid, fetch = _own_grid(seg, path)
            warnings.append(f"{path.name}: read on the SEG's own grid (the {'x'.join(map(str, grid.shape))} slab its "
                            "frames cover); give the source series to get maps on its whole grid")
        else:
            if isinstance(dicom, Volume):
                grid, where = dicom, dicom.source.path or "the source volume"
            else:
                grid, where = read_series_header(dicom, series, allow_gaps=allow_gaps, allow_2d=True), str(dicom)
            if grid.source.format != "dicom" or not any(grid.source.sop_instance_uids):
                raise InputError(where, "is not a DICOM series (a SEG refers to DICOM images by their UIDs)",
                                 "give the DICOM series the SEG was made on")
            fetch = _source_fetcher(seg, grid, path, where)
        stype = seg.segmentation_type.value
        fractional = stype == "FRACTIONAL"
        if fractional:
            warnings.append(f"{path.name}: FRACTIONAL segments were read as the voxels with fraction >= "
                            f"{fraction_threshold:g}")
        counts: dict[int, int] = {}
        classes = [s for s in segments if s.kind == "class"]
        lesions = [s for s in segments if s.kind == "lesion"]
        values = [s.value if s.value is not None else s.number for s in classes]
        layers = _paint(fetch, classes, values, fractional=fractional, threshold=fraction_threshold,
                        split=split_overlapping, path=path, counts=counts) if classes else []
        lesion_map = None
        if lesions:
            ids = [s.lesion_id for s in lesions]
            (lesion_raw, _), = _paint(fetch, lesions, ids, fractional=fractional, threshold=fraction_threshold,
                                      split=False, path=path, counts=counts, sparse=True)
            _add_lesion_classes(layers, lesion_raw, lesions)
            lesion_map = grid.with_array(lesion_raw.transpose(2, 1, 0), modality="SEG")
        referenced = tuple(sorted({series_uid for _, series_uid, _ in seg.get_source_image_uids()}))
    lesion_classes = {s.value: s.class_name or "lesion" for s in lesions if s.value}
    maps = []
    for index, (array, members) in enumerate(layers):
        label_set = _label_set([classes[i] for i in members], [values[i] for i in members],
                               lesion_classes if index == 0 else None)
        maps.append(grid.with_array(array.transpose(2, 1, 0), modality="SEG", label_set=label_set))
    if len(maps) > 1:
        warnings.append(f"{path.name}: overlapping segments were split over {len(maps)} label maps")
    infos = [dataclasses.replace(s, voxels=counts.get(s.number, 0)) for s in segments]
    return SegImport(maps[0] if maps else None, lesion_map, maps[1:], infos, stype, referenced, warnings)
