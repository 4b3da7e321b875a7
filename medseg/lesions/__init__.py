"""Lesion instances and the per-lesion table.

>>> from medseg.lesions import find_instances, lesion_table          # doctest: +SKIP
>>> found = find_instances(seg, label=2, min_volume_mm3=10)           # doctest: +SKIP
>>> table = lesion_table(found, image=ct, organs=seg)                 # doctest: +SKIP
>>> table.rows[0].volume_ml, table.rows[0].axial_long_axis_mm         # doctest: +SKIP

Everything takes and returns :class:`medseg.Volume` objects; geometry (spacing, direction)
comes from the volume's affine. Definitions of every measurement: ``docs/lesions.md``.
"""

from medseg.lesions.instances import (
    CONNECTIVITIES,
    LesionInstances,
    find_instances,
    instances_from_map,
    split_component,
)
from medseg.lesions.from_labels import measure_lesions
from medseg.lesions.masks import lesion_mask
from medseg.lesions.measure import (
    DEFAULT_PERCENTILES,
    RECIST_MEASURABLE_MM,
    LesionMeasurement,
    LesionTable,
    lesion_table,
)
from medseg.lesions.shape import AxialDiameters, axial_diameters, slice_axis

__all__ = [
    "find_instances",
    "instances_from_map",
    "split_component",
    "lesion_mask",
    "lesion_table",
    "measure_lesions",
    "LesionInstances",
    "LesionMeasurement",
    "LesionTable",
    "AxialDiameters",
    "axial_diameters",
    "slice_axis",
    "CONNECTIVITIES",
    "DEFAULT_PERCENTILES",
    "RECIST_MEASURABLE_MM",
]
