"""Corrections of label maps as exact deltas: slice interpolation, holes, split/merge/delete of lesions,
review marks, the provenance log and the recovery file. No Qt, no napari, no torch.

Every operation is a pure function from a map (a :class:`~medseg.volume.Volume`, not modified) and
its parameters to a :class:`Correction`: a :class:`Delta` (bounding box, mask of the changed voxels,
their old and new values: applying then reverting it gives the map back bit for bit) and a record
for the provenance log (operation, label or lesion ids, slice range, voxels changed, time). The
napari plugin applies deltas through napari's own undo history (one Ctrl+Z per operation); a
script applies them with :class:`CorrectionSession`.

>>> from medseg.corrections import interpolate, split_lesion, merge_lesions     # doctest: +SKIP
>>> c = interpolate(organs, organs.label_set.value_of("kidney_right"))          # doctest: +SKIP
>>> c.delta.apply(organs.array); c.record["slices"], c.voxels                    # doctest: +SKIP
([31, 44], 2816)

Units: distances in mm from the volume's spacing (signed distances, watershed, cut sides); slice
indices along the array axis named in the record (``"k"`` for an axial series).
"""

from medseg.corrections._delta import Correction, Delta, now_utc_ms
from medseg.corrections.lesions import (
                                        delete_lesion,
                                        lesion_bbox,
                                        merge_lesions,
                                        new_lesion_id,
                                        renumber_lesions,
                                        split_lesion,
)
from medseg.corrections.log import CorrectionLog
from medseg.corrections.recovery import (
                                        RECOVERY_SUFFIX,
                                        Recovery,
                                        read_recovery,
                                        recovery_path,
                                        write_recovery,
)
from medseg.corrections.review import ReviewState
from medseg.corrections.session import CorrectionSession
from medseg.corrections.slices import (
                                        annotated_slices,
                                        fill_holes,
                                        interpolate,
                                        signed_distance,
)

__all__ = [
                                        "RECOVERY_SUFFIX",
                                        "Correction",
                                        "CorrectionLog",
                                        "CorrectionSession",
                                        "Delta",
                                        "Recovery",
                                        "ReviewState",
                                        "annotated_slices",
                                        "delete_lesion",
                                        "fill_holes",
                                        "interpolate",
                                        "lesion_bbox",
                                        "merge_lesions",
                                        "new_lesion_id",
                                        "now_utc_ms",
                                        "read_recovery",
                                        "recovery_path",
                                        "renumber_lesions",
                                        "signed_distance",
                                        "split_lesion",
                                        "write_recovery",
]
