"""Masks from per-slice polygons: the pixel-centre, even-odd rule under RTSTRUCT import.

The rule and why it gives back medseg's own contours exactly and those of OpenCV / rt-utils too
are stated in :mod:`medseg.export.contours`; this module holds the rasteriser and the
self-intersection count (numpy only).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from medseg.export.contours import SliceContour

__all__ = ["rasterise_polygons", "contours_to_mask"]


def _on_lattice(p0: np.ndarray, p1: np.ndarray, n_i: int, n_j: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (integer points) within ``tol`` of the segments p0-p1, found row by row
    (steep segments) and, with the axes swapped, column by column (flat ones)."""
    found_i, found_j = [], []
    for a, b, size_i, size_j, swap in ((p0, p1, n_i, n_j, False), (p0[:, ::-1], p1[:, ::-1], n_j, n_i, True)):
        dy = b[:, 1] - a[:, 1]
        steep = np.abs(dy) > 1e-12
        a, b, dy = a[steep], b[steep], dy[steep]
        first = np.clip(np.ceil(np.minimum(a[:, 1], b[:, 1]) - tol), 0, size_j).astype(np.int64)
        last = np.clip(np.floor(np.maximum(a[:, 1], b[:, 1]) + tol) + 1, 0, size_j).astype(np.int64)
        counts = np.maximum(last - first, 0)
        edge = np.repeat(np.arange(len(a)), counts)
        row = first[edge] + (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts))
        x = a[edge, 0] + (row - a[edge, 1]) * (b[edge, 0] - a[edge, 0]) / dy[edge]
        col = np.rint(x)
        hit = (np.abs(x - col) <= tol) & (col >= 0) & (col < size_i)
        i, j = col[hit].astype(np.int64), row[hit]
        found_i.append(j if swap else i)
        found_j.append(i if swap else j)
    return np.concatenate(found_i), np.concatenate(found_j)


def rasterise_polygons(polygons: Iterable[np.ndarray], shape: tuple[int, int], *,
                       border_tolerance: float = 1e-3) -> np.ndarray:
    """Pixels whose centre is inside the polygons (even-odd over all of them) or on one of them.

    Parameters
    ----------
    polygons : iterable of ndarray, shape (N, 2)
        Closed polygons in pixel coordinates ``(i, j)``; the closing vertex may be repeated.
        Polygons of 1 or 2 vertices enclose nothing but mark the pixel centres they touch.
    shape : (I, J)
    border_tolerance : float
        How close (in pixels) a centre must be to a contour to count as on it.

    Returns
    -------
    ndarray of bool, shape (I, J)

    Examples
    --------
    A square whose corners are pixel centres holds 3 x 3 pixels: the border belongs to it.

    >>> square = np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]])
    >>> int(rasterise_polygons([square], (5, 5)).sum())
    9
    """
    # Written here rather than taken from skimage.draw.polygon: RTSTRUCT needs even-odd over
    # all contours of a slice at once (holes), which per-polygon fills cannot give. Vectorised
    # scan line: one crossing per edge and row, sorted, filled in pairs; then the border.
    n_i, n_j = int(shape[0]), int(shape[1])
    starts, ends, areas = [], [], []
    for polygon in polygons:
        p = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(p) >= 2 and np.array_equal(p[0], p[-1]):
            p = p[:-1]
        if len(p) == 0 or not np.all(np.isfinite(p)):
            continue
        starts.append(p)
        ends.append(np.roll(p, -1, axis=0))
        areas.append(np.full(len(p), len(p) >= 3))
    out = np.zeros((n_i, n_j), dtype=bool)
    if not starts or n_i == 0 or n_j == 0:
        return out
    p0, p1, area = np.concatenate(starts), np.concatenate(ends), np.concatenate(areas)
    i, j = _on_lattice(p0, p1, n_i, n_j, border_tolerance)
    out[i, j] = True
    vertex = np.rint(p0)
    at = np.all(np.abs(p0 - vertex) <= border_tolerance, axis=1) & np.all((vertex >= 0) & (vertex < [n_i, n_j]), axis=1)
    out[vertex[at, 0].astype(np.int64), vertex[at, 1].astype(np.int64)] = True
    p0, p1 = p0[area], p1[area]
    j_lo, j_hi = np.minimum(p0[:, 1], p1[:, 1]), np.maximum(p0[:, 1], p1[:, 1])
    # Rows j crossed by an edge: j_lo <= j < j_hi (half-open: a shared vertex counts once,
    # horizontal edges not at all), so every row is crossed an even number of times.
    first = np.clip(np.ceil(j_lo), 0, n_j).astype(np.int64)
    stop = np.clip(np.ceil(j_hi), 0, n_j).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    total = int(counts.sum())
    if total == 0:
        return out
    edge = np.repeat(np.arange(len(p0)), counts)
    row = first[edge] + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    a, b = p0[edge], p1[edge]
    x = a[:, 0] + (row - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    lo = np.clip(np.ceil(x[0::2]), 0, n_i).astype(np.int64)
    hi = np.clip(np.ceil(x[1::2]), 0, n_i).astype(np.int64)
    rows = row[0::2]
    width = n_i + 1
    diff = (np.bincount(rows * width + lo, minlength=n_j * width)
            - np.bincount(rows * width + hi, minlength=n_j * width)).reshape(n_j, width)
    return out | (np.cumsum(diff, axis=1)[:, :n_i] > 0).T


def contours_to_mask(contours: Iterable[SliceContour], shape: tuple[int, int, int], *,
                     crop: bool = False) -> np.ndarray | tuple[tuple[slice, slice, slice], np.ndarray]:
    """A 3D mask (I, J, K) from slice contours: :func:`rasterise_polygons` per slice.

    With ``crop=True`` returns ``(box, mask[box])``, the mask cut to the contours' extent (an ROI
    of a large series then costs its own size, not the series').
    """
    by_slice: dict[int, list[np.ndarray]] = {}
    for contour in contours:
        if 0 <= int(contour.k) < shape[2]:
            by_slice.setdefault(int(contour.k), []).append(np.asarray(contour.points_ij, dtype=np.float64))
    if not by_slice:
        return ((slice(0, 0),) * 3, np.zeros((0, 0, 0), bool)) if crop else np.zeros(shape, bool)
    points = np.concatenate([p for polygons in by_slice.values() for p in polygons])
    lo = np.clip(np.floor(points.min(axis=0)).astype(int), 0, np.array(shape[:2]))
    hi = np.clip(np.ceil(points.max(axis=0)).astype(int) + 1, 0, np.array(shape[:2]))
    k0, k1 = min(by_slice), max(by_slice) + 1
    out = np.zeros((hi[0] - lo[0], hi[1] - lo[1], k1 - k0), dtype=bool)
    for k, polygons in by_slice.items():
        out[:, :, k - k0] = rasterise_polygons([p - lo for p in polygons], out.shape[:2])
    box = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(k0, k1))
    if crop:
        return box, out
    full = np.zeros(shape, dtype=bool)
    full[box] = out
    return full
