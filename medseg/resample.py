"""Label maps from one voxel grid onto another (nearest neighbour): the one resampler between
user grids, used by evaluation (`--resample`), the napari reader and the exporters."""

from __future__ import annotations

import numpy as np

from medseg.volume import Volume

__all__ = ["resample_labels", "is_sheared"]


def resample_labels(moving: Volume, target: Volume) -> Volume:
    """``moving`` (a label map) resampled onto ``target``'s grid by nearest neighbour.

    Each target voxel centre is mapped through both affines into ``moving``'s voxel space and
    takes the label of the nearest voxel there (0 outside). Grids that differ only by axis
    order or flips map exactly, voxel for voxel.

    Returns
    -------
    Volume
        Shape and affine of ``target``, dtype of ``moving``.
    """
    from scipy import ndimage

    target_to_moving = np.linalg.inv(moving.affine) @ target.affine
    linear, offset = target_to_moving[:3, :3], target_to_moving[:3, 3]
    permutation = np.abs(np.round(linear))
    if np.allclose(linear, np.round(linear), atol=1e-6) and np.allclose(permutation.sum(0), 1) \
            and np.allclose(permutation.sum(1), 1) and np.allclose(offset, np.round(offset), atol=1e-6):
        # Axis permutations and flips with whole-voxel shifts: exact index arithmetic.
        index = np.indices(target.shape).reshape(3, -1)
        source = (np.round(linear) @ index + np.round(offset)[:, None]).astype(np.int64)
        inside = np.all((source >= 0) & (source < np.array(moving.shape)[:, None]), axis=0)
        out = np.zeros(int(np.prod(target.shape)), dtype=moving.array.dtype)
        out[inside] = moving.array[tuple(source[:, inside])]
        array = out.reshape(target.shape)
    else:
        array = ndimage.affine_transform(moving.array, linear, offset=offset, output_shape=target.shape,
                                         order=0, mode="constant", cval=0, prefilter=False)
    return Volume(array, target.affine, moving.modality, moving.source, moving.label_set)


def is_sheared(affine: np.ndarray, *, tolerance: float = 1e-3) -> bool:
    """True when the grid axes are not perpendicular (e.g. CT with gantry tilt)."""
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = linear / np.linalg.norm(linear, axis=0)
    gram = unit.T @ unit
    return bool(np.max(np.abs(gram - np.eye(3))) > tolerance)
