"""Cross-check medseg's panoptic quality against panoptica on the real MS lesion masks.

panoptica (pip) pins numpy<2.3, cc3d<4 and rich<14, so it cannot live in medseg's environment;
run this in a separate virtualenv that has both::

    python -m venv /tmp/pq && /tmp/pq/bin/pip install torch==2.13.0 && \
      /tmp/pq/bin/pip install -e . panoptica && /tmp/pq/bin/python benchmarks/check_pq_panoptica.py

Prints TP/FP/FN and PQ/SQ/RQ from both and exits non-zero if they differ by more than 1e-3
relative. The test suite compares against MONAI's ``compute_panoptic_quality`` instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from scipy import ndimage

from medseg.evaluation import match_lesions
from medseg.io import load_volume
from medseg.lesions import find_instances

DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> int:
    import panoptica

    # Reference: the 19 consensus MS lesions of patient 26. Prediction: the same lesions dilated,
    # eroded or shifted by one voxel, three missed, two false positives (as tests/test_evaluation_real.py).
    ref_map = load_volume(DATA / "lesions/ms_lesions_ljubljana/patient26_lesions_mni.nii.gz")
    ref = np.asarray(find_instances(ref_map).labels.array, dtype=np.int64)
    pred_mask = np.zeros(ref.shape, bool)
    for lesion in range(1, ref.max() + 1):
        mask = ref == lesion
        if lesion in (4, 12, 17):
            continue
        if lesion % 3 == 0:
            mask = ndimage.binary_dilation(mask)
        elif lesion % 3 == 1 and mask.sum() > 50:
            mask = ndimage.binary_erosion(mask)
        else:
            mask = np.roll(mask, 1, axis=lesion % 3)
        pred_mask |= mask
    pred_mask[20:24, 100:104, 80:83] = True
    pred_mask[150:152, 60:63, 100:102] = True
    pred = np.asarray(find_instances(ref_map.with_array(pred_mask.astype(np.uint8))).labels.array, dtype=np.int64)
    ours = match_lesions(pred, ref)
    evaluator = panoptica.Panoptica_Evaluator(
        expected_input=panoptica.InputType.UNMATCHED_INSTANCE,
        instance_matcher=panoptica.NaiveThresholdMatching(matching_threshold=0.5, strict_threshold=True))
    theirs = evaluator.evaluate(pred, ref, verbose=False)["ungrouped"]
    print(f"medseg:    tp {ours.tp} fp {ours.fp} fn {ours.fn} pq {ours.pq:.6f} sq {ours.sq:.6f} rq {ours.rq:.6f}")
    print(f"panoptica: tp {theirs.tp} fp {theirs.fp} fn {theirs.fn} pq {theirs.pq:.6f} sq {theirs.sq:.6f} "
          f"rq {theirs.rq:.6f}")
    same = (ours.tp, ours.fp, ours.fn) == (theirs.tp, theirs.fp, theirs.fn) and all(
        abs(a - b) <= 1e-3 * max(abs(b), 1e-12) for a, b in
        ((ours.pq, theirs.pq), (ours.sq, theirs.sq), (ours.rq, theirs.rq)))
    print("agree within 1e-3 relative" if same else "DISAGREE")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
