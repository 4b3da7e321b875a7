"""Lesions of a label map as a user gives it: the lesion class found by name, organs from the map.

:func:`measure_lesions` is what ``medseg lesions`` does to a file (``run_case`` does the same to
a model's labels through :class:`medseg.pipeline.LesionOptions`).
"""

from __future__ import annotations

import numpy as np

from medseg.errors import InputError, option
from medseg.lesions.instances import find_instances, instances_from_map
from medseg.lesions.measure import lesion_table
from medseg.progress import CancelToken, ProgressCallback
from medseg.volume import Volume

__all__ = ["measure_lesions"]


def measure_lesions(labels: Volume, *, image: Volume | None = None, organs: Volume | None = None,
                    label: int | str | None = None, threshold: float | None = None, as_instances: bool = False,
                    any_nonzero: bool = False, allow_absent_label: bool = False, min_volume_mm3: float = 0.0,
                    split_h_mm: float | None = None, connectivity: int = 26, order: str = "volume",
                    progress: ProgressCallback | None = None, cancel: CancelToken | None = None):
    """Lesion instances and their table from a label map, mask, probability or instance map.

    What ``medseg lesions`` does to a file it is given (``run_case`` does the same to a model's
    labels). The lesion class is found by name in ``labels.label_set`` when neither ``label`` nor
    ``threshold`` is given; the organ map defaults to ``labels`` itself when it holds other classes
    (its lesion classes are not organs). Unlike :class:`LesionOptions`, nothing is dropped by
    default (``min_volume_mm3=0``): a mask a person drew is measured as it is.

    Returns
    -------
    (LesionInstances, LesionTable)
    """

    label_set = labels.label_set
    if isinstance(label, str) and not label.strip().lstrip("-").isdigit():
        if label_set is None:
            raise InputError(option("label", label), f"names a class, but {labels.source.path or 'the label map'} "
                             "has no class names (no labels.json beside it)", "give the class value instead")
        try:
            label = label_set.value_of(label)
        except KeyError:
            raise InputError(option("label", label), f"is not a class of {labels.source.path or 'the label map'} "
                             f"({', '.join(label_set.names[1:])})", "give one of its class names") from None
    elif label is not None:
        label = int(label)
    if label is None and threshold is None and not as_instances and not any_nonzero and label_set is not None:
        values = label_set.lesion_values()
        if len(values) == 1:
            label = values[0]
        elif len(values) > 1:
            raise InputError(labels.source.path or "label map", "has several lesion classes "
                             f"({', '.join(label_set.name_of(v) for v in values)})", f"choose one with {option('label')}")
    ignore: tuple[int, ...] = ()
    if organs is None and label is not None and np.any((labels.array != 0) & (labels.array != label)):
        organs = labels
        # The lesion class of the same map is not an organ, named or not (the map's other lesion
        # classes are dropped too: lesion_table reads them from its label set).
        ignore = (label, *(label_set.lesion_values() if label_set is not None else ()))
    if as_instances:
        instances = instances_from_map(labels)
    else:
        instances = find_instances(labels, label=label, threshold=threshold, any_nonzero=any_nonzero,
                                   allow_absent_label=allow_absent_label, connectivity=connectivity,
                                   min_volume_mm3=min_volume_mm3, split_h_mm=split_h_mm, order=order,
                                   progress=progress, cancel=cancel)
    table = lesion_table(instances, image=image, organs=organs, ignore_organ_values=ignore,
                         progress=progress, cancel=cancel)
    return instances, table
