"""Checks every reader applies before a volume leaves the IO layer."""

from __future__ import annotations

import numpy as np

from medseg.errors import InputError

__all__ = ["require_3d_shape", "require_finite", "require_scalar_dtype"]


def require_3d_shape(shape: tuple[int, ...], where: str, *, allow_2d: bool = False) -> tuple[int, int, int]:
    """Return ``shape`` as 3D, dropping trailing singleton dimensions beyond the third.

    Raises :class:`InputError` for 2D images (unless ``allow_2d``) and for 4D+ data with more
    than one volume, which medseg does not guess how to split.
    """
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) > 3:
        raise InputError(where, f"is {len(dims)}D (shape {tuple(shape)}); medseg works on 3D volumes",
                         "split it into 3D volumes first (e.g. one echo or time point per file)")
    if len(dims) < 3:
        dims += [1] * (3 - len(dims))
    if dims[2] == 1 and not allow_2d:
        raise InputError(where, f"is a single 2D slice (shape {tuple(shape)}); a 3D volume is needed",
                         "give the whole series, or pass --allow-2d to read one slice anyway")
    return dims[0], dims[1], dims[2]


def require_finite(array: np.ndarray, where: str) -> None:
    """Raise :class:`InputError` if a floating-point array holds NaN or Inf."""
    if array.dtype.kind not in "fc":
        return
    # np.isfinite(...).all() would allocate a full bool copy; a reduction that propagates
    # NaN/Inf is one pass without the copy.
    total = np.add.reduce(array, axis=None, dtype=np.float64)
    if np.isfinite(total):
        return
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(where, f"contains {bad} NaN/Inf voxels",
                         "fix the file (e.g. replace NaN with 0 in the tool that wrote it)")


def require_scalar_dtype(dtype: np.dtype, where: str) -> None:
    """Reject colour (structured or vector) and complex voxels, which are not scalar images."""
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise InputError(where, f"has non-scalar voxels (dtype {dtype}), e.g. an RGB picture",
                         "give a grey-level CT/MR volume or label map")
