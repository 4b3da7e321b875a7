"""Evaluating predictions against references: the metrics the field reports.

>>> from medseg.evaluation import evaluate                              # doctest: +SKIP
>>> result = evaluate(pred, ref, labels={1: "liver", 2: "tumour"}, lesion_label=2)  # doctest: +SKIP
>>> result.by_name("liver").dice, result.detection.f1, result.detection.pq          # doctest: +SKIP

Per class: Dice, IoU, HD, HD95, ASSD, NSD at a tolerance in mm (surface distances with MONAI's
implementation and the voxel spacing), volumes and their difference. Lesion-wise: TP/FP/FN,
precision, recall, F1, per-lesion Dice and panoptic quality under one stated matching rule
(:mod:`medseg.evaluation.detection`). Definitions: ``docs/lesions.md``.
"""

from medseg.evaluation.detection import DetectionResult, LesionMatch, match_lesions
from medseg.evaluation.evaluate import ClassMetrics, EvaluationResult, evaluate
from medseg.resample import resample_labels
from medseg.evaluation.overlap import OverlapCounts, class_overlap
from medseg.evaluation.surface import SurfaceMetrics, surface_metrics

__all__ = [
    "evaluate",
    "EvaluationResult",
    "ClassMetrics",
    "class_overlap",
    "OverlapCounts",
    "surface_metrics",
    "SurfaceMetrics",
    "match_lesions",
    "DetectionResult",
    "LesionMatch",
    "resample_labels",
]
