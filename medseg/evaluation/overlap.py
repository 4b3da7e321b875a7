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
    """Voxel count of every value in an integer label array (0 included).

    Only the non-zero voxels are gathered and counted (a bincount over a whole 512x512x300
    map first widens it to 64-bit integers, which takes seconds); background is the rest.
    """
    foreground = labels[labels != 0]
    if foreground.dtype == bool:
        foreground = foreground.view(np.uint8)
    counts: dict[int, int] = {}
    if foreground.size:
        top = int(foreground.max())
        if foreground.dtype.kind in "iu" and top < (1 << 20) and int(foreground.min()) >= 0:
            histogram = np.bincount(foreground.astype(np.intp, copy=False), minlength=top + 1)
            counts = {int(v): int(histogram[v]) for v in np.flatnonzero(histogram)}
        else:
            values, numbers = np.unique(foreground, return_counts=True)
            counts = {int(v): int(c) for v, c in zip(values, numbers)}
    if labels.size - foreground.size:
        counts[0] = int(labels.size - foreground.size)
    return counts


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
    intersection = label_counts(np.where(pred == ref, pred, 0))
    return [OverlapCounts(int(v), pred_counts.get(int(v), 0), ref_counts.get(int(v), 0),
                          intersection.get(int(v), 0)) for v in values]
