"""Shape measurements of one lesion in physical units: diameters, surface area, sphericity.

Every measurement maps voxel positions through the volume's affine, so it is right for any
spacing and any direction (oblique, flipped, permuted axes; sheared grids too, except where
stated). Definitions are in ``docs/lesions.md``; in short:

* **Boundary points** are the midpoints between each lesion voxel and each face-neighbour that
  is not lesion. They are exactly the vertices that marching cubes/squares puts on a binary
  mask at level 0.5, i.e. the boundary that IBSI and pyradiomics use for diameters.
* **Longest 3D diameter**: the largest distance between two 3D boundary points.
* **Axial long axis** (RECIST 1.1): the largest distance between two in-plane boundary points
  of one cross-section (an 8-connected piece of the lesion on one slice), over all slices
  perpendicular to the *slice axis* (the array axis closest to the patient's superior-inferior
  axis). **Short axis**: the longest chord of that cross-section's outline perpendicular to
  the long axis.
* **Surface area** and **mesh volume**: of the marching-cubes mesh at level 0.5 (IBSI), in
  :mod:`medseg.lesions.mesh`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.lesions.outline import outline_segments, perpendicular_chord

__all__ = [
    "slice_axis",
    "boundary_points",
    "boundary_faces",
    "lattice_extremes",
    "farthest_pair",
    "AxialDiameters",
    "axial_diameters",
    "outline_segments",
]


def slice_axis(affine: np.ndarray) -> int:
    """The array axis (0, 1 or 2) whose direction is closest to the world S-I (z) axis.

    Slices perpendicular to it are the acquired slices closest to the axial plane: ``k`` for
    an axial series, ``j`` or ``i`` for a sagittal or coronal one (measured on reformatted
    axial planes). Ties (a 45 degree oblique) go to the later axis, i.e. ``k`` first.
    """
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    cosines = np.abs(linear[2] / np.linalg.norm(linear, axis=0))
    return int(np.argmax(cosines + np.array([0.0, 1e-9, 2e-9])))


def boundary_faces(crop: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per axis: midpoints between lesion voxels and non-lesion face-neighbours along that axis,
    and the lesion voxel each belongs to (both in the crop's index coordinates).

    Parameters
    ----------
    crop : ndarray of bool, shape (a, b, c)
        The lesion with at least one empty voxel on every side.

    Returns
    -------
    list of 3 (points (m, 3) float64, inside (m, 3) int64)
    """
    faces = []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        index = np.argwhere(crop[tuple(lo)] != crop[tuple(hi)])
        points = index.astype(np.float64)
        points[:, axis] += 0.5
        # The lesion voxel is the lower one where the crop is set there, else the upper one.
        index[:, axis] += ~crop[index[:, 0], index[:, 1], index[:, 2]]
        faces.append((points, index))
    return faces


def boundary_points(crop: np.ndarray, axes: tuple[int, ...] = (0, 1, 2), *, faces=None) -> np.ndarray:
    """Midpoints between lesion voxels and their non-lesion face-neighbours along ``axes``.

    ``axes=(0, 1, 2)`` gives the 3D boundary (the marching-cubes vertices), two in-plane axes
    the outline of each slice (the marching-squares vertices). Shape (m, 3), crop index
    coordinates. ``faces`` reuses a :func:`boundary_faces` result.
    """
    faces = boundary_faces(crop) if faces is None else faces
    return np.concatenate([faces[a][0] for a in axes])


def lattice_extremes(points: np.ndarray) -> np.ndarray:
    """Mask of the points that are first or last on every axis-parallel line through them.

    A point between two others on one line is inside their segment, so it cannot be a
    convex-hull vertex (nor one end of a diameter). The property survives any affine map, so
    boundary points filtered in voxel index space stay a superset of the hull vertices in mm;
    for a round lesion it keeps a small fraction of the points.

    Parameters
    ----------
    points : ndarray, shape (m, d)
        Positions on a half-voxel lattice (voxel index coordinates).
    """
    grid = np.round(np.asarray(points) * 2).astype(np.int64)
    keep = np.ones(len(grid), bool)
    span = grid.max(axis=0) - grid.min(axis=0) + 1 if len(grid) else np.ones(grid.shape[1], np.int64)
    shifted = grid - grid.min(axis=0) if len(grid) else grid
    for axis in range(grid.shape[1]):
        line = np.zeros(len(grid), np.int64)
        for other in range(grid.shape[1]):
            if other != axis:
                line = line * span[other] + shifted[:, other]
        order = np.lexsort((grid[:, axis], line))
        sorted_line = line[order]
        first = np.r_[True, sorted_line[1:] != sorted_line[:-1]]
        last = np.r_[sorted_line[1:] != sorted_line[:-1], True]
        extreme = np.zeros(len(grid), bool)
        extreme[order[first | last]] = True
        keep &= extreme
    return keep


def _directions(dim: int) -> np.ndarray:
    """Unit vectors along the axes, face diagonals and (3D) space diagonals."""
    grid = np.array(np.meshgrid(*[[-1, 0, 1]] * dim, indexing="ij")).reshape(dim, -1).T
    grid = grid[[tuple(v) > tuple(-v) for v in grid]]  # one of each +-pair, no zero vector
    return grid / np.linalg.norm(grid, axis=1, keepdims=True)


_DIRECTIONS = {2: _directions(2), 3: _directions(3)}
#: 8 in-plane directions 22.5 degrees apart, for diameter bounds of each slice.
_PLANE_DIRECTIONS = np.stack([np.cos(np.arange(8) * np.pi / 8), np.sin(np.arange(8) * np.pi / 8)], axis=1)


def farthest_pair(points: np.ndarray) -> tuple[float, int, int]:
    """The largest distance between two of ``points`` and their indices (exact).

    A lower bound comes from the extreme points along 13 (3D) or 4 (2D) directions. A pair
    can only beat it if both points lie at least ``bound - R`` from the centre of the bounding
    box (``R`` = largest distance from that centre), which leaves a thin shell of points; of
    those only convex-hull vertices can be farthest apart. The last search is pairwise, in
    blocks of bounded memory.

    Parameters
    ----------
    points : ndarray, shape (m, d), m >= 1

    Returns
    -------
    distance : float
    i, j : int
        Indices into ``points`` of the two points.
    """
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import cdist

    points = np.asarray(points, dtype=np.float64)
    if len(points) <= 64:
        d2 = cdist(points, points, "sqeuclidean")
        i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
        return float(np.sqrt(d2[i, j])), int(i), int(j)
    projections = points @ _DIRECTIONS[points.shape[1]].T
    ends = np.unique(np.r_[projections.argmin(axis=0), projections.argmax(axis=0)])
    d2 = cdist(points[ends], points[ends], "sqeuclidean")
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    best, pair = float(d2[i, j]), (int(ends[i]), int(ends[j]))
    centre = (points.min(axis=0) + points.max(axis=0)) / 2.0
    radius = np.linalg.norm(points - centre, axis=1)
    candidates = np.flatnonzero(radius >= np.sqrt(best) - radius.max() - 1e-9)
    if len(candidates) > 256:
        try:
            candidates = candidates[ConvexHull(points[candidates]).vertices]
        except QhullError:  # flat or collinear points: a joggled hull still returns input points
            candidates = candidates[ConvexHull(points[candidates], qhull_options="QJ").vertices]
    for start in range(0, len(candidates), 512):
        block = candidates[start:start + 512]
        d2 = cdist(points[block], points[candidates], "sqeuclidean")
        i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
        if d2[i, j] > best:
            best, pair = float(d2[i, j]), (int(block[i]), int(candidates[j]))
    return float(np.sqrt(best)), pair[0], pair[1]


@dataclass(frozen=True)
class AxialDiameters:
    """RECIST-style in-plane measurements of one lesion.

    Attributes
    ----------
    long_mm, short_mm : float
        Longest in-plane diameter and longest perpendicular chord, mm.
    slice_index : int
        Index along the slice axis (in the full volume) of the slice they were measured on.
    long_axis, short_axis : ndarray, shape (2, 3)
        End points of the two lines in RAS mm.
    """

    long_mm: float
    short_mm: float
    slice_index: int
    long_axis: np.ndarray
    short_axis: np.ndarray


def _to_world(points: np.ndarray, start: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return (points + start) @ affine[:3, :3].T + affine[:3, 3]


def axial_diameters(crop: np.ndarray, start: np.ndarray, affine: np.ndarray, axis: int, *,
                    faces=None) -> AxialDiameters:
    """Longest in-plane diameter over slices perpendicular to ``axis``, and its short axis.

    Parameters
    ----------
    crop : ndarray of bool
        The lesion with one empty voxel of padding on every side.
    start : ndarray, shape (3,)
        Full-volume index of ``crop[0, 0, 0]``.
    affine : ndarray, shape (4, 4)
        The volume's RAS affine.
    axis : int
        Slice axis (see :func:`slice_axis`).
    faces : list, optional
        :func:`boundary_faces` of ``crop`` when the caller already has it.
    """
    from scipy import ndimage

    in_plane = tuple(a for a in range(3) if a != axis)
    # Each in-plane piece (8-connected within its slice) is measured on its own: a reader
    # measures the cross-section they see, not a line between two islands of one 3D lesion.
    structure = np.zeros((3, 3, 3), bool)
    middle = [slice(None)] * 3
    middle[axis] = 1
    structure[tuple(middle)] = True
    pieces, _ = ndimage.label(crop, structure)
    faces = boundary_faces(crop) if faces is None else faces
    local = np.concatenate([faces[a][0] for a in in_plane])
    inside = np.concatenate([faces[a][1] for a in in_plane])
    piece = pieces[inside[:, 0], inside[:, 1], inside[:, 2]]
    order = np.argsort(piece, kind="stable")
    piece, local = piece[order], local[order]
    world = _to_world(local, start, affine)
    # Exact in-plane 2D coordinates: an orthonormal basis of the slice plane.
    linear = affine[:3, :3]
    e1 = linear[:, in_plane[0]] / np.linalg.norm(linear[:, in_plane[0]])
    e2 = linear[:, in_plane[1]] - (linear[:, in_plane[1]] @ e1) * e1
    e2 /= np.linalg.norm(e2)
    plane = world @ np.stack([e1, e2], axis=1)
    first = np.flatnonzero(np.r_[True, piece[1:] != piece[:-1]])
    bounds = np.r_[first, len(piece)]
    # Widths along 8 directions bound each piece's diameter: max width <= D <= max width /
    # cos(11.25 deg). Pieces are searched by decreasing upper bound until none can beat the
    # best found, so most slices of a lesion are never searched pairwise.
    projected = plane @ _PLANE_DIRECTIONS.T
    widths = np.maximum.reduceat(projected, first) - np.minimum.reduceat(projected, first)
    upper = widths.max(axis=1) / np.cos(np.pi / (2 * len(_PLANE_DIRECTIONS)))
    centre = float(np.mean(np.argwhere(crop)[:, axis]))
    best = (-1.0, 0.0)
    tied: list[tuple[int, int, int]] = []  # (label, i, j) of every longest diameter on the best slice(s)
    for s in np.argsort(-upper, kind="stable"):
        if upper[s] < best[0] - _TIE_MM:
            break
        d, i, j = farthest_pair(plane[bounds[s]:bounds[s + 1]])
        closer = -abs(local[bounds[s], axis] - centre)
        if d > best[0] + _TIE_MM or (abs(d - best[0]) <= _TIE_MM and closer > best[1] + 1e-9):
            best, tied = (d, closer), []
        if abs(d - best[0]) <= _TIE_MM and abs(closer - best[1]) <= 1e-9:
            pairs = _tied_pairs(plane[bounds[s]:bounds[s + 1]], d)
            tied += [(int(piece[bounds[s]]), bounds[s] + a, bounds[s] + b) for a, b in pairs]
    # Lattices tie: a sphere of voxels has several longest diameters of the same length. Which one
    # is taken must not depend on how the volume is stored (the short axis changes with it), so
    # ties are settled in world terms: the longest short axis, then the world position of the
    # endpoints (a RECIST reader would also take the larger perpendicular of equal long axes).
    choices = []
    for label, i, j in tied[:_MAX_TIES]:
        p, q = sorted((world[i], world[j]), key=tuple)
        index = int(round(local[i, axis]))
        short_mm, short_axis = perpendicular_chord(pieces == label, start, affine, axis, index, p, q)
        key = (-round(short_mm / _TIE_MM), tuple(np.round(np.r_[p, q] / _TIE_MM)))
        choices.append((key, short_mm, index, np.stack([p, q]), _ordered_ends(short_axis)))
    _, short_mm, index, long_axis, short_axis = min(choices, key=lambda c: c[0])
    return AxialDiameters(float(best[0]), short_mm, int(index + start[axis]), long_axis, short_axis)


#: Diameters equal within this (mm) are the same length (lattice ties, float rounding).
_TIE_MM = 1e-6
#: At most this many tied longest diameters are compared (their short axes are measured each).
_MAX_TIES = 48


def _ordered_ends(ends: np.ndarray) -> np.ndarray:
    """A segment's two end points in world order (so the same line is written the same way)."""
    return np.stack(sorted(ends, key=lambda e: tuple(np.round(e / _TIE_MM))))


def _tied_pairs(points: np.ndarray, d: float) -> list[tuple[int, int]]:
    """Every pair of ``points`` (indices) at distance ``d`` within :data:`_TIE_MM`.

    Only points at least ``d - R`` from the bounding-box centre (``R`` the largest distance from
    it) can be an end, and only convex-hull vertices can be farthest apart, as in
    :func:`farthest_pair`.
    """
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import cdist

    points = np.asarray(points, dtype=np.float64)
    idx = np.arange(len(points))
    if len(points) > 64:
        centre = (points.min(axis=0) + points.max(axis=0)) / 2.0
        radius = np.linalg.norm(points - centre, axis=1)
        idx = np.flatnonzero(radius >= d - radius.max() - 1e-9)
        if len(idx) > 256:
            try:
                idx = idx[ConvexHull(points[idx]).vertices]
            except QhullError:
                idx = idx[ConvexHull(points[idx], qhull_options="QJ").vertices]
    found = []
    for start in range(0, len(idx), 512):
        block = idx[start:start + 512]
        dist = cdist(points[block], points[idx])
        a, b = np.nonzero(np.abs(dist - d) <= _TIE_MM)
        found += [(int(block[x]), int(idx[y])) for x, y in zip(a, b) if block[x] < idx[y]]
    return found
