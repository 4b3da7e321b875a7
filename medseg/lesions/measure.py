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
from medseg.lesions.shape import (axial_diameters, boundary_points, farthest_pair, mesh_area_volume,
                                  slice_axis, sphericity)
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.volume import Volume

__all__ = ["LesionMeasurement", "LesionTable", "lesion_table", "DEFAULT_PERCENTILES"]

#: Intensity percentiles reported per lesion.
DEFAULT_PERCENTILES = (5, 25, 50, 75, 95)
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
    def total_volume_ml(self) -> float:
        return float(sum(r.volume_ml for r in self.rows))

    def slice_axis_description(self) -> str:
        """E.g. ``"k (S)"``: the axis and the world direction it points to."""
        return f"{_AXIS_NAMES[self.slice_axis]} ({self.instances.labels.orientation[self.slice_axis]})"


def percentile_key(q: float) -> str:
    """Column name of percentile ``q``: 5 -> "p05", 50 -> "p50", 2.5 -> "p2.5"."""
    return f"p{int(q):02d}" if float(q).is_integer() else f"p{q:g}"


def _organ_of(ijk, crop, start, organs: np.ndarray, ignore: set[int], names: Mapping[int, str]):
    """Majority organ value under the lesion; if none, in a one-voxel shell around it."""
    from scipy import ndimage

    values = organs[ijk[:, 0], ijk[:, 1], ijk[:, 2]].astype(np.int64)
    source = "overlap"
    valid = (values > 0) & ~np.isin(values, list(ignore))
    total = len(values)
    if not valid.any():
        shell = ndimage.binary_dilation(crop, structure=np.ones((3, 3, 3), bool)) & ~crop
        idx = np.argwhere(shell) + start
        inside = np.all((idx >= 0) & (idx < np.array(organs.shape)), axis=1)
        idx = idx[inside]
        values = organs[idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.int64)
        valid = (values > 0) & ~np.isin(values, list(ignore))
        total = len(values)
        source = "border"
        if not valid.any():
            return 0, "", 0.0, ""
    found, counts = np.unique(values[valid], return_counts=True)
    best = int(np.argmax(counts))  # ties: the smaller value, as np.unique sorts
    value = int(found[best])
    return value, names.get(value, str(value)), float(counts[best] / total), source


def _tuple3(a) -> tuple[float, float, float]:
    return tuple(float(x) for x in a)  # type: ignore[return-value]


def _measure_one(lesion_id, ijk, instances_volume: Volume, axis, image, organs, ignore, names, percentiles):
    affine = instances_volume.affine
    crop, start = crop_mask(ijk)
    mean_ijk = ijk.mean(axis=0)
    centroid = mean_ijk @ affine[:3, :3].T + affine[:3, 3]
    axial = axial_diameters(crop, start, affine, axis)
    surface = (boundary_points(crop) + start) @ affine[:3, :3].T + affine[:3, 3]
    diameter, i, j = farthest_pair(surface)
    p, q = surface[i], surface[j]
    area, mesh_mm3 = mesh_area_volume(crop, affine[:3, :3])
    row = dict(
        id=int(lesion_id), voxel_count=len(ijk), volume_ml=len(ijk) * instances_volume.voxel_volume_ml,
        axial_long_axis_mm=axial.long_mm, axial_short_axis_mm=axial.short_mm, axial_slice=axial.slice_index,
        max_3d_diameter_mm=diameter, centroid_ras_mm=_tuple3(centroid),
        centroid_lps_mm=_tuple3(centroid * np.array([-1.0, -1.0, 1.0])), centroid_ijk=_tuple3(mean_ijk),
        bbox_start_ijk=tuple(int(v) for v in ijk.min(axis=0)),
        bbox_stop_ijk=tuple(int(v) + 1 for v in ijk.max(axis=0)),
        surface_area_mm2=area, mesh_volume_ml=mesh_mm3 / 1000.0, sphericity=sphericity(area, mesh_mm3),
        long_axis_ras_mm=tuple(_tuple3(e) for e in axial.long_axis),
        short_axis_ras_mm=tuple(_tuple3(e) for e in axial.short_axis),
        max_3d_diameter_ras_mm=(_tuple3(p), _tuple3(q)),
    )
    if organs is not None:
        value, name, fraction, source = _organ_of(ijk, crop, start, organs, ignore, names)
        row.update(organ_value=value, organ=name, organ_fraction=fraction, organ_source=source)
    if image is not None:
        values = image[ijk[:, 0], ijk[:, 1], ijk[:, 2]].astype(np.float64)
        row.update(intensity_mean=float(values.mean()), intensity_std=float(values.std()),
                   intensity_min=float(values.min()), intensity_max=float(values.max()),
                   intensity_percentiles={percentile_key(q): float(v) for q, v in
                                          zip(percentiles, np.percentile(values, percentiles))})
    return LesionMeasurement(**row)


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
        Names for organ values (e.g. a :class:`~medseg.models.labels.LabelSet`'s ``to_dict``
        with int keys); the value is used as name otherwise.
    ignore_organ_values : sequence of int
        Organ values that are not organs (e.g. the lesion label itself when ``organs`` is the
        semantic map the lesions came from).
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
    names = {int(k): str(v) for k, v in (organ_names or {}).items()}
    percentiles = tuple(float(q) for q in percentiles)
    if any(not 0 <= q <= 100 for q in percentiles):
        raise InputError("percentiles", f"{percentiles} must lie in 0..100", "use e.g. 5 25 50 75 95")
    axis = slice_axis(labels.affine)
    rows = []
    n = len(instances.voxels)
    where = labels_name
    for g in range(n):
        if g % 8 == 0:
            check_cancel(cancel, where)
            report(progress, g, n, "lesion table: measuring")
        rows.append(_measure_one(instances.voxels.values[g], instances.voxels.voxels(g), labels, axis,
                                 image_array, organs_array, set(int(v) for v in ignore_organ_values),
                                 names, percentiles))
    report(progress, n, n, "lesion table: measuring")
    return LesionTable(tuple(rows), instances, axis, unit, percentiles,
                       image=volume_name(image, "in-memory image") if image is not None else "",
                       organs=volume_name(organs, "in-memory organ map") if organs is not None else "")
