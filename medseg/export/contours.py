"""Per-slice contours of masks, and masks from contours: the geometry under DICOM RTSTRUCT.

An RT Structure Set stores each object as closed polygons, one or more per image slice, with
their vertices in patient coordinates (LPS, mm) lying in that slice's plane. This module turns a
mask on a series' grid into such polygons and back; :mod:`medseg.export.rtstruct` and
:mod:`medseg.io._rtstruct` add the DICOM around it. Numpy and scikit-image only.

Masks -> polygons
    :func:`mask_contours` runs scikit-image's marching squares (``find_contours``) at level 0.5
    on each slice. Its vertices sit half-way between a pixel centre inside and one outside, so
    every pixel centre lies strictly inside or strictly outside the polygons and the rasteriser
    below gives back exactly the same pixels. Holes are separate contours (wound the other
    way), as RTSTRUCT readers expect; foreground touching diagonally is one polygon (8-connected,
    like medseg's lesions). The polygon area is the pixel count minus about half a pixel per
    contour (the cut corners), so a planning system's volume from areas agrees too.
    OpenCV's ``findContours`` (what rt-utils uses) runs through the centres of the border pixels
    instead: a polygon through pixel centres cannot give its pixels back under a pixel-centre rule.
    By default only exactly collinear vertices are dropped (the polygon is unchanged);
    ``max_deviation_mm`` allows Douglas-Peucker point reduction and ``smoothing_mm`` a Gaussian
    smoothing, with the result never farther than ``max_deviation_mm`` from the exact contour.

Polygons -> masks (:func:`medseg.export.rasterise.rasterise_polygons`)
    A pixel belongs to the object when its **centre is inside** the polygons under the
    **even-odd rule** over all contours of the slice (holes and several contours, as RTSTRUCT's
    CLOSED_PLANAR and CLOSEDPLANAR_XOR mean), **or lies on a contour** (within 1e-3 pixel): the
    border belongs to the object, as with ``skimage.draw.polygon`` and OpenCV's ``fillPoly``. So
    contours traced through the centres of the border pixels (OpenCV, rt-utils, TotalSegmentator's
    RTSTRUCTs) give those pixels back, and so do holes traced through the centres of the pixels
    around them. medseg's own contours never pass through a pixel centre, so for them the rule
    never has to decide. Self-intersecting polygons are filled by the same rule and counted by
    :func:`count_self_intersections`.

Pixel coordinates are ``(i, j)`` in the array's axis order (``i`` along a row, ``j`` down a
column, :mod:`medseg.volume`); pixel ``(i, j)`` has its centre at ``(i, j)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SliceGeometry", "SliceContour", "mask_contours", "mask_to_contours", "count_self_intersections",
           "polygon_area"]


@dataclass(frozen=True, eq=False)
class SliceGeometry:
    """Where every slice of a series lies in the patient (LPS, mm).

    Parameters
    ----------
    shape : (I, J, K)
        Grid size: ``I`` columns (along ``row_lps``), ``J`` rows, ``K`` slices.
    origins_lps : ndarray, shape (K, 3)
        LPS centre of pixel ``(0, 0)`` of each slice (DICOM ImagePositionPatient, read per slice
        so that contours lie exactly on each slice's own plane).
    row_lps, column_lps : ndarray, shape (3,)
        Unit LPS directions of increasing ``i`` and ``j`` (ImageOrientationPatient).
    spacing_ij : (2,) float
        mm between pixel centres along ``i`` and ``j`` (PixelSpacing reversed).
    sop_instance_uids : tuple of str
        SOPInstanceUID of each slice in ``k`` order ("" where none).
    sop_class_uid : str
        SOPClassUID of the images.
    """

    shape: tuple[int, int, int]
    origins_lps: np.ndarray
    row_lps: np.ndarray
    column_lps: np.ndarray
    spacing_ij: tuple[float, float]
    sop_instance_uids: tuple[str, ...] = ()
    sop_class_uid: str = ""

    @classmethod
    def from_affine(cls, affine_ras: np.ndarray, shape: Sequence[int], **uids) -> SliceGeometry:
        """Slice positions from a RAS affine (exact for a grid without per-slice positions)."""
        from medseg.volume import LPS_TO_RAS

        lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)
        spacing = np.linalg.norm(lps[:3, :2], axis=0)
        k = np.arange(int(shape[2]), dtype=np.float64)
        origins = lps[:3, 3][None, :] + k[:, None] * lps[:3, 2][None, :]
        return cls(tuple(int(s) for s in shape), origins, lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1],
                   (float(spacing[0]), float(spacing[1])), **uids)

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal ``row x column`` (LPS)."""
        n = np.cross(self.row_lps, self.column_lps)
        return n / np.linalg.norm(n)

    @property
    def offsets_mm(self) -> np.ndarray:
        """Position of each slice along the normal, relative to slice 0, shape (K,)."""
        return (self.origins_lps - self.origins_lps[0]) @ self.normal

    def to_patient(self, k: int, points_ij: np.ndarray) -> np.ndarray:
        """Pixel coordinates ``(i, j)`` on slice ``k``, shape (N, 2) -> LPS mm, shape (N, 3)."""
        points = np.asarray(points_ij, dtype=np.float64)
        return (self.origins_lps[k][None, :] + (points[:, :1] * self.spacing_ij[0]) * self.row_lps[None, :]
                + (points[:, 1:2] * self.spacing_ij[1]) * self.column_lps[None, :])

    def to_pixels(self, k: int, points_lps: np.ndarray) -> np.ndarray:
        """LPS mm, shape (N, 3) -> pixel coordinates ``(i, j)`` in the plane of slice ``k``."""
        rel = np.asarray(points_lps, dtype=np.float64) - self.origins_lps[k][None, :]
        return np.stack([rel @ self.row_lps / self.spacing_ij[0], rel @ self.column_lps / self.spacing_ij[1]], axis=1)


@dataclass(frozen=True, eq=False)
class SliceContour:
    """One closed polygon on slice ``k``: vertices ``(i, j)`` in pixel coordinates, not repeated
    at the end; ``hole`` when it bounds a hole of the object (wound the other way)."""

    k: int
    points_ij: np.ndarray
    hole: bool = False


def polygon_area(points: np.ndarray) -> float:
    """Signed area (shoelace) of a closed polygon given without its closing vertex; positive
    for the outer contours :func:`mask_contours` returns, negative for holes."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Remove vertices on the straight line between their neighbours (exact: marching-squares
    vertices are multiples of 0.5, so the cross products are computed without rounding)."""
    before, after = points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    dot = np.einsum("ij,ij->i", before, after)
    keep = (cross != 0) | (dot <= 0)
    return points[keep] if keep.sum() >= 3 else points


def _reduce(points: np.ndarray, spacing: np.ndarray, max_deviation_mm: float, smoothing_mm: float) -> np.ndarray:
    """Smooth and/or thin a closed polygon; no output point or edge is farther than
    ``max_deviation_mm`` from the input polygon (and no input vertex from the output)."""
    from skimage.measure import approximate_polygon

    mm = points * spacing
    budget = max_deviation_mm
    if smoothing_mm > 0:
        from scipy.ndimage import gaussian_filter1d

        step = float(np.mean(np.linalg.norm(np.diff(mm, axis=0, append=mm[:1]), axis=1)))
        smooth = gaussian_filter1d(mm, smoothing_mm / max(step, 1e-9), axis=0, mode="wrap")
        # Each vertex moves at most half the budget: every point of the new polygon is then
        # within that distance of the old one (segments between moved ends stay that close).
        shift = smooth - mm
        length = np.linalg.norm(shift, axis=1, keepdims=True)
        limit = budget / 2.0
        mm = mm + shift * np.minimum(1.0, limit / np.maximum(length, 1e-12))
        budget -= limit
    closed = approximate_polygon(np.vstack([mm, mm[:1]]), tolerance=budget)[:-1]
    return closed / spacing if len(closed) >= 3 else points


def mask_contours(mask: np.ndarray, *, spacing_ij: Sequence[float] = (1.0, 1.0), max_deviation_mm: float = 0.0,
                  smoothing_mm: float = 0.0) -> list[tuple[np.ndarray, bool]]:
    """Closed polygons bounding the True pixels of a 2D mask, holes included.

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J)
    spacing_ij : (2,) float
        Pixel spacing in mm along ``i`` and ``j`` (for the deviation bound only).
    max_deviation_mm : float
        0 (default): exact polygons, only collinear vertices dropped. Otherwise fewer vertices
        (Douglas-Peucker), no point farther than this from the exact polygon.
    smoothing_mm : float
        Gaussian smoothing of the vertices (sigma in mm along the contour); needs a
        ``max_deviation_mm`` budget, which it never exceeds.

    Returns
    -------
    list of (points_ij, hole)
        Vertices (N, 2) in pixel coordinates, not repeated at the end; ``hole`` is True for
        contours bounding a hole.

    Examples
    --------
    >>> ring = np.ones((5, 5), bool); ring[2, 2] = False
    >>> [(len(p), hole) for p, hole in mask_contours(ring)]
    [(8, False), (4, True)]
    >>> from medseg.export.rasterise import rasterise_polygons
    >>> int(rasterise_polygons([p for p, _ in mask_contours(ring)], ring.shape).sum())
    24
    """
    from skimage.measure import find_contours

    if smoothing_mm > 0 and max_deviation_mm <= 0:
        raise ValueError("smoothing_mm needs a max_deviation_mm budget > 0")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    padded = np.pad(mask, 1).astype(np.float32)
    spacing = np.asarray(spacing_ij, dtype=np.float64)
    out = []
    for contour in find_contours(padded, 0.5, fully_connected="high", positive_orientation="high"):
        points = contour[:-1] - 1.0  # closed (the padding): drop the repeated vertex, undo the pad
        hole = polygon_area(points) < 0
        exact = _drop_collinear(points)
        if max_deviation_mm > 0:
            reduced = _reduce(exact if smoothing_mm <= 0 else points, spacing, max_deviation_mm, smoothing_mm)
            # A thinned polygon that crosses itself is no longer a valid boundary: keep the exact one.
            exact = reduced if count_self_intersections(reduced) == 0 else exact
        out.append((exact, hole))
    return out


def mask_to_contours(mask: np.ndarray, *, spacing_ij: Sequence[float] = (1.0, 1.0), max_deviation_mm: float = 0.0,
                     smoothing_mm: float = 0.0) -> list[SliceContour]:
    """:func:`mask_contours` of every slice ``k`` of a 3D mask (I, J, K), cropped to the object."""
    from scipy.ndimage import find_objects

    mask = np.asarray(mask, dtype=bool)
    box = find_objects(mask.view(np.uint8))
    if not box or box[0] is None:
        return []
    bi, bj, bk = box[0]
    out = []
    for k in range(bk.start, bk.stop):
        plane = mask[bi, bj, k]
        if not plane.any():
            continue
        for points, hole in mask_contours(plane, spacing_ij=spacing_ij, max_deviation_mm=max_deviation_mm,
                                          smoothing_mm=smoothing_mm):
            out.append(SliceContour(k, points + np.array([bi.start, bj.start], dtype=np.float64), hole))
    return out


def _orientation(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.sign((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _on_segment(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """c within the bounding box of segment a-b (for collinear points)."""
    return ((np.minimum(a[:, 0], b[:, 0]) <= c[:, 0]) & (c[:, 0] <= np.maximum(a[:, 0], b[:, 0]))
            & (np.minimum(a[:, 1], b[:, 1]) <= c[:, 1]) & (c[:, 1] <= np.maximum(a[:, 1], b[:, 1])))


def count_self_intersections(points: np.ndarray, *, chunk: int = 2_000_000) -> int:
    """Number of pairs of non-adjacent edges of a closed polygon that cross or touch.

    0 for a simple polygon. Sweep-and-prune on the edges' x extents, then exact orientation
    tests on the candidate pairs, so ordinary contours cost about O(N log N).

    Examples
    --------
    >>> count_self_intersections(np.array([[0, 0], [2, 2], [2, 0], [0, 2]], float))  # a bow tie
    1
    """
    p = np.asarray(points, dtype=np.float64)
    if len(p) >= 2 and np.array_equal(p[0], p[-1]):
        p = p[:-1]
    n = len(p)
    if n < 4:
        return 0
    q = np.roll(p, -1, axis=0)
    x_lo, x_hi = np.minimum(p[:, 0], q[:, 0]), np.maximum(p[:, 0], q[:, 0])
    y_lo, y_hi = np.minimum(p[:, 1], q[:, 1]), np.maximum(p[:, 1], q[:, 1])
    order = np.argsort(x_lo, kind="stable")
    ends = np.searchsorted(x_lo[order], x_hi[order], side="right")
    counts = np.maximum(ends - np.arange(1, n + 1), 0)
    found = 0
    offsets = np.cumsum(counts) - counts
    position = 0
    while position < n:
        # Chunks of sweep positions whose candidate pairs fit in memory.
        cum = np.cumsum(counts[position:])
        last = max(position + 1, position + int(np.searchsorted(cum, chunk, side="right")))
        seg = np.arange(position, min(last, n))
        c = counts[seg]
        if c.sum():
            pos_a = np.repeat(seg, c)
            pos_b = pos_a + 1 + (np.arange(int(c.sum())) - np.repeat(offsets[seg] - offsets[seg[0]], c))
            ea, eb = order[pos_a], order[pos_b]
            gap = np.abs(ea - eb)
            keep = (y_lo[ea] <= y_hi[eb]) & (y_lo[eb] <= y_hi[ea]) & (gap != 1) & (gap != n - 1)
            ea, eb = ea[keep], eb[keep]
            a1, a2, b1, b2 = p[ea], q[ea], p[eb], q[eb]
            o1, o2 = _orientation(a1, a2, b1), _orientation(a1, a2, b2)
            o3, o4 = _orientation(b1, b2, a1), _orientation(b1, b2, a2)
            hit = (o1 * o2 < 0) & (o3 * o4 < 0)
            hit |= (o1 == 0) & _on_segment(a1, a2, b1)
            hit |= (o2 == 0) & _on_segment(a1, a2, b2)
            hit |= (o3 == 0) & _on_segment(b1, b2, a1)
            hit |= (o4 == 0) & _on_segment(b1, b2, a2)
            found += int(hit.sum())
        position = int(seg[-1]) + 1
    return found
