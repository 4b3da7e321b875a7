"""Corrections of a lesion instance map: split, merge, delete, a new id, renumber.

An instance map holds one id per lesion (0 = background). Each operation returns a
:class:`~medseg.corrections.Correction` (exact delta + log record) and leaves the map unchanged;
bad requests (seeds in two different lesions, a merge of one lesion) raise
:class:`~medseg.errors.InputError` with one sentence saying what to do.

**Split** separates one lesion in two, from two seed voxels or along a cut line:

* seeds: a watershed (``skimage.segmentation.watershed``) of the negated distance to the lesion's
  border, measured in mm (``scipy.ndimage.distance_transform_edt`` with the voxel spacing, so a
  5 mm slice counts as 5 mm), flooded from the two seeds: touching lesions part at their neck,
  where the distance map has its saddle. The part of the first seed keeps the id, the part of the
  second seed gets a new one. Voxels no seed's flood reaches (other pieces of a lesion in
  several pieces) keep the id.
* cut line: two points on a slice; the lesion's voxels on the smaller side of the line (in that
  plane, through all its slices) get a new id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from medseg.corrections._delta import Correction, Delta, now_utc_ms
from medseg.corrections.slices import slice_axis_of
from medseg.errors import InputError
from medseg.volume import Volume, value_counts

__all__ = ["delete_lesion", "lesion_bbox", "merge_lesions", "new_lesion_id", "renumber_lesions", "split_lesion"]

_AXES = "ijk"


def _ids(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind in "bu" and array.dtype.itemsize <= 2:
        present = np.flatnonzero(value_counts(array))
    else:
        present = np.unique(array)
    return present[present != 0]


def new_lesion_id(lesions: Volume | np.ndarray) -> int:
    """The id a newly drawn lesion gets: one above the largest id present (1 on an empty map)."""
    array = getattr(lesions, "array", lesions)
    return int(array.max()) + 1 if array.size else 1


def lesion_bbox(array: np.ndarray, lesion_id: int, *, known: tuple[tuple[slice, ...], int] | None = None
                ) -> tuple[slice, slice, slice] | None:
    """Bounding box of the voxels of ``lesion_id`` (None when there are none).

    Parameters
    ----------
    known : (box, voxels), optional
        A box said to hold all ``voxels`` voxels of the lesion (e.g. from the lesion table). Used
        only when the count inside it is exactly ``voxels`` (then no voxel can be outside it);
        otherwise the whole map is searched.
    """
    if known is not None:
        box, voxels = known
        box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, array.shape))
        inside = array[box] == lesion_id
        if int(np.count_nonzero(inside)) == int(voxels) and voxels > 0:
            return _tight(inside, box)
    mask = array == lesion_id
    # The outermost axis in memory first (a contiguous reduction), then only the slab it spans.
    outer = int(np.argmax([abs(s) for s in mask.strides]))
    other = tuple(a for a in range(3) if a != outer)
    hit = np.flatnonzero(np.any(mask, axis=other))
    if hit.size == 0:
        return None
    box = [slice(0, n) for n in array.shape]
    box[outer] = slice(int(hit[0]), int(hit[-1]) + 1)
    return _tight(mask[tuple(box)], tuple(box))


def _tight(mask: np.ndarray, box: tuple[slice, ...]) -> tuple[slice, slice, slice] | None:
    """The bounding box of ``mask``'s voxels, ``mask`` being ``box`` of a larger array."""
    out = []
    for axis in range(3):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return None
        out.append(slice(box[axis].start + int(hit[0]), box[axis].start + int(hit[-1]) + 1))
    return tuple(out)  # type: ignore[return-value]


Known = dict  # lesion id -> (box, voxel count): boxes a caller already knows (the lesion table's)


def _voxel(point: Sequence[float], shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    ijk = tuple(round(float(p)) for p in point)
    if len(ijk) != 3 or not all(0 <= v < n for v, n in zip(ijk, shape)):
        raise InputError("split", f"the {what} {tuple(point)} lies outside the volume", "click inside the scan")
    return ijk  # type: ignore[return-value]


def _record(operation: str, delta: Delta, axis: int, **fields: Any) -> dict[str, Any]:
    return {"operation": operation, **fields, "axis": _AXES[axis],
            "slices": list(delta.slice_range(axis) or ()), "voxels_changed": delta.voxels, "time_utc": now_utc_ms()}


def split_lesion(lesions: Volume, *, seeds: Sequence[Sequence[float]] | None = None,
                 cut: Sequence[Sequence[float]] | None = None, axis: int | None = None,
                 new_id: int | None = None, known: Known | None = None) -> Correction:
    """Split one lesion in two, from two seeds (spacing-aware watershed) or along a cut line.

    Parameters
    ----------
    lesions : Volume
        Instance map; not modified.
    seeds : two (i, j, k) points
        Inside the same lesion; the first keeps its id, the second's part gets ``new_id``.
    cut : two (i, j, k) points
        A line on one slice (both points on the same slice along ``axis``); the lesion under the
        line is cut, through all its slices; the side with fewer voxels gets ``new_id``.
    axis : int, optional
        Slice axis for ``cut`` (default: the axis closest to the patient's S-I axis).
    new_id : int, optional
        Default: one above the largest id present.
    known : dict id -> (box, voxels), optional
        Boxes of lesions the caller knows (see :func:`lesion_bbox`): spares a search of the map.

    Raises
    ------
    InputError
        Seeds in the background or in two different lesions, the same voxel twice, a cut that
        leaves the whole lesion on one side.
    """
    if (seeds is None) == (cut is None):
        raise InputError("split", "give either two seeds or a cut line", "click two seeds inside the lesion")
    array = lesions.array
    axis_used = slice_axis_of(lesions, axis)
    new_id = new_lesion_id(array) if new_id is None else int(new_id)
    if seeds is not None:
        return _split_seeds(lesions, seeds, new_id, axis_used, known or {})
    return _split_cut(lesions, cut, new_id, axis_used, known or {})


def _split_seeds(lesions: Volume, seeds: Sequence[Sequence[float]], new_id: int, axis: int,
                 known: Known) -> Correction:
    from scipy import ndimage
    from skimage.segmentation import watershed

    array = lesions.array
    if len(seeds) != 2:
        raise InputError("split", f"{len(seeds)} seed(s) given", "click exactly two seeds, one in each part")
    a, b = (_voxel(s, array.shape, "seed") for s in seeds)
    id_a, id_b = int(array[a]), int(array[b])
    if id_a == 0 or id_b == 0:
        which = "first" if id_a == 0 else "second"
        raise InputError("split", f"the {which} seed {a if id_a == 0 else b} lies in the background, not in a lesion",
                         "put both seeds inside the lesion to split")
    if id_a != id_b:
        raise InputError("split", f"the seeds lie in two different lesions ({id_a} and {id_b})",
                         "put both seeds inside the one lesion to split (to join two lesions, merge them)")
    if a == b:
        raise InputError("split", f"both seeds are the same voxel {a}", "put the seeds in the two parts to separate")
    box = lesion_bbox(array, id_a, known=known.get(id_a))
    # One voxel of margin: the distance to the border is measured against background there.
    box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, array.shape))
    mask = array[box] == id_a
    distance = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=lesions.spacing)[1:-1, 1:-1, 1:-1]
    markers = np.zeros(mask.shape, np.int32)
    local_a = tuple(p - s.start for p, s in zip(a, box))
    local_b = tuple(p - s.start for p, s in zip(b, box))
    markers[local_a], markers[local_b] = 1, 2
    basins = watershed(-distance, markers, mask=mask, connectivity=3)
    delta = Delta.between(array, box, basins == 2, new_id)
    record = _record("split", delta, axis, lesion=id_a, new_lesion=new_id, method="seeds (watershed, mm)",
                     seeds_ijk=[list(a), list(b)], voxels_kept=int(np.count_nonzero(mask)) - delta.voxels)
    return Correction(delta, record)


def _split_cut(lesions: Volume, cut: Sequence[Sequence[float]], new_id: int, axis: int, known: Known) -> Correction:
    array = lesions.array
    if len(cut) != 2:
        raise InputError("split", f"the cut line has {len(cut)} point(s)", "draw a line with two points")
    p, q = (np.asarray(c, dtype=np.float64) for c in cut)
    if abs(p[axis] - q[axis]) > 0.5:
        raise InputError("split", "the cut line's two points lie on different slices", "draw the line on one slice")
    in_plane = [x for x in range(3) if x != axis]
    direction = (q - p)[in_plane] * lesions.spacing[in_plane]
    if np.hypot(*direction) == 0:
        raise InputError("split", "the cut line has no length", "draw a line across the lesion")
    # The lesion cut: the one under the line (sampled every half voxel), the most voxels along it.
    n = int(np.ceil(np.abs(q - p).max() * 2)) + 1
    samples = np.round(p + np.linspace(0.0, 1.0, n)[:, None] * (q - p)).astype(int)
    samples = samples[np.all((samples >= 0) & (samples < array.shape), axis=1)]
    hit = array[tuple(samples.T)] if len(samples) else np.zeros(0, array.dtype)
    hit = hit[hit != 0]
    if hit.size == 0:
        raise InputError("split", "the cut line crosses no lesion", "draw the line across the lesion to split")
    values, counts = np.unique(hit, return_counts=True)
    lesion_id = int(values[np.argmax(counts)])
    box = lesion_bbox(array, lesion_id, known=known.get(lesion_id))
    mask = array[box] == lesion_id
    grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij")
    u, v = in_plane
    # Side of the line in mm: the z-component of (q - p) x (x - p) in the slice plane.
    side = (direction[0] * (grids[v] - p[v]) * lesions.spacing[v]
            - direction[1] * (grids[u] - p[u]) * lesions.spacing[u])
    # Voxels on the line itself stay with the larger part.
    sides = (mask & (side > 0), mask & (side < 0))
    counts = [int(np.count_nonzero(s)) for s in sides]
    if min(counts) == 0:
        raise InputError("split", f"the cut line leaves all of lesion {lesion_id} on one side",
                         "draw the line through the lesion, from one side of it to the other")
    smaller = sides[int(np.argmin(counts))]
    delta = Delta.between(array, box, smaller, new_id)
    record = _record("split", delta, axis, lesion=lesion_id, new_lesion=new_id, method="cut line",
                     cut_ijk=[[float(x) for x in p], [float(x) for x in q]],
                     voxels_kept=int(np.count_nonzero(mask)) - delta.voxels)
    return Correction(delta, record)


def merge_lesions(lesions: Volume, ids: Iterable[int], *, into: int | None = None,
                  axis: int | None = None, known: Known | None = None) -> Correction:
    """Give several lesions one id (``into``, default the smallest of them).

    ``known``: boxes of lesions the caller knows (see :func:`lesion_bbox`).

    Raises
    ------
    InputError
        Fewer than two distinct lesions present among ``ids``.
    """
    array = lesions.array
    wanted = sorted({int(i) for i in ids if int(i) != 0})
    boxes = {i: lesion_bbox(array, i, known=(known or {}).get(i)) for i in wanted}
    present = [i for i in wanted if boxes[i] is not None]
    absent = [i for i in wanted if boxes[i] is None]
    if len(present) < 2:
        said = f"{len(present)} lesion ({present[0]})" if len(present) == 1 else "no lesion"
        raise InputError("merge", f"{said} to merge{'; not in the map: ' + ', '.join(map(str, absent)) if absent else ''}",
                         "select two or more lesions to merge")
    into = present[0] if into is None else int(into)
    if into not in present:
        raise InputError("merge", f"lesion {into} is not among the lesions merged ({', '.join(map(str, present))})",
                         "merge into one of them")
    sources = [i for i in present if i != into]
    box = tuple(slice(min(boxes[i][a].start for i in sources), max(boxes[i][a].stop for i in sources))
                for a in range(3))
    region = array[box]
    delta = Delta.between(array, box, np.isin(region, sources), into)
    axis = slice_axis_of(lesions, axis)
    record = _record("merge", delta, axis, lesions=present, into=into)
    return Correction(delta, record)


def delete_lesion(lesions: Volume, lesion_id: int, *, axis: int | None = None, known: Known | None = None) -> Correction:
    """Remove one lesion (its voxels become background). Works for a class of a class map too.

    ``known``: boxes of lesions the caller knows (see :func:`lesion_bbox`).
    """
    array = lesions.array
    lesion_id = int(lesion_id)
    box = lesion_bbox(array, lesion_id, known=(known or {}).get(lesion_id)) if lesion_id else None
    if box is None:
        raise InputError("delete", f"there is no lesion {lesion_id} in the map", "select a lesion that is drawn")
    delta = Delta.between(array, box, array[box] == lesion_id, 0)
    record = _record("delete", delta, slice_axis_of(lesions, axis), lesion=lesion_id)
    return Correction(delta, record)


def renumber_lesions(lesions: Volume, *, axis: int | None = None) -> Correction:
    """Ids 1..n in the order of the current ids (closes the gaps deletes and merges leave).

    Raises
    ------
    InputError
        The ids are already 1..n.
    """
    array = lesions.array
    present = _ids(array)
    if present.size == 0 or int(present[-1]) == present.size:
        raise InputError("renumber", f"the lesion ids are already 1..{present.size}", "nothing to renumber")
    lookup = np.zeros(int(present[-1]) + 1, dtype=array.dtype)
    lookup[present] = np.arange(1, present.size + 1, dtype=array.dtype)
    moved = present[lookup[present] != present]
    boxes = [lesion_bbox(array, int(i)) for i in moved]
    box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
    region = array[box]
    mask = np.isin(region, moved)
    delta = Delta.between(array, box, mask, lookup[region[mask]])
    mapping = {int(old): int(lookup[old]) for old in moved}
    record = _record("renumber", delta, slice_axis_of(lesions, axis), ids={str(k): v for k, v in mapping.items()})
    return Correction(delta, record)
