"""The outline of a lesion's cross-section (marching squares) and chords across it, in mm.

Used by :func:`medseg.lesions.shape.axial_diameters` for the RECIST short axis and by the report
montage to draw outlines (one definition of the boundary for measuring and drawing).
"""

from __future__ import annotations

import numpy as np

__all__ = ["outline_segments", "perpendicular_chord"]


def _to_world(points: np.ndarray, start: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return (points + start) @ affine[:3, :3].T + affine[:3, 3]


# Marching squares on a binary image, cell corners (0,0), (1,0), (0,1), (1,1) as bits 0..3 and
# edge midpoints 0: (0.5, 0), 1: (1, 0.5), 2: (0.5, 1), 3: (0, 0.5). Saddles (codes 6 and 9)
# keep the two lesion pixels connected, as the 8-connected cross-sections are.
_EDGE_POINTS = np.array([[0.5, 0.0], [1.0, 0.5], [0.5, 1.0], [0.0, 0.5]])
_SQUARE_SEGMENTS = {
    1: [(0, 3)], 2: [(0, 1)], 3: [(3, 1)], 4: [(3, 2)], 5: [(0, 2)], 6: [(0, 3), (1, 2)], 7: [(1, 2)],
    8: [(1, 2)], 9: [(0, 1), (3, 2)], 10: [(0, 2)], 11: [(3, 2)], 12: [(3, 1)], 13: [(0, 1)], 14: [(0, 3)],
}
_SEGMENT_COUNT = np.array([len(_SQUARE_SEGMENTS.get(c, [])) for c in range(16)])
_SEGMENT_EDGES = np.zeros((16, 2, 2), np.int64)
for _code, _pairs in _SQUARE_SEGMENTS.items():
    _SEGMENT_EDGES[_code, :len(_pairs)] = _pairs


def outline_segments(plane: np.ndarray) -> np.ndarray:
    """The marching-squares outline at level 0.5 of a binary slice, as unordered segments.

    Parameters
    ----------
    plane : ndarray of bool, shape (b, c)
        With at least one empty pixel on every side.

    Returns
    -------
    ndarray, shape (E, 2, 2)
        End points of each segment in pixel index coordinates. The segments form closed
        curves whose vertices are the in-plane boundary points.
    """
    px = plane.astype(np.uint8)
    codes = px[:-1, :-1] | px[1:, :-1] << 1 | px[:-1, 1:] << 2 | px[1:, 1:] << 3
    cells = np.argwhere((codes != 0) & (codes != 15))
    code = codes[cells[:, 0], cells[:, 1]]
    parts = []
    for k in range(2):  # first segment of every cell, then the second of the saddle cells
        has = _SEGMENT_COUNT[code] > k
        origin = cells[has].astype(np.float64)
        a, b = _SEGMENT_EDGES[code[has], k, 0], _SEGMENT_EDGES[code[has], k, 1]
        parts.append(np.stack([origin + _EDGE_POINTS[a], origin + _EDGE_POINTS[b]], axis=1))
    return np.concatenate(parts)


def perpendicular_chord(crop, start, affine, axis, index, p, q) -> tuple[float, np.ndarray]:
    """Longest chord of the slice outline perpendicular to the segment ``p``-``q`` (RAS mm).

    The outline is the marching-squares contour at level 0.5 (its vertices are the in-plane
    boundary points; see :func:`outline_segments`). A line perpendicular to the long axis at
    position ``t`` along it meets the outline an even number of times; the segments between
    crossings 1-2, 3-4, ... lie inside the lesion. Their length changes linearly between the
    positions of outline vertices, so the longest one is found at a vertex position.
    """
    in_plane = [a for a in range(3) if a != axis]
    index_slice = [slice(None)] * 3
    index_slice[axis] = index
    segments = outline_segments(crop[tuple(index_slice)])  # (E, 2, 2) in (b, c) pixel units
    local = np.zeros((len(segments), 2, 3))
    local[..., in_plane[0]] = segments[..., 0]
    local[..., in_plane[1]] = segments[..., 1]
    local[..., axis] = index
    world = _to_world(local.reshape(-1, 3), start, affine) - p
    linear = affine[:3, :3]
    u = (q - p) / max(np.linalg.norm(q - p), 1e-12)
    normal = np.cross(linear[:, in_plane[0]], linear[:, in_plane[1]])
    normal = -normal if normal[np.argmax(np.abs(normal))] < 0 else normal  # world-fixed, not storage-fixed
    v = np.cross(normal, u)
    v /= np.linalg.norm(v)
    edges = np.stack([world @ u, world @ v], axis=1).reshape(-1, 4)  # (E, 4): t0, s0, t1, s1
    t0, s0, t1, s1 = edges.T
    keep = t0 != t1
    t0, s0, t1, s1 = t0[keep], s0[keep], t1[keep], s1[keep]
    lo, hi = np.minimum(t0, t1), np.maximum(t0, t1)
    best_len, best_seg = 0.0, (0.0, 0.0, 0.0)
    positions = np.unique(np.r_[t0, t1])
    for block in range(0, len(positions), 512):
        tau = positions[block:block + 512, None]
        crosses = (lo <= tau) & (tau < hi)
        s_at = np.where(crosses, s0 + (tau - t0) * (s1 - s0) / (t1 - t0), np.inf)
        s_at.sort(axis=1)
        count = crosses.sum(axis=1)
        width = s_at.shape[1] - s_at.shape[1] % 2
        if width == 0:
            continue
        pairs = s_at[:, :width].reshape(len(tau), -1, 2)
        with np.errstate(invalid="ignore"):  # inf - inf where a line has fewer crossings
            lengths = pairs[:, :, 1] - pairs[:, :, 0]
        valid = np.arange(pairs.shape[1])[None, :] < (count[:, None] // 2)
        lengths = np.where(valid, lengths, -1.0)
        row, col = np.unravel_index(int(np.argmax(lengths)), lengths.shape)
        if lengths[row, col] > best_len:
            best_len = float(lengths[row, col])
            best_seg = (float(tau[row, 0]), float(pairs[row, col, 0]), float(pairs[row, col, 1]))
    t, sa, sb = best_seg
    ends = np.stack([p + t * u + sa * v, p + t * u + sb * v])
    return best_len, ends
