"""Surface area, enclosed volume and sphericity of a lesion's marching-cubes mesh (IBSI).

The mesh is the one ``skimage.measure.marching_cubes(mask, 0.5)`` builds on the binary mask,
with its vertices mapped through the affine, so the numbers are exact for any spacing,
rotation or shear of the grid. Instead of building the mesh for every lesion, the meshes of the
256 possible 2x2x2 cube configurations are built once and their area and volume terms looked up
per cube, which gives identical numbers several times faster.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["mesh_area_volume", "cube_codes", "sphericity"]


@functools.lru_cache(maxsize=1)
def _cube_meshes() -> tuple[np.ndarray, np.ndarray]:
    """Triangles of the marching-cubes mesh of each 2x2x2 binary configuration.

    Marching cubes (skimage's Lewiner variant) on a binary mask decides each cube's triangles
    from that cube's 8 values alone, so the mesh of any mask is the union of these 256 cube
    meshes, shifted to each cube's position.

    Returns
    -------
    triangles : ndarray, shape (t, 3, 3)
        Vertex positions in cube-local voxel units.
    code : ndarray, shape (t,)
        The configuration each triangle belongs to.
    """
    from skimage.measure import marching_cubes

    triangles, codes = [], []
    for code in range(1, 255):
        cube = np.zeros((2, 2, 2), np.float32)
        for bit in range(8):
            if code >> bit & 1:
                cube[bit & 1, bit >> 1 & 1, bit >> 2 & 1] = 1.0
        verts, faces, _, _ = marching_cubes(cube, 0.5)
        triangles.append(verts[faces].astype(np.float64))
        codes.append(np.full(len(faces), code))
    return np.concatenate(triangles), np.concatenate(codes)


@functools.lru_cache(maxsize=32)
def _cube_tables(linear_key: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per configuration, for one grid: mesh area, summed face normal and a volume term.

    With the divergence theorem the enclosed volume is ``sum(x . n) / 6`` over triangles; for
    a cube at voxel index ``c`` this splits into ``c . (L^T N_code) + O_code`` with the summed
    normal ``N_code`` and offset ``O_code`` of its configuration (``L`` the affine's linear part).
    """
    linear = np.array(linear_key, dtype=np.float64).reshape(3, 3)
    triangles, code = _cube_meshes()
    tri = triangles @ linear.T
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.bincount(code, weights=0.5 * np.linalg.norm(cross, axis=1), minlength=256)
    normal = np.stack([np.bincount(code, weights=cross[:, a], minlength=256) for a in range(3)], axis=1)
    offset = np.bincount(code, weights=np.einsum("ij,ij->i", tri[:, 0], cross), minlength=256)
    return area, normal @ linear, offset


def cube_codes(crop: np.ndarray) -> np.ndarray:
    """The 8-bit configuration of every 2x2x2 cube of voxels (bit ``di + 2 dj + 4 dk``)."""
    voxels = np.ascontiguousarray(crop, dtype=bool).view(np.uint8)
    shape = tuple(s - 1 for s in voxels.shape)
    codes = np.zeros(shape, np.uint8)
    for bit in range(8):
        di, dj, dk = bit & 1, bit >> 1 & 1, bit >> 2 & 1
        codes |= voxels[di:di + shape[0], dj:dj + shape[1], dk:dk + shape[2]] << bit
    return codes


def mesh_area_volume(crop: np.ndarray, linear: np.ndarray) -> tuple[float, float]:
    """Surface area (mm^2) and enclosed volume (mm^3) of the marching-cubes mesh at level 0.5.

    Identical to ``skimage.measure.marching_cubes(crop, 0.5)`` with the vertices mapped through
    ``linear`` and ``mesh_surface_area``, but computed from a table of the 256 cube
    configurations, which is several times faster. Exact for any spacing, rotation or shear.

    Parameters
    ----------
    crop : ndarray of bool
        The lesion with one empty voxel of padding on every side.
    linear : ndarray, shape (3, 3)
        ``affine[:3, :3]``.
    """
    key = tuple(float(v) for v in np.round(np.asarray(linear, dtype=np.float64).ravel(), 12))
    area, normal, offset = _cube_tables(key)
    codes = cube_codes(crop)
    surface = np.nonzero((codes != 0) & (codes != 255))
    present = codes[surface]
    total_area = float(area[present].sum())
    index = np.stack(surface, axis=1).astype(np.float64)
    volume = abs(float(np.einsum("ij,ij->", index, normal[present]) + offset[present].sum())) / 6.0
    return total_area, volume


def sphericity(area_mm2: float, volume_mm3: float) -> float:
    """IBSI sphericity ``(36 pi V^2)^(1/3) / A``: 1 for a sphere, smaller for other shapes."""
    if area_mm2 <= 0:
        return float("nan")
    return float((36.0 * np.pi * volume_mm3 ** 2) ** (1.0 / 3.0) / area_mm2)
