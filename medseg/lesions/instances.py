"""Lesion instances: connected components, splitting of touching lesions, dust, stable ids.

The pipeline (:func:`find_instances`):

1. the lesion mask is taken from a binary mask, a label of a semantic map or a thresholded
   probability map (:func:`medseg.lesions.masks.lesion_mask`);
2. connected components with cc3d (26-connectivity by default; 6 or 18 on request);
3. components smaller than ``min_volume_mm3`` are removed ("dust");
4. optionally, touching lesions are split: the spacing-aware Euclidean distance to the
   background (mm) has one maximum per blob; h-maxima keep the maxima that stand at least
   ``split_h_mm`` above the saddle joining them to a higher one, and a watershed of the
   negated distance from those markers divides the component. Parts smaller than
   ``min_volume_mm3`` are merged back into their neighbour (their marker is dropped), so
   splitting never loses voxels;
5. ids 1..n are given by a stated rule: ``order="volume"`` (largest first) or
   ``order="position"`` (superior to inferior); ties are broken by world position
   (superior, then anterior, then right first), so ids do not depend on how the file stores
   its axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from medseg.errors import InputError, option
from medseg.lesions._voxels import VoxelGroups, crop_mask, group_voxels
from medseg.lesions.masks import lesion_mask, require_integer_labels, volume_name
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.volume import Volume

__all__ = ["LesionInstances", "find_instances", "instances_from_map", "split_component", "CONNECTIVITIES"]

#: 3D connectivities cc3d and the watershed understand: faces, +edges, +corners.
CONNECTIVITIES = (6, 18, 26)
_SKIMAGE_CONNECTIVITY = {6: 1, 18: 2, 26: 3}
Order = Literal["volume", "position"]


@dataclass(frozen=True, eq=False)
class LesionInstances:
    """Separated lesions: an instance map plus the voxel list of each lesion.

    Attributes
    ----------
    labels : Volume
        Instance map on the input's grid: 0 = background, lesion ``n`` has value ``n``. Its
        array is cc3d's output (uint16 or uint32 as cc3d chose), reused to save a full-size
        allocation.
    voxels : VoxelGroups
        Voxel indices of each lesion; group ``g`` is the lesion with id ``ids[g]``.
    connectivity : int
        6, 18 or 26 (0 when the ids were read from an existing instance map).
    min_volume_mm3 : float
        Components smaller than this were removed.
    split_h_mm : float or None
        h of the h-maxima split (None: touching lesions were not split).
    order : str
        How ids were assigned: "volume", "position" or "kept" (from an instance map).
    n_components : int
        Connected components before dust removal and splitting.
    n_dust : int
        Components removed as dust; ``dust_volume_ml`` is their total volume.
    n_split : int
        Components that were split into several lesions.
    description : str
        What the mask was taken from, for reports ("label 2 of seg.nii.gz").
    """

    labels: Volume
    voxels: VoxelGroups
    connectivity: int
    min_volume_mm3: float
    split_h_mm: float | None
    order: str
    n_components: int
    n_dust: int
    dust_volume_ml: float
    n_split: int
    description: str = ""

    def __len__(self) -> int:
        return len(self.voxels)

    @property
    def ids(self) -> np.ndarray:
        """Lesion ids, shape (n,), in table order."""
        return self.voxels.values

    @property
    def voxel_counts(self) -> np.ndarray:
        return self.voxels.counts

    @property
    def volumes_ml(self) -> np.ndarray:
        """Volume of each lesion in mL, shape (n,)."""
        return self.voxels.counts * self.labels.voxel_volume_ml

    def settings(self) -> dict:
        """The parameters that produced these instances (JSON-ready)."""
        return {
            "source": self.description,
            "connectivity": self.connectivity,
            "min_volume_mm3": self.min_volume_mm3,
            "split_h_mm": self.split_h_mm,
            "order": self.order,
            "n_components": self.n_components,
            "n_dust_removed": self.n_dust,
            "dust_volume_ml": self.dust_volume_ml,
            "n_components_split": self.n_split,
        }


def _check_connectivity(connectivity: int) -> int:
    if connectivity not in CONNECTIVITIES:
        raise InputError("connectivity", f"{connectivity!r} is not a 3D connectivity",
                         "use 6 (faces), 18 (faces and edges) or 26 (faces, edges and corners)")
    return int(connectivity)


def split_component(ijk: np.ndarray, spacing_mm: np.ndarray, *, h_mm: float, connectivity: int = 26,
                    min_voxels: int = 1) -> list[np.ndarray]:
    """Split one connected component at its necks (distance transform, h-maxima, watershed).

    Parameters
    ----------
    ijk : ndarray, shape (m, 3)
        Voxel indices of the component.
    spacing_mm : (3,) mm along i, j, k.
    h_mm : float
        A part becomes a separate lesion when its inscribed radius exceeds the radius of the
        neck joining it to a larger part by more than ``h_mm`` (to within about a voxel).
        Smaller values split more eagerly.
    connectivity : int
        The connectivity the component was found with; the watershed floods with the same.
    min_voxels : int
        Parts with fewer voxels are merged into their neighbour instead of standing alone.

    Returns
    -------
    list of ndarray
        One ``(m_p, 3)`` index array per part (a single element when nothing is split).
    """
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    if len(ijk) < 2 * max(1, min_voxels):
        return [ijk]
    crop, start = crop_mask(ijk)
    distance = ndimage.distance_transform_edt(crop, sampling=np.asarray(spacing_mm, dtype=np.float64))
    full = np.ones((3, 3, 3), bool)
    # Connected sets of voxels not lower than any neighbour are exactly the regional maxima; with
    # one of them there is nothing to split, and the costly h-maxima transform is skipped.
    _, n_regional = ndimage.label((ndimage.maximum_filter(distance, footprint=full) == distance) & crop, full)
    if n_regional <= 1:
        return [ijk]
    peaks = h_maxima(distance, float(h_mm)).astype(bool) & crop
    markers, n_markers = ndimage.label(peaks, structure=full)
    if n_markers <= 1:
        return [ijk]
    local = ijk - start
    while True:
        basins = watershed(-distance, markers, mask=crop, connectivity=_SKIMAGE_CONNECTIVITY[connectivity])
        part_of = basins[local[:, 0], local[:, 1], local[:, 2]]
        sizes = np.bincount(part_of, minlength=markers.max() + 1)
        present = np.flatnonzero(sizes[1:]) + 1
        small = present[sizes[present] < min_voxels]
        if len(present) <= 1:
            return [ijk]
        if small.size == 0:
            return [ijk[part_of == p] for p in present]
        # Drop the smallest part's marker; the next watershed gives its voxels to a neighbour.
        markers[markers == small[np.argmin(sizes[small])]] = 0


def _centroids_world(groups: VoxelGroups, affine: np.ndarray) -> np.ndarray:
    if len(groups) == 0:
        return np.zeros((0, 3))
    sums = np.add.reduceat(groups.ijk.astype(np.float64), groups.offsets[:-1], axis=0)
    mean_ijk = sums / groups.counts[:, None]
    return mean_ijk @ affine[:3, :3].T + affine[:3, 3]


def _ordered(groups: VoxelGroups, affine: np.ndarray, order: str) -> np.ndarray:
    """Permutation of groups that gives ids by ``order`` (world-position tie-breaks)."""
    xyz = _centroids_world(groups, affine)
    counts = groups.counts
    # np.lexsort sorts by the last key first.
    if order == "volume":
        return np.lexsort((-xyz[:, 0], -xyz[:, 1], -xyz[:, 2], -counts))
    if order == "position":
        return np.lexsort((-counts, -xyz[:, 0], -xyz[:, 1], -xyz[:, 2]))
    raise InputError(option("order", order), "is not an id order", "use 'volume' or 'position'")


def _instance_map(components: np.ndarray, removed: np.ndarray, groups: VoxelGroups) -> np.ndarray:
    """Write the final ids into cc3d's output array (already allocated and touched).

    Only lesion voxels are written: ``removed`` (dust) voxels become 0, every group its id.
    A new array is made only when the ids no longer fit cc3d's dtype.
    """
    out = components
    if len(groups) > np.iinfo(out.dtype).max:
        out = np.zeros(out.shape, np.uint32)
    elif len(removed):
        out[removed[:, 0], removed[:, 1], removed[:, 2]] = 0
    if len(groups):
        ids = np.repeat(groups.values.astype(out.dtype), groups.counts)
        out[groups.ijk[:, 0], groups.ijk[:, 1], groups.ijk[:, 2]] = ids
    return out


def _describe(volume: Volume, label, threshold) -> str:
    name = volume_name(volume, "in-memory map")
    if threshold is not None:
        return f"probability >= {threshold:g} in {name}"
    if label is not None:
        return f"label {label} of {name}"
    return f"non-zero voxels of {name}"


def find_instances(
    volume: Volume,
    *,
    label: int | None = None,
    threshold: float | None = None,
    allow_absent_label: bool = False,
    any_nonzero: bool = False,
    connectivity: int = 26,
    min_volume_mm3: float = 0.0,
    split_h_mm: float | None = None,
    order: Order = "volume",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> LesionInstances:
    """Separate the lesions of a mask, label map or probability map into numbered instances.

    Parameters
    ----------
    volume : Volume
        Binary mask, semantic label map (give ``label``) or probability map (give
        ``threshold``); see :func:`medseg.lesions.masks.lesion_mask`.
    label, threshold, allow_absent_label, any_nonzero
        Which voxels are lesion.
    connectivity : {6, 18, 26}
        Voxels touching by a face (6), also an edge (18), also a corner (26) are connected.
    min_volume_mm3 : float
        Components smaller than this (mm^3) are removed as dust; 0 keeps single voxels.
    split_h_mm : float, optional
        Split touching lesions (see :func:`split_component`); None (default) keeps every
        connected component whole. Typical values: 1-3 mm.
    order : {"volume", "position"}
        Id rule: largest volume first, or superior to inferior by centroid.
    progress, cancel
        See :mod:`medseg.progress`.

    Returns
    -------
    LesionInstances
        An empty result (zero lesions) for an empty mask.

    Examples
    --------
    >>> import numpy as np
    >>> from medseg import Volume
    >>> mask = np.zeros((20, 20, 10), np.uint8); mask[2:5, 2:5, 2:4] = 1; mask[10:16, 10:16, 3:8] = 1
    >>> found = find_instances(Volume(mask, np.diag([0.8, 0.8, 2.5, 1.0])))
    >>> len(found), found.voxel_counts.tolist()
    (2, [180, 18])
    """
    connectivity = _check_connectivity(connectivity)
    if not np.isfinite(min_volume_mm3) or min_volume_mm3 < 0:
        raise InputError(option("min_volume_mm3", min_volume_mm3), "is not a volume in mm^3", "give a number >= 0")
    if split_h_mm is not None and (not np.isfinite(split_h_mm) or split_h_mm <= 0):
        raise InputError(option("split_h_mm", split_h_mm), "must be > 0 mm", "typical values are 1-3 mm")
    if order not in ("volume", "position"):
        raise InputError(option("order", order), "is not an id order", "use 'volume' or 'position'")
    import cc3d

    where = volume_name(volume, "lesion map")
    report(progress, 0, 3, "lesions: mask")
    mask = lesion_mask(volume, label=label, threshold=threshold, allow_absent_label=allow_absent_label,
                       any_nonzero=any_nonzero)
    check_cancel(cancel, where)
    report(progress, 1, 3, "lesions: connected components")
    components, n_components = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    check_cancel(cancel, where)
    groups = group_voxels(components, foreground=mask)
    voxel_mm3 = volume.voxel_volume_ml * 1000.0
    keep = groups.counts * voxel_mm3 >= min_volume_mm3
    n_dust = int(np.count_nonzero(~keep))
    dust_ml = float(groups.counts[~keep].sum() * volume.voxel_volume_ml)
    parts = [groups.voxels(g) for g in np.flatnonzero(keep)]
    n_split = 0
    if split_h_mm is not None and parts:
        min_voxels = max(1, int(np.ceil(min_volume_mm3 / voxel_mm3 - 1e-9)))
        split_parts: list[np.ndarray] = []
        for done, ijk in enumerate(parts):
            check_cancel(cancel, where)
            report(progress, done, len(parts), "lesions: splitting touching lesions")
            pieces = split_component(ijk, volume.spacing, h_mm=split_h_mm, connectivity=connectivity,
                                     min_voxels=min_voxels)
            n_split += len(pieces) > 1
            split_parts.extend(pieces)
        parts = split_parts
    report(progress, 2, 3, "lesions: numbering")
    unordered = VoxelGroups.from_parts(volume.shape, parts)
    permutation = _ordered(unordered, volume.affine, order)
    final = VoxelGroups.from_parts(volume.shape, [unordered.voxels(g) for g in permutation])
    dust = np.concatenate([groups.voxels(g) for g in np.flatnonzero(~keep)] or [np.zeros((0, 3), np.int64)])
    labels = Volume(_instance_map(components, dust, final), volume.affine, volume.modality,
                    volume.source.replace(path=""))
    report(progress, 3, 3, "lesions: done")
    return LesionInstances(labels, final, connectivity, float(min_volume_mm3), split_h_mm, order,
                           int(n_components), n_dust, dust_ml, n_split, _describe(volume, label, threshold))


def instances_from_map(volume: Volume) -> LesionInstances:
    """Read an existing instance map (e.g. corrected in napari): each non-zero value is one lesion.

    Ids are kept as they are (no renumbering, no merging of touching lesions), so a table made
    from a corrected map refers to the ids the person saw.

    Raises
    ------
    InputError
        For fractional or negative values.
    """
    where = volume_name(volume, "instance map")
    require_integer_labels(volume.array, where)
    array = volume.array
    if array.dtype.kind == "f":
        array = array.astype(np.int64)
    groups = group_voxels(array)
    return LesionInstances(volume, groups, 0, 0.0, None, "kept", len(groups), 0, 0.0, 0,
                           f"instance map {where}")
