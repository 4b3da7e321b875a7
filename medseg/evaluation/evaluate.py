"""Compare a predicted label map with a reference: per-class metrics and lesion detection."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import InputError, option
from medseg.evaluation.detection import DetectionResult, match_lesions
from medseg.resample import is_sheared, resample_labels
from medseg.evaluation.overlap import class_overlap, label_counts
from medseg.evaluation.surface import surface_metrics
from medseg.lesions.masks import require_integer_labels, require_same_grid, volume_name
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.volume import Volume

__all__ = ["ClassMetrics", "EvaluationResult", "evaluate"]


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class. Volumes in mL, distances in mm; NaN where undefined (see ``note``).

    ``volume_difference_ml`` is prediction minus reference; ``relative_volume_difference`` is
    that divided by the reference volume (NaN when the reference is empty).
    """

    value: int
    name: str
    pred_voxels: int
    ref_voxels: int
    pred_volume_ml: float
    ref_volume_ml: float
    volume_difference_ml: float
    relative_volume_difference: float
    dice: float
    iou: float
    hd_mm: float
    hd95_mm: float
    assd_mm: float
    nsd: float
    note: str = ""


@dataclass(frozen=True)
class EvaluationResult:
    """Everything :func:`evaluate` measured, with the settings needed to read it."""

    classes: tuple[ClassMetrics, ...]
    detection: DetectionResult | None
    pred: str
    ref: str
    nsd_tolerance_mm: float
    match_iou: float
    connectivity: int
    lesion_label: int | None
    resampled: bool
    surface: bool
    grid: dict
    warnings: tuple[str, ...] = ()

    def mean(self, metric: str) -> float:
        """Mean of ``metric`` (e.g. "dice") over classes where it is defined."""
        values = [getattr(c, metric) for c in self.classes]
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    def by_name(self, name: str) -> ClassMetrics:
        for c in self.classes:
            if c.name == name or str(c.value) == str(name):
                return c
        raise KeyError(f"no class {name!r}")


def _classes(labels, pred: np.ndarray, ref: np.ndarray) -> list[tuple[int, str]]:
    if labels is None:
        values = sorted((set(label_counts(pred)) | set(label_counts(ref))) - {0})
        return [(v, str(v)) for v in values]
    if hasattr(labels, "to_dict"):  # a LabelSet
        labels = {int(k): v for k, v in labels.to_dict().items()}
    if isinstance(labels, Mapping):
        return [(int(v), str(n)) for v, n in sorted(labels.items(), key=lambda kv: int(kv[0])) if int(v) != 0]
    return [(int(v), str(int(v))) for v in labels if int(v) != 0]


def match_by_name(pred: Volume, ref: Volume) -> tuple[Volume, dict[int, str], str]:
    """Put ``pred``'s values on ``ref``'s by class name (both carry a ``label_set``).

    ``liver`` stored as 6 in the prediction and 1 in the reference is compared as one class.
    Names are compared as :func:`medseg.labels.canonical_name` does. Classes only the prediction
    has keep a value above the reference's largest, so they are scored (as absent from the
    reference) instead of being merged with another class.

    Returns the remapped prediction, the classes to score (ref value -> name) and a note naming
    the classes found in one map only ("" when the two sets name the same classes).
    """
    from medseg.labels import canonical_name

    ref_values = {canonical_name(lab.name): lab.value for lab in ref.label_set.foreground}
    classes = {lab.value: lab.name for lab in ref.label_set.foreground}
    lut_size = int(max(pred.label_set.values)) + 1
    present = label_counts(pred.array)
    lut_size = max(lut_size, int(max(present, default=0)) + 1)
    lut = np.zeros(lut_size, dtype=np.int64)
    next_value = max([*ref.label_set.values, *label_counts(ref.array)]) + 1
    only_pred = []
    for lab in pred.label_set.foreground:
        value = ref_values.get(canonical_name(lab.name))
        if value is None:
            value, next_value = next_value, next_value + 1
            classes[value] = lab.name
            only_pred.append(lab.name)
        lut[lab.value] = value
    unnamed = [v for v in present if v and v not in pred.label_set.values]
    for v in unnamed:  # values the table does not name: keep them apart, named by value
        lut[v], next_value = next_value, next_value + 1
        classes[int(lut[v])] = f"unnamed {v}"
    pred_names = {canonical_name(n) for n in pred.label_set.names[1:]}
    only_ref = [lab.name for lab in ref.label_set.foreground if canonical_name(lab.name) not in pred_names]
    dtype = np.uint8 if next_value < 256 else np.uint16 if next_value < 65536 else np.uint32
    remapped = pred.with_array(lut.astype(dtype)[pred.array], label_set=None)
    parts = []
    if only_pred:
        parts.append(f"named only in {volume_name(pred, 'the prediction')}: {', '.join(only_pred)}")
    if only_ref:
        parts.append(f"named only in {volume_name(ref, 'the reference')}: {', '.join(only_ref)}")
    note = ("classes matched by name; " + "; ".join(parts)) if parts else ""
    return remapped, classes, note


def _class_boxes(pred: np.ndarray, ref: np.ndarray, values: list[int]) -> dict[int, tuple[slice, ...]]:
    """Per class, the joint bounding box of both maps plus one voxel (one pass per map).

    Surface distances do not change when empty margins are cut (MONAI crops the same way), and
    each class is then compared on its box instead of the whole volume.
    """
    from scipy import ndimage

    if not values or max(values) > (1 << 16) or min(values) < 1:
        return {}
    found = [ndimage.find_objects(a if a.dtype.kind in "iu" else a.astype(np.int32), max_label=max(values))
             for a in (pred, ref)]
    boxes = {}
    for value in values:
        parts = [f[value - 1] for f in found if f[value - 1] is not None]
        if parts:
            boxes[value] = tuple(slice(max(0, min(p[a].start for p in parts) - 1),
                                       min(pred.shape[a], max(p[a].stop for p in parts) + 1)) for a in range(3))
    return boxes


def _lesion_instances(volume: Volume, label: int | None, instances: bool, connectivity: int) -> np.ndarray:
    from medseg.lesions import find_instances

    if instances:
        return volume.array
    return find_instances(volume, label=label, allow_absent_label=True, connectivity=connectivity).labels.array


def evaluate(
    pred: Volume,
    ref: Volume,
    *,
    labels: Mapping[int, str] | Sequence[int] | None = None,
    lesion_label: int | None = None,
    lesion_instances: bool = False,
    connectivity: int = 26,
    match_iou: float = 0.5,
    nsd_tolerance_mm: float = 2.0,
    surface: bool = True,
    resample: bool = False,
    classes: str = "all",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> EvaluationResult:
    """Per-class Dice, IoU, HD, HD95, ASSD, NSD and volumes; optionally lesion-wise detection and PQ.

    Parameters
    ----------
    pred, ref : Volume
        Integer label maps. They must be on one voxel grid unless ``resample``.
    labels : mapping value -> name, LabelSet or sequence of values, optional
        Classes to score (values of ``ref``); default: when both maps carry a ``label_set``,
        every class either names, matched **by name** (:func:`match_by_name`: the same organ stored
        under other values is one class); else every non-zero value present in either map.
    lesion_label : int, optional
        Score lesion detection: instances of this label are separated in both maps
        (``connectivity``) and matched (see :mod:`medseg.evaluation.detection`).
    lesion_instances : bool
        ``pred`` and ``ref`` already are instance maps (each value one lesion): match them as
        they are. Replaces ``lesion_label``; without ``labels`` the per-class metrics are then
        those of one class "lesion" (any non-zero voxel).
    match_iou : float
        A predicted and a reference lesion match when their IoU is above this.
    nsd_tolerance_mm : float
        Tolerance of the normalised surface Dice, mm.
    surface : bool
        Compute the surface distances (HD, HD95, ASSD, NSD); they cost most of the time.
    resample : bool
        If the grids differ, resample ``pred`` onto ``ref``'s grid (nearest neighbour) instead
        of refusing.
    classes : {"all", "reference"}
        With classes matched by name: score every class either map names (default), or only the
        classes the reference names ("reference": e.g. an organ-only truth against a model that
        also has a lesion class; the prediction's other classes are named in a note).
    progress, cancel
        See :mod:`medseg.progress`.

    Raises
    ------
    InputError
        Grids differ (without ``resample``), non-integer labels, bad settings.
    """
    pred_name, ref_name = volume_name(pred, "prediction"), volume_name(ref, "reference")
    for volume, name in ((pred, pred_name), (ref, ref_name)):
        require_integer_labels(volume.array, name)
    if not 0 <= match_iou < 1:
        raise InputError(option("match_iou", match_iou), f"{match_iou} is not in [0, 1)", "use 0.5 (PQ's rule) or e.g. 0.1")
    if classes not in ("all", "reference"):
        raise InputError(option("classes", classes), "is not a choice of classes", "use 'all' or 'reference'")
    if not nsd_tolerance_mm >= 0:
        raise InputError(option("nsd_tolerance_mm", nsd_tolerance_mm), f"{nsd_tolerance_mm} mm is negative", "use e.g. 2 mm")
    notes: list[str] = []
    resampled = False
    if not ref.same_grid(pred):
        if not resample:
            require_same_grid(ref, pred, name=ref_name, other_name=pred_name,
                              hint=f"pass {option('resample', True)} to resample the prediction onto the reference grid "
                                   "(nearest neighbour)")
        pred = resample_labels(pred, ref)
        resampled = True
        notes.append(f"{pred_name} was resampled onto the grid of {ref_name} (nearest neighbour)")
    if surface and is_sheared(ref.affine):
        notes.append("the grid is sheared (e.g. gantry tilt): surface distances use the per-axis "
                     "spacing and ignore the shear")
    pred_classes, ref_classes = pred, ref
    if labels is None and not lesion_instances and pred.label_set is not None and ref.label_set is not None:
        pred_classes, labels, note = match_by_name(pred, ref)
        if note:
            notes.append(note)
        if classes == "reference":
            labels = {v: n for v, n in labels.items() if v in ref.label_set.values}
    elif labels is None and not lesion_instances and (ref.label_set or pred.label_set) is not None:
        named = ref.label_set or pred.label_set
        labels = {lab.value: lab.name for lab in named.foreground}
        present = (set(label_counts(pred.array)) | set(label_counts(ref.array))) - {0}
        labels.update({v: str(v) for v in present if v not in labels})
    if lesion_instances and labels is None:
        # Instance ids of two maps mean nothing to each other: score "any lesion" as one class.
        pred_classes = pred.with_array((pred.array != 0).astype(np.uint8))
        ref_classes = ref.with_array((ref.array != 0).astype(np.uint8))
        labels = {1: "lesion"}
    classes = _classes(labels, pred_classes.array, ref_classes.array)
    voxel_ml = ref.voxel_volume_ml
    report(progress, 0, len(classes) + 1, "evaluate: overlap")
    counts = class_overlap(pred_classes.array, ref_classes.array, [v for v, _ in classes])
    boxes = _class_boxes(pred_classes.array, ref_classes.array, [v for v, _ in classes]) if surface else {}
    rows = []
    for done, ((value, name), c) in enumerate(zip(classes, counts)):
        check_cancel(cancel, pred_name)
        report(progress, done, len(classes) + 1, f"evaluate: class {name}")
        if surface and (c.pred_voxels or c.ref_voxels):
            box = boxes.get(value, ())
            s = surface_metrics(pred_classes.array[box] == value, ref_classes.array[box] == value, ref.spacing,
                                nsd_tolerance_mm=nsd_tolerance_mm)
            distances, note = (s.hd_mm, s.hd95_mm, s.assd_mm, s.nsd), s.note
        else:
            distances = (math.nan,) * 4
            note = "" if c.pred_voxels or c.ref_voxels else "absent in both"
        if not note and not c.ref_voxels:
            note = "empty reference"
        elif not note and not c.pred_voxels:
            note = "empty prediction"
        difference = (c.pred_voxels - c.ref_voxels) * voxel_ml
        rows.append(ClassMetrics(
            value, name, c.pred_voxels, c.ref_voxels, c.pred_voxels * voxel_ml, c.ref_voxels * voxel_ml,
            difference, difference / (c.ref_voxels * voxel_ml) if c.ref_voxels else math.nan,
            c.dice, c.iou, *distances, note=note))
    detection = None
    if lesion_label is not None or lesion_instances:
        check_cancel(cancel, pred_name)
        report(progress, len(classes), len(classes) + 1, "evaluate: lesions")
        if lesion_label is not None and not lesion_instances and not (
                np.any(pred.array == lesion_label) or np.any(ref.array == lesion_label)):
            notes.append(f"lesion label {lesion_label} occurs in neither map")
        detection = match_lesions(_lesion_instances(pred, lesion_label, lesion_instances, connectivity),
                                  _lesion_instances(ref, lesion_label, lesion_instances, connectivity),
                                  match_iou=match_iou, voxel_volume_ml=voxel_ml)
    report(progress, len(classes) + 1, len(classes) + 1, "evaluate: done")
    return EvaluationResult(tuple(rows), detection, pred_name, ref_name, float(nsd_tolerance_mm), float(match_iou),
                            int(connectivity), lesion_label, resampled, bool(surface), ref.describe(),
                            tuple(notes))
