"""One row of the lesion table, recomputed from a small box after an edit.

:func:`medseg.lesions.lesion_table` measures every lesion of a map; a reviewer who paints one
lesion needs that lesion's row again in milliseconds, not the whole table. :func:`measure_lesion`
crops the instance map (and image and organ map) to the lesion's box plus a margin, measures it
there with the same ``lesion_table`` code, and moves the voxel-index fields back to the full grid,
so the row equals the one ``lesion_table`` gives on the whole volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from medseg.lesions.measure import DEFAULT_PERCENTILES, LesionMeasurement, lesion_table
from medseg.volume import Volume

__all__ = ["lesion_box", "measure_lesion"]

#: Voxels of context kept around a lesion: the organ shell test looks one voxel out (see
#: ``measure._organ_around``), one more keeps the crop's own border out of it.
_MARGIN = 2


def lesion_box(array: np.ndarray, lesion_id: int, *, within: tuple[slice, ...] | None = None
               ) -> tuple[slice, slice, slice] | None:
    """Bounding box (slices, step 1) of the voxels equal to ``lesion_id``, searched ``within`` a box;
    None when there are none."""
    box = tuple(within) if within is not None else tuple(slice(0, s) for s in array.shape)
    starts = [s.indices(n)[0] for s, n in zip(box, array.shape)]
    found = np.nonzero(array[box] == lesion_id)
    if found[0].size == 0:
        return None
    return tuple(slice(int(f.min()) + o, int(f.max()) + 1 + o) for f, o in zip(found, starts))  # type: ignore[return-value]


def measure_lesion(lesions: Volume, lesion_id: int, *, within: tuple[slice, ...] | None = None,
                   image: Volume | None = None, organs: Volume | None = None,
                   organ_names: Mapping[int, str] | None = None, ignore_organ_values: Sequence[int] = (),
                   percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> LesionMeasurement | None:
    """Measure one lesion of an instance map, looking only at a box around it.

    Parameters
    ----------
    lesions : Volume
        Instance map (each non-zero value one lesion).
    lesion_id : int
    within : tuple of slice, optional
        A box that holds every voxel of the lesion (e.g. its box before an edit joined with the
        edited box); default: the whole map (one scan of it).
    image, organs, organ_names, ignore_organ_values, percentiles
        As :func:`medseg.lesions.lesion_table`; ``image`` and ``organs`` on the same grid.

    Returns
    -------
    LesionMeasurement or None
        The row ``lesion_table`` gives for this lesion on the whole map (voxel indices on the
        full grid), or None when no voxel has this id any more.

    Examples
    --------
    >>> import numpy as np
    >>> from medseg.volume import Volume
    >>> ids = np.zeros((20, 20, 10), np.uint8); ids[2:6, 2:6, 2:4] = 1; ids[10:15, 10:12, 5:9] = 2
    >>> row = measure_lesion(Volume(ids, np.diag([0.5, 0.5, 2.0, 1.0])), 2)
    >>> row.voxel_count, row.bbox_start_ijk, round(float(row.volume_ml) * 1000, 3)
    (40, (10, 10, 5), 20.0)
    """
    array = lesions.array
    box = lesion_box(array, lesion_id, within=within)
    if box is None:
        return None
    padded = tuple(slice(max(b.start - _MARGIN, 0), min(b.stop + _MARGIN, n)) for b, n in zip(box, array.shape))
    start = np.array([b.start for b in padded])
    local = array[padded]
    mask_map = np.where(local == lesion_id, local, np.zeros((), local.dtype))
    crop = lesions.crop(padded).with_array(mask_map)
    table = lesion_table(crop, image=None if image is None else image.crop(padded),
                         organs=None if organs is None else organs.crop(padded), organ_names=organ_names,
                         ignore_organ_values=ignore_organ_values, percentiles=percentiles)
    row = table.rows[0]
    axis = table.slice_axis
    return replace(row, centroid_ijk=tuple(float(c + o) for c, o in zip(row.centroid_ijk, start)),
                   bbox_start_ijk=tuple(int(c + o) for c, o in zip(row.bbox_start_ijk, start)),
                   bbox_stop_ijk=tuple(int(c + o) for c, o in zip(row.bbox_stop_ijk, start)),
                   axial_slice=int(row.axial_slice + start[axis]))
