"""Lesion-wise detection and panoptic quality from two instance maps.

Matching rule (stated once, used for detection and PQ alike): a predicted lesion ``p`` and a
reference lesion ``r`` may be matched when ``IoU(p, r) > match_iou`` (strictly). Among the
allowed pairs, a one-to-one matching of largest total IoU is chosen (Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``). With ``match_iou >= 0.5`` every lesion has at most
one allowed partner, so the matching is unique and PQ is the standard one of Kirillov et al.
(2019); lower thresholds (e.g. 0.1, or 0 for "any overlap") are allowed for detection.

* TP = matched pairs, FP = unmatched predicted lesions, FN = unmatched reference lesions;
* precision = TP / (TP + FP), recall (sensitivity) = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN);
* SQ = mean IoU of the TPs, RQ = TP / (TP + FP/2 + FN/2) (= F1), PQ = SQ x RQ;
* per-lesion Dice of each pair; an unmatched lesion has Dice 0.

Ratios with a zero denominator are NaN (no lesions in either map: nothing to score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LesionMatch", "DetectionResult", "match_lesions"]


@dataclass(frozen=True)
class LesionMatch:
    """One reference lesion with its match, or one unmatched predicted lesion (ids 0 = none)."""

    ref_id: int
    pred_id: int
    ref_volume_ml: float
    pred_volume_ml: float
    intersection_ml: float
    iou: float
    dice: float

    @property
    def outcome(self) -> str:
        """"TP", "FN" (reference lesion missed) or "FP" (predicted lesion with no reference)."""
        if self.ref_id and self.pred_id:
            return "TP"
        return "FN" if self.ref_id else "FP"


@dataclass(frozen=True)
class DetectionResult:
    """Lesion-wise detection counts, ratios and panoptic quality."""

    n_ref: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    sq: float
    rq: float
    pq: float
    mean_tp_dice: float
    match_iou: float
    matches: tuple[LesionMatch, ...]


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def _sizes(instances: np.ndarray) -> dict[int, int]:
    from medseg.evaluation.overlap import label_counts

    sizes = label_counts(instances)
    sizes.pop(0, None)
    return sizes


def match_lesions(pred: np.ndarray, ref: np.ndarray, *, match_iou: float = 0.5,
                  voxel_volume_ml: float = 1.0) -> DetectionResult:
    """Match predicted to reference lesions and score detection and PQ.

    Parameters
    ----------
    pred, ref : ndarray, shape (I, J, K), integer
        Instance maps (0 = background, each other value one lesion).
    match_iou : float
        Pairs need IoU strictly above this (0 <= match_iou < 1).
    voxel_volume_ml : float
        Volume of one voxel, for the volumes in the match list.

    Returns
    -------
    DetectionResult
        ``matches`` lists reference lesions by id (matched or missed), then the unmatched
        predicted lesions by id.
    """
    from scipy.optimize import linear_sum_assignment

    if not 0 <= match_iou < 1:
        raise ValueError(f"match_iou must be in [0, 1), got {match_iou}")
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: {pred.shape} and {ref.shape}")
    pred_sizes, ref_sizes = _sizes(pred), _sizes(ref)
    both = (pred != 0) & (ref != 0)
    base = max(ref_sizes, default=0) + 1
    codes, overlap = np.unique(pred[both].astype(np.int64) * base + ref[both].astype(np.int64), return_counts=True)
    overlap_pairs = np.stack([codes // base, codes % base], axis=1)
    union = np.array([pred_sizes[p] + ref_sizes[r] for p, r in overlap_pairs], dtype=np.float64) - overlap
    iou = overlap / np.maximum(union, 1)
    allowed = iou > match_iou
    matched: dict[int, tuple[int, int]] = {}  # ref id -> (pred id, intersection voxels)
    if allowed.any():
        cand = overlap_pairs[allowed]
        preds, pred_index = np.unique(cand[:, 0], return_inverse=True)
        refs, ref_index = np.unique(cand[:, 1], return_inverse=True)
        gain = np.zeros((len(preds), len(refs)))
        gain[pred_index, ref_index] = iou[allowed]
        rows, cols = linear_sum_assignment(gain, maximize=True)
        inter = dict(zip(map(tuple, cand.tolist()), overlap[allowed].tolist()))
        for row, col in zip(rows, cols):
            if gain[row, col] > 0:
                p, r = int(preds[row]), int(refs[col])
                matched[r] = (p, inter[(p, r)])
    matches = []
    for r in sorted(ref_sizes):
        p, inter = matched.get(r, (0, 0))
        p_size = pred_sizes.get(p, 0)
        union_rp = ref_sizes[r] + p_size - inter
        matches.append(LesionMatch(r, p, ref_sizes[r] * voxel_volume_ml, p_size * voxel_volume_ml,
                                   inter * voxel_volume_ml, inter / union_rp if p else 0.0,
                                   2.0 * inter / (ref_sizes[r] + p_size) if p else 0.0))
    used = {p for p, _ in matched.values()}
    for p in sorted(set(pred_sizes) - used):
        matches.append(LesionMatch(0, p, 0.0, pred_sizes[p] * voxel_volume_ml, 0.0, 0.0, 0.0))
    tp = len(matched)
    fp, fn = len(pred_sizes) - tp, len(ref_sizes) - tp
    tp_ious = [m.iou for m in matches if m.outcome == "TP"]
    tp_dice = [m.dice for m in matches if m.outcome == "TP"]
    rq = _ratio(tp, tp + 0.5 * fp + 0.5 * fn)
    sq = float(np.mean(tp_ious)) if tp else (0.0 if fp + fn else math.nan)
    return DetectionResult(
        n_ref=len(ref_sizes), n_pred=len(pred_sizes), tp=tp, fp=fp, fn=fn,
        precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn), f1=_ratio(2 * tp, 2 * tp + fp + fn),
        sq=sq, rq=rq, pq=sq * rq if not math.isnan(rq) else math.nan,
        mean_tp_dice=float(np.mean(tp_dice)) if tp else math.nan, match_iou=float(match_iou),
        matches=tuple(matches),
    )
