"""medseg: segment 3D CT/MR volumes into organs, separate lesion instances, review in napari.

The flow: ``load_volume`` -> :class:`Volume` -> model space -> labels -> lesion instances ->
report -> viewer -> corrections -> training. See ``docs/geometry.md`` for the axis order.

The top-level API is lazy: ``import medseg`` loads neither torch nor MONAI; the first use of
:func:`segment` or :func:`run_case` does.

Examples
--------
>>> import medseg
>>> ct = medseg.load_volume("sample_data/phantom/ct_dicom")
>>> ct.shape, ct.orientation, ct.modality
((200, 170, 70), 'LPS', 'CT')
>>> result = medseg.segment(ct, "default")
>>> result.labels.same_grid(ct), result.labels.label_set.name_of(1)
(True, 'liver')
>>> found = medseg.find_instances(result.labels, label=result.labels.label_set.value_of("lesion"),
...                               min_volume_mm3=100)
>>> table = medseg.lesion_table(found, image=ct, organs=result.labels)
>>> all(row.volume_ml >= 0.1 for row in table.rows)
True
>>> truth = medseg.load_volume("sample_data/phantom/organs.nii.gz")
>>> scores = medseg.evaluate(result.labels, truth)
>>> 0.3 < scores.by_name("liver").dice <= 1.0
True
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

from medseg.errors import InputError, MedsegError, ModelError  # noqa: E402
from medseg.volume import SourceInfo, Volume  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from medseg.case import Case, read_case, write_case
    from medseg.evaluation import evaluate
    from medseg.inference import segment
    from medseg.io import load_volume, save_volume
    from medseg.labels import LabelSet
    from medseg.lesions import find_instances, lesion_table
    from medseg.pipeline import CaseResult, LesionOptions, run_case

#: Public name -> module that defines it; imported on first use (torch/MONAI only when needed).
_LAZY = {
    "load_volume": "medseg.io",
    "save_volume": "medseg.io",
    "segment": "medseg.inference",
    "run_case": "medseg.pipeline",
    "LesionOptions": "medseg.pipeline",
    "CaseResult": "medseg.pipeline",
    "find_instances": "medseg.lesions",
    "lesion_table": "medseg.lesions",
    "evaluate": "medseg.evaluation",
    "read_case": "medseg.case",
    "write_case": "medseg.case",
    "Case": "medseg.case",
    "LabelSet": "medseg.labels",
}

__all__ = ["Volume", "SourceInfo", "MedsegError", "InputError", "ModelError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
