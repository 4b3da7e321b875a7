"""Is an exported network the same network? Compared with torch on a real window.

A back-end is used for a model only after it has given, on a window of a real volume, the same
labels as PyTorch in at least :data:`MIN_ARGMAX_AGREEMENT` of the voxels and logits within the
tolerance below; otherwise it is refused for that model, and the verdict is cached with the
export so the check runs once.

Tolerance on the logits: ``max |l_backend - l_torch| <= rel * max(1, max |l_torch|)`` with
``rel`` = 1e-3 in float32 (4x the largest difference measured for OpenVINO f32 here, 2.5e-3 on
logits of magnitude ~20-50, and 20x ONNX Runtime's) and 5e-2 in bfloat16 (8 bits of mantissa).
Logits scale with the network's output, so the bound does too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["MIN_ARGMAX_AGREEMENT", "RELATIVE_LOGIT_TOLERANCE", "Agreement", "compare"]

#: Fraction of window voxels whose argmax must equal torch's.
MIN_ARGMAX_AGREEMENT = 0.999
#: Largest logit difference allowed, relative to the largest logit magnitude (at least 1).
RELATIVE_LOGIT_TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 5e-2}


@dataclass(frozen=True)
class Agreement:
    """The outcome of one check (plain data, cached as the verdict)."""

    passed: bool
    argmax_agreement: float
    max_abs_logit_diff: float
    tolerance: float
    voxels: int
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def compare(reference, candidate, precision: str = "fp32") -> Agreement:
    """Compare logits of the same windows, shape (B, C, X, Y, Z), from torch and a back-end.

    Parameters
    ----------
    reference, candidate : array-like (numpy or torch)
    precision : str
        The candidate's precision; sets the logit tolerance.
    """
    ref = _numpy(reference)
    out = _numpy(candidate)
    if ref.shape != out.shape:
        return Agreement(False, 0.0, float("inf"), 0.0, int(ref[:, 0].size),
                         f"it gives outputs of shape {out.shape}, torch {ref.shape}")
    if not np.isfinite(out).all():
        return Agreement(False, 0.0, float("inf"), 0.0, int(ref[:, 0].size), "it gives NaN or infinite logits")
    scale = max(1.0, float(np.abs(ref).max()))
    tolerance = RELATIVE_LOGIT_TOLERANCE.get(precision, 1e-3) * scale
    diff = float(np.abs(out - ref).max())
    same = float(np.mean(out.argmax(axis=1) == ref.argmax(axis=1)))
    reasons = []
    if same < MIN_ARGMAX_AGREEMENT:
        reasons.append(f"its labels agree with torch's in {same:.4%} of a window's voxels "
                       f"(needed {MIN_ARGMAX_AGREEMENT:.1%})")
    if diff > tolerance:
        reasons.append(f"its logits differ from torch's by up to {diff:.3g} (allowed {tolerance:.3g})")
    return Agreement(not reasons, round(same, 7), diff, tolerance, int(ref[:, 0].size), "; ".join(reasons))


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
