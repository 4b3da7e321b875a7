"""Voxel overlap of label maps: Dice, IoU and volumes per class, counted in one pass each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["OverlapCounts", "class_overlap", "label_counts"]


@dataclass(frozen=True)
class OverlapCounts:
    """Voxel counts of one class in a prediction and a reference.

    ``dice`` and ``iou`` are NaN when the class is absent from both (nothing to score; such
    classes are left out of means), 0 when it is absent from one only.
    """

    value: int
    pred_voxels: int
    ref_voxels: int
    intersection: int

    @property
    def dice(self) -> float:
        total = self.pred_voxels + self.ref_voxels
        return float("nan") if total == 0 else 2.0 * self.intersection / total

    @property
    def iou(self) -> float:
        union = self.pred_voxels + self.ref_voxels - self.intersection
        return float("nan") if union == 0 else self.intersection / union


def label_counts(labels: np.ndarray) -> dict[int, int]:
    """Voxel count of every value in an integer label array (0 included)."""
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    top = int(labels.max()) if labels.size else 0
    if labels.dtype.kind in "iu" and top < (1 << 20) and (labels.dtype.kind == "u" or labels.min() >= 0):
        flat = np.ravel(labels, order="K")
        if flat.dtype == np.uint64:
            flat = flat.astype(np.int64)
        counts = np.bincount(flat, minlength=top + 1)
        present = np.flatnonzero(counts)
        return {int(v): int(counts[v]) for v in present}
    values, counts = np.unique(labels, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def class_overlap(pred: np.ndarray, ref: np.ndarray, values: Sequence[int]) -> list[OverlapCounts]:
    """Counts of every class in ``values`` for two integer label arrays of one shape.

    Parameters
    ----------
    pred, ref : ndarray, shape (I, J, K), integer
    values : sequence of int
        Class values to report (0 is allowed but rarely wanted).

    Returns
    -------
    list of OverlapCounts, in the order of ``values``
    """
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: {pred.shape} and {ref.shape}")
    pred_counts = label_counts(pred)
    ref_counts = label_counts(ref)
    agree = pred == ref
    intersection = label_counts(pred[agree]) if agree.any() else {}
    return [OverlapCounts(int(v), pred_counts.get(int(v), 0), ref_counts.get(int(v), 0),
                          intersection.get(int(v), 0)) for v in values]
