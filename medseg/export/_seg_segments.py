"""Which segments a DICOM SEG of a case holds, and the array highdicom encodes them from.

One segment per class present in the label map and one per lesion instance ("lesion 3"). A SEG
must give back exactly what it was made from, so the segments are chosen to make that possible:

* a lesion whose voxels all carry one lesion class of the label map (what ``run_case`` makes)
  *claims* them: the class segment of that class keeps only its voxels outside every claiming
  lesion (small pieces below the dust size), and is left out when there are none. Reading the SEG
  back paints claimed voxels with that class again;
* a lesion lying on other classes (a lesion mask drawn over an organ map that has no lesion class,
  as the phantom's) claims nothing: its voxels stay in the organ's segment too, so the segments
  overlap. BINARY holds overlapping segments; LABELMAP cannot and is refused.

Each segment's description says which label value (and lesion id) it holds, in words a person
reads and :mod:`medseg.io._dicom_seg` parses: ``class liver, label value 1 [medseg]``,
``lesion 3 of class lesion, label value 11, instance 3 [medseg]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from medseg.errors import InputError
from medseg.export.codes import SegmentCodes, codes_for
from medseg.io._dicom_seg_series import sparse_nonzero
from medseg.labels import LabelSet, canonical_name, label_colour
from medseg.volume import Volume

__all__ = ["MARK", "PlannedSegment", "SegmentPlan", "plan_segments", "segment_array", "segment_maps", "segment_presence"]

MARK = "[medseg]"


@dataclass(frozen=True)
class PlannedSegment:
    """One segment to write: its number, label, what it holds and how it is described."""

    number: int
    label: str
    kind: str  # "class" or "lesion"
    value: int | None  # the class's label value; for a lesion, the class it claims (or None)
    lesion_id: int | None
    class_name: str
    codes: SegmentCodes
    colour: tuple[float, float, float]
    description: str
    voxels: int


@dataclass
class SegmentPlan:
    segments: list[PlannedSegment]
    overlap: bool
    overlap_example: str = ""
    warnings: list[str] = field(default_factory=list)
    #: Voxels of each label value on each slice k: (n_k, max value + 1).
    slice_counts: np.ndarray | None = None
    #: Lesion voxels as indices into the maps raveled in (slice, row, column) C order, their ids and
    #: the label values under them.
    lesion_where: np.ndarray | None = None
    lesion_ids: np.ndarray | None = None
    lesion_under: np.ndarray | None = None


def _check_labels(array: np.ndarray, where: str) -> np.ndarray:
    """The array as non-negative integers (an integral float map is accepted), else InputError."""
    if array.dtype.kind == "f":
        if not np.all(np.mod(array, 1) == 0):
            raise InputError(where, "holds fractional values, not class values", "give an integer label map")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iub":
        raise InputError(where, f"has voxel type {array.dtype}, not integer labels", "give an integer label map")
    if array.dtype.kind == "i" and array.size and int(array.min()) < 0:
        raise InputError(where, "holds negative values", "label values are 0 (background) or more")
    return array


def _slice_counts(array: np.ndarray) -> np.ndarray:
    """Voxels of each value on each slice k of an (i, j, k) map: (n_k, max + 1), a slice at a time
    (``np.bincount`` copies its input to int64: one slice, not the volume)."""
    top = int(array.max()) if array.size else 0
    out = np.zeros((array.shape[2], top + 1), np.int64)
    for k in range(array.shape[2]):
        out[k] = np.bincount(array[:, :, k].ravel(order="K"), minlength=top + 1)
    return out


def _lesion_voxels(labels: np.ndarray, lesions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, lesion id, label value) of every lesion voxel, reading only those voxels.

    Indices are in Fortran order of (i, j, k), which is C order of highdicom's (slice, row, column):
    views, no copies, for the F-ordered arrays NIfTI and DICOM reads give.
    """
    flat_lesions = np.ravel(lesions, order="F")
    where = sparse_nonzero(flat_lesions)
    return where, flat_lesions[where].astype(np.int64), np.ravel(labels, order="F")[where].astype(np.int64)


def plan_segments(labels: Volume, lesions: Volume | None, *, labels_name: str = "labels",
                  lesions_name: str = "lesions") -> SegmentPlan:
    """The segments of a SEG made from ``labels`` (with its ``label_set``) and optional ``lesions``."""
    labels_array = _check_labels(labels.array, labels_name)
    slice_counts = _slice_counts(labels_array)
    counts = slice_counts.sum(axis=0)
    label_set = labels.label_set or LabelSet({0: "background"})
    warnings: list[str] = []
    unnamed = [v for v in np.flatnonzero(counts).tolist() if v and v not in label_set.values]
    if unnamed:
        warnings.append(f"{labels_name}: values {unnamed[:10]} have no class name (no labels.json); their segments "
                        "are called 'label N'")
    lesion_classes = set(label_set.lesion_values())
    where = ids = under = None
    claims: dict[int, int] = {}  # lesion id -> the lesion class value all its voxels carry
    claimed_voxels: dict[int, int] = {}  # class value -> voxels claimed by lesions
    lesion_counts = np.zeros(1, np.int64)
    overlap, example = False, ""
    if lesions is not None:
        lesion_array = _check_labels(lesions.array, lesions_name)
        where, ids, under = _lesion_voxels(labels_array, lesion_array)
        lesion_counts = np.bincount(ids) if ids.size else np.zeros(1, np.int64)
        pairs = np.unique(ids * (int(counts.size) + 1) + under)
        by_lesion: dict[int, list[int]] = {}
        for pair in pairs.tolist():
            by_lesion.setdefault(pair // (counts.size + 1), []).append(pair % (counts.size + 1))
        for lesion_id, values in by_lesion.items():
            if len(values) == 1 and values[0] in lesion_classes:
                claims[lesion_id] = values[0]
                claimed_voxels[values[0]] = claimed_voxels.get(values[0], 0) + int(lesion_counts[lesion_id])
            elif any(values):
                overlap = True
                other = next(v for v in values if v)
                name = label_set.name_of(other) if other in label_set.values else f"label {other}"
                example = example or f"lesion {lesion_id} lies on {name}"
    segments: list[PlannedSegment] = []
    for value in np.flatnonzero(counts).tolist():
        if value == 0:
            continue
        name = label_set.name_of(value) if value in label_set.values else f"label {value}"
        voxels = int(counts[value]) - claimed_voxels.get(value, 0)
        if voxels <= 0:
            continue  # every voxel of this lesion class is in a lesion segment
        rest = ", voxels outside the lesion instances" if value in claimed_voxels else ""
        segments.append(PlannedSegment(0, name, "class", value, None, name, codes_for(name), label_colour(name),
                                       f"class {name}, label value {value}{rest} {MARK}", voxels))
    for lesion_id in np.flatnonzero(lesion_counts).tolist():
        if lesion_id == 0:
            continue
        value = claims.get(lesion_id)
        class_name = label_set.name_of(value) if value is not None else "lesion"
        text = (f"lesion {lesion_id} of class {class_name}, label value {value}, instance {lesion_id} {MARK}"
                if value is not None else f"lesion {lesion_id}, instance {lesion_id} {MARK}")
        segments.append(PlannedSegment(0, f"lesion {lesion_id}", "lesion", value, lesion_id, class_name,
                                       codes_for(class_name), label_colour(f"lesion {lesion_id}"), text,
                                       int(lesion_counts[lesion_id])))
    segments = [dataclasses.replace(s, number=n) for n, s in enumerate(segments, 1)]
    unknown = sorted({s.class_name for s in segments if not s.codes.known}, key=canonical_name)
    if unknown:
        warnings.append(f"no SNOMED CT code known for {', '.join(repr(n) for n in unknown)}: written as generic "
                        "'Tissue' (rename the class to a known name, e.g. 'liver', for a specific code)")
    return SegmentPlan(segments, overlap, example, warnings, slice_counts, where, ids, under)


def _lookup(plan: SegmentPlan, top: int, kind: str) -> np.ndarray:
    """value (or lesion id) -> segment number, in the smallest type that holds every number."""
    dtype = np.uint8 if len(plan.segments) <= 255 else np.uint16
    chosen = [s for s in plan.segments if s.kind == kind]
    key = (lambda s: s.value) if kind == "class" else (lambda s: s.lesion_id)
    lut = np.zeros(max([top, *(key(s) for s in chosen)]) + 1, dtype)
    for s in chosen:
        lut[key(s)] = s.number
    return lut


def segment_presence(plan: SegmentPlan) -> np.ndarray:
    """``(n_k, max segment number + 1)`` booleans: the segment has voxels on slice k (from the plan's counts)."""
    n_k = plan.slice_counts.shape[0]
    found = np.zeros((n_k, len(plan.segments) + 1), bool)
    classes = [s for s in plan.segments if s.kind == "class"]
    counts = plan.slice_counts.copy()
    if plan.lesion_where is not None and plan.lesion_where.size:
        per_slice = int(plan.slice_counts[0].sum())
        claiming = np.zeros(int(plan.lesion_ids.max()) + 1, bool)
        number_of = np.zeros(claiming.size, np.int64)
        for s in plan.segments:
            if s.kind == "lesion":
                claiming[s.lesion_id], number_of[s.lesion_id] = s.value is not None, s.number
        k = plan.lesion_where // per_slice
        found[k, number_of[plan.lesion_ids]] = True
        chosen = claiming[plan.lesion_ids]  # their voxels are not in the class segment
        np.subtract.at(counts, (k[chosen], plan.lesion_under[chosen]), 1)
    for s in classes:
        found[:, s.number] = counts[:, s.value] > 0
    return found


def segment_maps(plan: SegmentPlan, labels: Volume, lesions: Volume | None) -> tuple[np.ndarray, tuple | None]:
    """The segments as a (slice, row, column) segment-number map, and the lesion voxels that overlap it.

    Without overlap every segment is in the map (as :func:`segment_array` makes it). With overlap
    (lesions drawn over classes, BINARY only) the map holds the class segments, without the voxels
    of lesions that claim them, and the lesion segments come as ``(flat index, segment number)``
    of their voxels: two maps' worth of memory instead of a byte per voxel per segment.
    """
    if not plan.overlap:
        return segment_array(plan, labels, lesions), None
    labels_t = labels.array.transpose(2, 1, 0)
    top = int(labels_t.max()) if labels_t.size else 0
    array = np.ascontiguousarray(_lookup(plan, top, "class")[labels_t])
    if plan.lesion_where is None or not plan.lesion_where.size:
        return array, None
    lesion_lut = _lookup(plan, int(plan.lesion_ids.max()), "lesion")
    claiming = np.zeros(lesion_lut.size, bool)
    for s in plan.segments:
        if s.kind == "lesion":
            claiming[s.lesion_id] = s.value is not None
    array.reshape(-1)[plan.lesion_where[claiming[plan.lesion_ids]]] = 0  # the class segment leaves them out
    return array, (plan.lesion_where, lesion_lut[plan.lesion_ids].astype(np.int64))


def segment_array(plan: SegmentPlan, labels: Volume, lesions: Volume | None) -> np.ndarray:
    """The array highdicom encodes, in its (slice, row, column) order.

    Without overlap a label-map style array (segment number per voxel, uint8 when it fits),
    made in one pass through a lookup table on the transposed view (no transposed copy of the
    labels). With overlap a stacked boolean array (slice, row, column, segment).
    """
    classes = [s for s in plan.segments if s.kind == "class"]
    lesion_segments = [s for s in plan.segments if s.kind == "lesion"]
    n = len(plan.segments)
    labels_t = labels.array.transpose(2, 1, 0)
    lesions_t = lesions.array.transpose(2, 1, 0) if lesions is not None else None
    top = int(labels_t.max()) if labels_t.size else 0
    if not plan.overlap:
        dtype = np.uint8 if n <= 255 else np.uint16
        lut = np.zeros(top + 1, dtype)
        for s in classes:
            lut[s.value] = s.number
        # NIfTI and DICOM reads are F-ordered, so the transposed view is C-ordered and so is this.
        array = np.ascontiguousarray(lut[labels_t])
        if lesion_segments and plan.lesion_where is not None:
            lesion_lut = np.zeros(max(s.lesion_id for s in lesion_segments) + 1, dtype)
            for s in lesion_segments:
                lesion_lut[s.lesion_id] = s.number
            array.reshape(-1)[plan.lesion_where] = lesion_lut[plan.lesion_ids]
        return array
    # Overlap (BINARY only): one boolean plane stack per segment; costs one byte per voxel per segment.
    array = np.zeros((*labels_t.shape, n), dtype=bool)
    claimed = None
    if lesions_t is not None:
        claiming = np.zeros(int(lesions_t.max()) + 1, bool)
        for s in lesion_segments:
            claiming[s.lesion_id] = s.value is not None
        claimed = claiming[lesions_t]
    for s in classes:
        mask = labels_t == s.value
        if claimed is not None:
            mask &= ~claimed
        array[..., s.number - 1] = mask
    for s in lesion_segments:
        array[..., s.number - 1] = lesions_t == s.lesion_id
    return array
