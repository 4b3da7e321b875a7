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


def _memory_order(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """A flat view of ``array`` in its memory order and whether that order is Fortran's.

    NIfTI data comes back Fortran-ordered from nibabel and cc3d keeps the input's order, so
    scans follow whichever order the array is stored in instead of copying it to C order.
    """
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        return array.T.reshape(-1), True
    return np.ascontiguousarray(array).reshape(-1), False


def group_voxels(labels: np.ndarray, *, foreground: np.ndarray | None = None) -> VoxelGroups:
    """Group the voxels of every non-zero value of ``labels``.

    Parameters
    ----------
    labels : ndarray, shape (I, J, K), integer
        Label or instance map; 0 is background. Values must be >= 0.
    foreground : ndarray of bool, optional
        ``labels != 0`` when the caller already has it (scanning a bool array is several times
        faster than scanning a uint32 one).

    Returns
    -------
    VoxelGroups
        Groups in ascending label value; voxels of a group in memory order.
    """
    if foreground is None:
        foreground = labels != 0
    flat_mask, fortran = _memory_order(foreground)
    same_layout = (labels.flags.f_contiguous == foreground.flags.f_contiguous
                   and labels.flags.c_contiguous == foreground.flags.c_contiguous)
    if not same_layout:
        labels = np.asfortranarray(labels) if fortran else np.ascontiguousarray(labels)
    flat_labels, _ = _memory_order(labels)
    index = np.flatnonzero(flat_mask)
    values = flat_labels[index]
    if values.size and values.dtype.itemsize > 2 and int(values.max()) <= np.iinfo(np.uint16).max:
        values = values.astype(np.uint16)  # numpy's stable sort is a radix sort for 16-bit keys
    order = np.argsort(values, kind="stable")
    values, index = values[order], index[order]
    shape = labels.shape[::-1] if fortran else labels.shape
    coords = np.unravel_index(index, shape)
    ijk = np.stack(coords[::-1] if fortran else coords, axis=1).astype(np.int64, copy=False)
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
