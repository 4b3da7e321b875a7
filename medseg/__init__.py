"""medseg: segment 3D CT/MR volumes into organs, separate lesion instances, review in napari.

The flow: ``load_volume`` -> :class:`Volume` -> model space -> labels -> lesion instances ->
report -> viewer -> corrections -> training. See ``docs/geometry.md`` for the axis order.
"""

__version__ = "0.1.0"

from medseg.errors import InputError, MedsegError, ModelError  # noqa: E402
from medseg.volume import SourceInfo, Volume  # noqa: E402

__all__ = ["Volume", "SourceInfo", "MedsegError", "InputError", "ModelError", "__version__"]
