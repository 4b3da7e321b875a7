"""Organ segmentation inference: a Volume in, labels on the same grid out.

>>> from medseg.inference import segment                    # doctest: +SKIP
>>> result = segment(volume, "path/to/model", device="auto")   # doctest: +SKIP
>>> result.labels.same_grid(volume)                          # doctest: +SKIP
True

Modules, in the order a volume passes through them: ``preprocess`` (to model space and the
grid map back), ``sliding`` (windows, blended slab by slab), ``restore`` (labels on the input
grid), ``engine`` (the public functions below).
"""

from medseg.inference.engine import (
    SegmentationResult,
    resolve_device,
    segment,
    segment_ensemble,
    tune_malloc,
)
from medseg.inference.preprocess import ModelGrid, apply_intensity, plan_grid, to_model_space

__all__ = [
    "ModelGrid",
    "SegmentationResult",
    "apply_intensity",
    "plan_grid",
    "resolve_device",
    "segment",
    "segment_ensemble",
    "to_model_space",
    "tune_malloc",
]
