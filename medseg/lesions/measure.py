"""The per-lesion table: size, RECIST diameters, position, organ, intensity and shape.

Every number is in physical units from the volume's affine (mm, mL, mm^2; HU for CT); the
definitions are in ``docs/lesions.md``. Each lesion is measured on its own voxel list and a
small crop, so the table costs little beyond the connected components themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from medseg.errors import InputError
from medseg.lesions._voxels import crop_mask
from medseg.lesions.instances import LesionInstances, instances_from_map
from medseg.lesions.masks import require_integer_labels, require_same_grid, volume_name
from medseg.lesions.mesh import mesh_area_volume, sphericity
from medseg.lesions.shape import (axial_diameters, boundary_faces, boundary_points, farthest_pair,
                                  lattice_extremes, slice_axis)
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.volume import Volume

__all__ = ["LesionMeasurement", "LesionTable", "lesion_table", "DEFAULT_PERCENTILES", "RECIST_MEASURABLE_MM"]

#: Intensity percentiles reported per lesion.
DEFAULT_PERCENTILES = (5, 25, 50, 75, 95)
#: RECIST 1.1: a lesion is measurable when its longest axial diameter is at least 10 mm.
RECIST_MEASURABLE_MM = 10.0
_AXIS_NAMES = "ijk"


@dataclass(frozen=True)
class LesionMeasurement:
    """One row of the lesion table. Positions are RAS mm unless a name says LPS or ijk.

    Intensity fields are None when no image was given; organ fields are 0/"" when no organ
    map was given or the lesion touches no organ.
    """

    id: int
    voxel_count: int
    volume_ml: float
    axial_long_axis_mm: float
    axial_short_axis_mm: float
    axial_slice: int
    max_3d_diameter_mm: float
    centroid_ras_mm: tuple[float, float, float]
    centroid_lps_mm: tuple[float, float, float]
    centroid_ijk: tuple[float, float, float]
    bbox_start_ijk: tuple[int, int, int]
    bbox_stop_ijk: tuple[int, int, int]
    surface_area_mm2: float
    mesh_volume_ml: float
    sphericity: float
    organ_value: int = 0
    organ: str = ""
    organ_fraction: float = 0.0
    organ_source: str = ""
    intensity_mean: float | None = None
    intensity_std: float | None = None
    intensity_min: float | None = None
    intensity_max: float | None = None
    intensity_percentiles: dict[str, float] = field(default_factory=dict)
    long_axis_ras_mm: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0, 0, 0), (0, 0, 0))
    short_axis_ras_mm: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0, 0, 0), (0, 0, 0))
    max_3d_diameter_ras_mm: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0, 0, 0), (0, 0, 0))

    def as_dict(self) -> dict:
        """Plain data (lists, floats, str) for JSON."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class LesionTable:
    """The measured lesions of one instance map, with what is needed to read the numbers.

    Attributes
    ----------
    rows : tuple of LesionMeasurement
        One per lesion, in id order.
    instances : LesionInstances
        The instances that were measured (instance map and settings).
    slice_axis : int
        Array axis across the slices the axial diameters were measured on (0, 1, 2 = i, j, k).
    intensity_unit : str
        "HU" for CT, "" otherwise (or when no image was given).
    percentiles : tuple of float
        Which intensity percentiles the rows hold.
    image, organs : str
        Where the image and organ map came from ("" when not given).
    """

    rows: tuple[LesionMeasurement, ...]
    instances: LesionInstances
    slice_axis: int
    intensity_unit: str
    percentiles: tuple[float, ...]
    image: str = ""
    organs: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def row(self, lesion_id: int) -> LesionMeasurement:
        for r in self.rows:
            if r.id == lesion_id:
                return r
        raise KeyError(f"no lesion with id {lesion_id}")

    @property
    def n_recist_measurable(self) -> int:
        """Lesions whose axial long axis is at least :data:`RECIST_MEASURABLE_MM`."""
        return sum(r.axial_long_axis_mm >= RECIST_MEASURABLE_MM for r in self.rows)

    @property
    def total_volume_ml(self) -> float:
        return float(sum(r.volume_ml for r in self.rows))

    def slice_axis_description(self) -> str:
        """E.g. ``"k (S)"``: the axis and the world direction it points to."""
        return f"{_AXIS_NAMES[self.slice_axis]} ({self.instances.labels.orientation[self.slice_axis]})"


def percentile_key(q: float) -> str:
    """Column name of percentile ``q``: 5 -> "p05", 50 -> "p50", 2.5 -> "p2.5"."""
    return f"p{int(q):02d}" if float(q).is_integer() else f"p{q:g}"


def _segment_ids(groups) -> np.ndarray:
    return np.repeat(np.arange(len(groups)), groups.counts)


def _intensity_statistics(groups, image: np.ndarray, percentiles: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Mean, population std, min, max and percentiles of every lesion at once (sorted segments).

    Percentiles use numpy's default linear interpolation between order statistics.
    """
    ijk, starts, counts = groups.ijk, groups.offsets[:-1], groups.counts
    values = image[ijk[:, 0], ijk[:, 1], ijk[:, 2]].astype(np.float64)
    segment = _segment_ids(groups)
    mean = np.add.reduceat(values, starts) / counts
    variance = np.add.reduceat((values - mean[segment]) ** 2, starts) / counts
    if image.dtype.kind in "iub" and image.dtype.itemsize <= 4:
        # One integer sort of (lesion, value) keys is several times faster than a lexsort.
        raw = image[ijk[:, 0], ijk[:, 1], ijk[:, 2]].astype(np.int64)
        low = int(raw.min())
        keys = (segment.astype(np.int64) << 33) | (raw - low)
        keys.sort()
        ordered = ((keys & ((1 << 33) - 1)) + low).astype(np.float64)
    else:
        ordered = values[np.lexsort((values, segment))]
    stats = {"mean": mean, "std": np.sqrt(variance), "min": ordered[starts],
             "max": ordered[starts + counts - 1]}
    for q in percentiles:
        position = (counts - 1) * (q / 100.0)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, counts - 1)
        fraction = position - low
        lo_v, hi_v = ordered[starts + low], ordered[starts + high]
        stats[percentile_key(q)] = lo_v + (hi_v - lo_v) * fraction
    return stats


def _majority(values: np.ndarray, segment: np.ndarray, n: int, ignore: set[int]):
    """Per segment: most frequent valid value (ties: the smaller), its count, segment size."""
    totals = np.bincount(segment, minlength=n)
    valid = values > 0
    if ignore:
        valid &= ~np.isin(values, list(ignore))
    best_value = np.zeros(n, np.int64)
    best_count = np.zeros(n, np.int64)
    if valid.any():
        base = int(values[valid].max()) + 1
        codes, counts = np.unique(segment[valid] * base + values[valid], return_counts=True)
        pairs = np.stack([codes // base, codes % base], axis=1)
        # Sort by segment, then count descending, then value ascending: the first of each segment wins.
        order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
        pairs, counts = pairs[order], counts[order]
        first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
        best_value[pairs[first, 0]] = pairs[first, 1]
        best_count[pairs[first, 0]] = counts[first]
    return best_value, best_count, totals


def _organ_assignment(groups, organs: np.ndarray, ignore: set[int]):
    """(value, fraction, source) per lesion by overlap; 0 where the lesion overlaps no organ."""
    ijk = groups.ijk
    values = organs[ijk[:, 0], ijk[:, 1], ijk[:, 2]].astype(np.int64)
    value, count, total = _majority(values, _segment_ids(groups), len(groups), ignore)
    source = np.where(count > 0, "overlap", "").astype(object)
    return value, count / np.maximum(total, 1), source


def _organ_around(crop, start, organs: np.ndarray, ignore: set[int]) -> tuple[int, float]:
    """Majority organ in the one-voxel shell around a lesion that overlaps no organ (0 if none)."""
    from scipy import ndimage

    lo = np.maximum(start, 0)
    hi = np.minimum(start + np.array(crop.shape), organs.shape)
    if not organs[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].any():
        return 0, 0.0  # nothing around at all: the common case, without a dilation
    shell = np.argwhere(ndimage.binary_dilation(crop, structure=np.ones((3, 3, 3), bool)) & ~crop) + start
    shell = shell[np.all((shell >= 0) & (shell < np.array(organs.shape)), axis=1)]
    around = organs[shell[:, 0], shell[:, 1], shell[:, 2]].astype(np.int64)
    value, count, total = _majority(around, np.zeros(len(around), np.int64), 1, ignore)
    return (int(value[0]), float(count[0] / total[0])) if count[0] else (0, 0.0)


def _tuple3(a) -> tuple[float, float, float]:
    return tuple(float(x) for x in a)  # type: ignore[return-value]


def _shape_of(crop, start, affine, axis) -> dict:
    """The per-lesion geometric measurements (the part that needs the lesion's own crop)."""
    faces = boundary_faces(crop)
    axial = axial_diameters(crop, start, affine, axis, faces=faces)
    local = boundary_points(crop, faces=faces)
    local = local[lattice_extremes(local)]  # a superset of the hull vertices, far fewer points
    surface = (local + start) @ affine[:3, :3].T + affine[:3, 3]
    diameter, i, j = farthest_pair(surface)
    area, mesh_mm3 = mesh_area_volume(crop, affine[:3, :3])
    return dict(
        axial_long_axis_mm=axial.long_mm, axial_short_axis_mm=axial.short_mm, axial_slice=axial.slice_index,
        max_3d_diameter_mm=diameter, surface_area_mm2=area, mesh_volume_ml=mesh_mm3 / 1000.0,
        sphericity=sphericity(area, mesh_mm3), long_axis_ras_mm=tuple(_tuple3(e) for e in axial.long_axis),
        short_axis_ras_mm=tuple(_tuple3(e) for e in axial.short_axis),
        max_3d_diameter_ras_mm=(_tuple3(surface[i]), _tuple3(surface[j])),
    )


def lesion_table(
    instances: LesionInstances | Volume,
    *,
    image: Volume | None = None,
    organs: Volume | None = None,
    organ_names: Mapping[int, str] | None = None,
    ignore_organ_values: Sequence[int] = (),
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> LesionTable:
    """Measure every lesion of an instance map.

    Parameters
    ----------
    instances : LesionInstances or Volume
        From :func:`~medseg.lesions.find_instances`, or an instance map volume (each non-zero
        value one lesion; ids are kept).
    image : Volume, optional
        The image the lesions were drawn on, same grid: intensity statistics (HU for CT).
    organs : Volume, optional
        Organ label map, same grid: each lesion gets the organ value under most of its
        voxels, or, if it lies outside every organ, the one most frequent in the one-voxel
        shell around it (e.g. a tumour cut out of the liver label in the same map).
    organ_names : mapping value -> name, optional
        Names for organ values; default: the organ map's own ``label_set`` (the value is used as
        name when it has none).
    ignore_organ_values : sequence of int
        Organ values that are not organs (e.g. the lesion label itself when ``organs`` is the
        semantic map the lesions came from); default: the classes of the organ map's
        ``label_set`` whose names mean a lesion (:data:`medseg.labels.LESION_NAMES`).
    percentiles : sequence of float
        Intensity percentiles to report (numpy's linear interpolation).
    progress, cancel
        See :mod:`medseg.progress`.

    Returns
    -------
    LesionTable
        Empty (zero rows) when there are no lesions.

    Raises
    ------
    InputError
        When ``image`` or ``organs`` is not on the instance map's grid (naming both).
    """
    if isinstance(instances, Volume):
        instances = instances_from_map(instances)
    labels = instances.labels
    labels_name = volume_name(labels, "the lesion map")
    image_array = organs_array = None
    unit = ""
    if image is not None:
        require_same_grid(labels, image, name=labels_name, other_name=volume_name(image, "the image"))
        if image.array.dtype.kind not in "biuf":
            raise InputError(volume_name(image, "image"), f"has non-numeric voxels ({image.array.dtype})",
                             "give a grey-level image")
        image_array = image.array
        unit = "HU" if image.modality.upper() == "CT" else ""
    if organs is not None:
        organs_name = volume_name(organs, "the organ map")
        require_same_grid(labels, organs, name=labels_name, other_name=organs_name)
        require_integer_labels(organs.array, organs_name)
        organs_array = organs.array
    if organs is not None and organs.label_set is not None:
        # Names travel with the organ map: its lesion classes are not organs.
        if organ_names is None:
            organ_names = {lab.value: lab.name for lab in organs.label_set}
        if not ignore_organ_values:
            ignore_organ_values = organs.label_set.lesion_values()
    names = {int(k): str(v) for k, v in (organ_names or {}).items()}
    percentiles = tuple(float(q) for q in percentiles)
    if any(not 0 <= q <= 100 for q in percentiles):
        raise InputError("percentiles", f"{percentiles} must lie in 0..100", "use e.g. 5 25 50 75 95")
    axis = slice_axis(labels.affine)
    groups = instances.voxels
    n = len(groups)
    where = labels_name
    rows = []
    if n:
        # Everything that is a sum over voxels is computed for all lesions at once.
        starts, counts = groups.offsets[:-1], groups.counts
        mean_ijk = np.add.reduceat(groups.ijk, starts, axis=0) / counts[:, None]
        centroids = mean_ijk @ labels.affine[:3, :3].T + labels.affine[:3, 3]
        lows = np.minimum.reduceat(groups.ijk, starts, axis=0)
        highs = np.maximum.reduceat(groups.ijk, starts, axis=0) + 1
        intensity = _intensity_statistics(groups, image_array, percentiles) if image_array is not None else None
        ignore = set(int(v) for v in ignore_organ_values)
        organ = _organ_assignment(groups, organs_array, ignore) if organs_array is not None else None
    for g in range(n):
        if g % 8 == 0:
            check_cancel(cancel, where)
            report(progress, g, n, "lesion table: measuring")
        crop, start = crop_mask(groups.voxels(g))
        row = dict(id=int(groups.values[g]), voxel_count=int(counts[g]), volume_ml=counts[g] * labels.voxel_volume_ml,
                   centroid_ras_mm=_tuple3(centroids[g]), centroid_lps_mm=_tuple3(centroids[g] * [-1.0, -1.0, 1.0]),
                   centroid_ijk=_tuple3(mean_ijk[g]), bbox_start_ijk=tuple(int(v) for v in lows[g]),
                   bbox_stop_ijk=tuple(int(v) for v in highs[g]), **_shape_of(crop, start, labels.affine, axis))
        if organ is not None:
            value, fraction, source = int(organ[0][g]), float(organ[1][g]), str(organ[2][g])
            if not value:
                value, fraction = _organ_around(crop, start, organs_array, ignore)
                source = "border" if value else ""
            row.update(organ_value=value, organ=names.get(value, str(value)) if value else "",
                       organ_fraction=fraction, organ_source=source)
        if intensity is not None:
            row.update(intensity_mean=float(intensity["mean"][g]), intensity_std=float(intensity["std"][g]),
                       intensity_min=float(intensity["min"][g]), intensity_max=float(intensity["max"][g]),
                       intensity_percentiles={percentile_key(q): float(intensity[percentile_key(q)][g])
                                              for q in percentiles})
        rows.append(LesionMeasurement(**row))
    report(progress, n, n, "lesion table: measuring")
    return LesionTable(tuple(rows), instances, axis, unit, percentiles,
                       image=volume_name(image, "in-memory image") if image is not None else "",
                       organs=volume_name(organs, "in-memory organ map") if organs is not None else "")
