"""From what a user has (binary mask, semantic label map, probability map) to a lesion mask.

Three inputs are accepted, and which one is meant is always explicit:

* a **binary mask** (one non-zero value): every non-zero voxel is lesion (``any_nonzero``
  accepts several values, e.g. an instance map to be separated again);
* a **semantic label map** with ``label=N``: voxels equal to ``N`` are lesion;
* a **probability map** with ``threshold=p``: voxels with ``value >= p`` are lesion.

A multi-label map without ``label``, a float map with fractional values without ``threshold``
and a label that does not occur in a map holding other labels are refused with a clear
:class:`~medseg.errors.InputError`, because guessing would silently measure the wrong thing.
An entirely empty map is not an error: it has zero lesions.
"""

from __future__ import annotations

import numbers

import numpy as np

from medseg.errors import InputError, option
from medseg.volume import Volume

__all__ = ["lesion_mask", "require_same_grid", "volume_name", "require_integer_labels"]


def volume_name(volume: Volume, default: str) -> str:
    """The file a volume came from, or ``default`` for in-memory volumes (used in messages)."""
    return volume.source.path or default


def require_same_grid(volume: Volume, other: Volume, *, name: str, other_name: str,
                      hint: str = "give volumes on the same voxel grid (resample one onto the other first)") -> None:
    """Raise :class:`InputError` naming both volumes when they are not on one voxel grid."""
    if volume.same_grid(other):
        return

    def geometry(v: Volume) -> str:
        shape = "x".join(str(s) for s in v.shape)
        spacing = "x".join(f"{s:.4g}" for s in v.spacing)
        origin = ", ".join(f"{o:.2f}" for o in v.origin)
        return f"{shape} voxels of {spacing} mm, {v.orientation}, origin ({origin}) RAS"

    raise InputError(
        other_name,
        f"is not on the grid of {name} ({geometry(other)} against {geometry(volume)})",
        hint,
    )


def _chunks(array: np.ndarray, voxels: int = 1 << 23):
    """Views of ``array`` along its slowest-varying axis, about ``voxels`` voxels each.

    Lets whole-volume checks run in bounded memory (a float64 copy of a 512x512x300 map would
    be 630 MB).
    """
    axis = 2 if array.flags.f_contiguous and not array.flags.c_contiguous else 0
    step = max(1, voxels // max(1, array.size // max(1, array.shape[axis])))
    for start in range(0, array.shape[axis], step):
        index = [slice(None)] * 3
        index[axis] = slice(start, start + step)
        yield array[tuple(index)]


def _fractional_example(array: np.ndarray) -> float | None:
    """A non-integer value of a float array, or None when all values are whole numbers."""
    if array.dtype.kind != "f":
        return None
    for chunk in _chunks(array):
        bad = chunk != np.round(chunk)
        if bad.any():
            return float(chunk[bad][0])
    return None


def require_integer_labels(array: np.ndarray, where: str) -> None:
    """Refuse float label maps with fractional values and negative labels."""
    if array.dtype.kind not in "biuf":
        raise InputError(where, f"has non-numeric voxels (dtype {array.dtype})", "give a label map")
    value = _fractional_example(array)
    if value is not None:
        raise InputError(where, f"holds non-integer values (e.g. {value:.6g}), so it is not a label map",
                         f"pass a threshold ({option('threshold', 0.5)}) if it is a probability map, "
                         "or give an integer label map")
    if array.dtype.kind in "if" and array.size and array.min() < 0:
        raise InputError(where, f"holds negative labels (minimum {array.min():.6g})",
                         "label maps use 0 for background and positive integers for classes")


def _values_present(array: np.ndarray, limit: int = 12) -> str:
    values = np.unique(array[array != 0])
    text = ", ".join(str(int(v)) for v in values[:limit])
    return text + (f", ... ({values.size} values)" if values.size > limit else "")


def lesion_mask(
    volume: Volume,
    *,
    label: int | None = None,
    threshold: float | None = None,
    allow_absent_label: bool = False,
    any_nonzero: bool = False,
) -> np.ndarray:
    """The boolean lesion mask of a binary mask, a semantic label map or a probability map.

    Parameters
    ----------
    volume : Volume
        The map, shape (I, J, K).
    label : int, optional
        Lesion class value in a semantic label map.
    threshold : float, optional
        Probability map: voxels with ``value >= threshold`` are lesion. Excludes ``label``.
    allow_absent_label : bool
        Return an empty mask instead of raising when ``label`` does not occur in a map that
        holds other labels (e.g. a multi-organ prediction in which no tumour was found).
    any_nonzero : bool
        Every non-zero voxel is lesion, whatever its value (e.g. to re-separate an instance map).

    Returns
    -------
    ndarray of bool, shape (I, J, K)
        In the memory order of ``volume.array`` (no copy of the layout is forced).

    Raises
    ------
    InputError
        Multi-label map without ``label``; fractional values without ``threshold``; NaN in a
        probability map; ``label`` absent from a map holding other labels.
    """
    array = volume.array
    where = volume_name(volume, "lesion map")
    if threshold is not None and label is not None:
        raise InputError(where, "both a lesion label and a probability threshold were given",
                         f"use {option('label')} for label maps or {option('threshold')} for probability maps")
    if array.dtype.kind not in "biuf":
        raise InputError(where, f"has non-numeric voxels (dtype {array.dtype})", "give a label or probability map")
    if threshold is not None:
        if not isinstance(threshold, numbers.Real) or not np.isfinite(threshold):
            raise InputError(option("threshold", threshold), f"{threshold!r} is not a finite number", "use e.g. 0.5")
        if array.dtype.kind == "f" and np.isnan(np.add.reduce(array, axis=None, dtype=np.float64)):
            raise InputError(where, "contains NaN voxels", "fix the probability map")
        return array >= threshold
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, numbers.Integral):
            if not (isinstance(label, numbers.Real) and float(label).is_integer()):
                raise InputError(option("label", label), f"{label!r} is not an integer label value",
                                 "give the integer value of the lesion class")
            label = int(label)
        require_integer_labels(array, where)
        mask = array == label
        if not allow_absent_label and not mask.any() and np.any(array):
            raise InputError(where, f"has no voxels with lesion label {label}; it holds {_values_present(array)}",
                             f"check {option('label')} (or pass {option('allow_absent_label', True)} if no lesion is a "
                             "valid result here)")
        return mask
    if array.dtype == bool:
        return array
    require_integer_labels(array, where)
    mask = array != 0
    if any_nonzero:
        return mask
    inside = array[mask]
    if inside.size and np.any(inside != inside[0]):
        raise InputError(where, f"holds several labels ({_values_present(array)}), so it is not a binary mask",
                         f"choose the lesion class with {option('label')}; for an instance map use "
                         f"{option('as_instances', True)} (keep its ids) or {option('any_nonzero', True)} (separate again)")
    return mask
