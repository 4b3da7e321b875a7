"""What one correction changed, exactly: a box, the changed voxels in it, their old and new values.

Every operation of :mod:`medseg.corrections` returns a :class:`Correction`: a :class:`Delta` plus a
record for the provenance log. A delta is small (it holds the changed voxels, not the volume) and
exact: :meth:`Delta.apply` then :meth:`Delta.revert` gives back the array bit for bit, and
:meth:`Delta.indices` / :attr:`Delta.new` are what a napari layer's ``data_setitem`` takes.

Indices are the volume's own ``(i, j, k)``; a napari layer showing the volume through a view
(see ``napari_plugin._geometry``) maps them to its axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

__all__ = ["Correction", "Delta", "now_utc_ms"]


def now_utc_ms() -> str:
    """UTC time with milliseconds (corrections come seconds apart)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, eq=False)
class Delta:
    """The voxels one edit changes.

    Attributes
    ----------
    box : tuple of slice
        Bounding box (volume indices, step 1) of the changed voxels.
    mask : ndarray of bool, shape of the box
        Which voxels of the box change.
    old : ndarray, shape (n,)
        Their values before, in C order of the box (``array[box][mask]``).
    new : ndarray, shape (n,) or ()
        Their values after (one value for all when the edit paints one label).
    """

    box: tuple[slice, slice, slice]
    mask: np.ndarray
    old: np.ndarray
    new: np.ndarray

    @classmethod
    def between(cls, array: np.ndarray, box: tuple[slice, ...], mask: np.ndarray, new: Any) -> Delta:
        """The delta that sets ``array[box][mask] = new``, keeping only voxels whose value changes.

        ``new`` is one value or an array with one value per ``True`` of ``mask``. The box is
        shrunk to the voxels that change.
        """
        box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, array.shape))
        region = array[box]
        mask = np.asarray(mask, dtype=bool)
        new = np.asarray(new, dtype=array.dtype)
        old = region[mask]
        changed = old != new
        if new.ndim:
            new = new[changed]
        where = np.nonzero(mask)
        where = tuple(w[changed] for w in where)
        if where[0].size == 0:
            return cls.empty(array)
        lo = [int(w.min()) for w in where]
        hi = [int(w.max()) + 1 for w in where]
        tight = np.zeros([h - l for l, h in zip(lo, hi)], dtype=bool)
        tight[tuple(w - l for w, l in zip(where, lo))] = True
        # C order of the tight box equals C order of the indices (np.nonzero is C ordered).
        out_box = tuple(slice(s.start + l, s.start + h) for s, l, h in zip(box, lo, hi))
        return cls(out_box, tight, old[changed].copy(), new.copy() if new.ndim else new)  # type: ignore[arg-type]

    @classmethod
    def empty(cls, array: np.ndarray) -> Delta:
        return cls((slice(0, 0),) * 3, np.zeros((0, 0, 0), bool), np.zeros(0, array.dtype),  # type: ignore[arg-type]
                   np.zeros((), array.dtype))

    # --- what it holds -------------------------------------------------------------------------
    @property
    def voxels(self) -> int:
        """Number of voxels that change."""
        return int(self.old.size)

    def __bool__(self) -> bool:
        return self.voxels > 0

    @property
    def nbytes(self) -> int:
        """Memory held (mask + old + new values)."""
        return int(self.mask.nbytes + self.old.nbytes + self.new.nbytes)

    @property
    def box_voxels(self) -> int:
        return int(np.prod([s.stop - s.start for s in self.box]))

    def indices(self, dtype: Any = np.intp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Volume indices of the changed voxels (C order, as :attr:`old`)."""
        where = np.nonzero(self.mask)
        return tuple(np.asarray(w + s.start, dtype=dtype) for w, s in zip(where, self.box))  # type: ignore[return-value]

    def values_before(self) -> set[int]:
        return {int(v) for v in np.unique(self.old)}

    def values_after(self) -> set[int]:
        return {int(v) for v in np.unique(self.new)}

    def slice_range(self, axis: int) -> tuple[int, int] | None:
        """First and last index along ``axis`` that the delta touches (inclusive); None if empty."""
        if not self:
            return None
        return int(self.box[axis].start), int(self.box[axis].stop) - 1

    # --- applying ------------------------------------------------------------------------------
    def apply(self, array: np.ndarray) -> None:
        """Write the new values into ``array`` (in place)."""
        if self:
            array[self.box][self.mask] = self.new

    def revert(self, array: np.ndarray) -> None:
        """Write the old values back into ``array`` (in place): exactly what was there before."""
        if self:
            array[self.box][self.mask] = self.old

    def matches(self, array: np.ndarray) -> bool:
        """True when ``array`` holds this delta's old values (it can be applied)."""
        return bool(np.array_equal(array[self.box][self.mask], self.old)) if self else True


@dataclass(frozen=True, eq=False)
class Correction:
    """An operation's result: the :class:`Delta` and the record for the provenance log."""

    delta: Delta
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def voxels(self) -> int:
        return self.delta.voxels
