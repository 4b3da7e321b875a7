"""Voxel indices of each lesion, gathered in one sparse pass over a label array.

Lesions are small against the volume (a 512x512x300 CT holds 78 M voxels, its lesions a few
hundred thousand), so every per-lesion computation works on the lesion's own voxel list and a
small crop built from it, never on the full array again. :class:`VoxelGroups` is that list in a
compressed form (CSR-like: one index array, one offset per group).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VoxelGroups", "group_voxels", "crop_mask"]


@dataclass(frozen=True, eq=False)
class VoxelGroups:
    """Voxel indices ``(i, j, k)`` of each labelled region, grouped by label value.

    Attributes
    ----------
    shape : (3,) tuple
        Shape of the label array the indices refer to.
    values : ndarray, shape (n,)
        The label value of each group, ascending.
    offsets : ndarray, shape (n + 1,)
        Group ``g`` owns ``ijk[offsets[g]:offsets[g + 1]]``.
    ijk : ndarray, shape (m, 3), int64
        Voxel indices of all groups, concatenated.
    """

    shape: tuple[int, int, int]
    values: np.ndarray
    offsets: np.ndarray
    ijk: np.ndarray

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def counts(self) -> np.ndarray:
        """Voxel count of each group, shape (n,)."""
        return np.diff(self.offsets)

    def voxels(self, group: int) -> np.ndarray:
        """The ``(m, 3)`` voxel indices of group ``group`` (0-based position, not label value)."""
        return self.ijk[self.offsets[group]:self.offsets[group + 1]]

    @classmethod
    def from_parts(cls, shape: tuple[int, int, int], parts: list[np.ndarray],
                   values: np.ndarray | None = None) -> VoxelGroups:
        """Build groups from a list of ``(m_g, 3)`` index arrays (values default to 1..n)."""
        counts = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        ijk = np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros((0, 3), np.int64)
        if values is None:
            values = np.arange(1, len(parts) + 1, dtype=np.int64)
        return cls(tuple(int(s) for s in shape), np.asarray(values, dtype=np.int64), offsets, ijk)


def _flat_nonzero(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of non-zero voxels in memory order, and the (i, j, k) index arrays.

    NIfTI data comes back Fortran-ordered from nibabel and cc3d keeps the input's order, so the
    scan follows whichever order the array is stored in instead of copying it to C order.
    """
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        flat = array.T.reshape(-1)
        index = np.flatnonzero(flat)
        k, j, i = np.unravel_index(index, array.shape[::-1])
    else:
        array = np.ascontiguousarray(array)
        flat = array.reshape(-1)
        index = np.flatnonzero(flat)
        i, j, k = np.unravel_index(index, array.shape)
    return flat, index, np.stack([i, j, k], axis=1).astype(np.int64, copy=False)


def group_voxels(labels: np.ndarray, *, foreground: np.ndarray | None = None) -> VoxelGroups:
    """Group the voxels of every non-zero value of ``labels``.

    Parameters
    ----------
    labels : ndarray, shape (I, J, K), integer
        Label or instance map; 0 is background. Values must be >= 0.
    foreground : ndarray of bool, optional
        ``labels != 0`` when the caller already has it (scanning a bool array is several times
        faster than scanning a uint32 one); must have the same memory order as ``labels``.

    Returns
    -------
    VoxelGroups
        Groups in ascending label value.
    """
    if foreground is None:
        foreground = labels != 0
    if foreground.flags.f_contiguous != labels.flags.f_contiguous:
        labels = np.asfortranarray(labels) if foreground.flags.f_contiguous else np.ascontiguousarray(labels)
    _, index, ijk = _flat_nonzero(foreground)
    if labels.flags.f_contiguous and not labels.flags.c_contiguous:
        values = labels.T.reshape(-1)[index]
    else:
        values = np.ascontiguousarray(labels).reshape(-1)[index]
    order = np.argsort(values, kind="stable")
    values = values[order]
    ijk = ijk[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if values.size else np.zeros(0, np.int64)
    offsets = np.r_[starts, values.size].astype(np.int64)
    return VoxelGroups(tuple(int(s) for s in labels.shape), values[starts].astype(np.int64), offsets, ijk)


def crop_mask(ijk: np.ndarray, *, pad: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A boolean crop holding the voxels ``ijk`` with ``pad`` empty voxels around them.

    Returns
    -------
    crop : ndarray of bool, shape (bounding box + 2 * pad)
    start : ndarray, shape (3,)
        Index of ``crop[0, 0, 0]`` in the full array (may be negative because of the padding).
    """
    start = ijk.min(axis=0) - pad
    size = ijk.max(axis=0) - start + 1 + pad
    crop = np.zeros(tuple(int(s) for s in size), dtype=bool)
    local = ijk - start
    crop[local[:, 0], local[:, 1], local[:, 2]] = True
    return crop, start
