"""napari sample data: medseg's synthetic CT phantom with its organ and lesion ground truth.

File > Open Sample > medseg opens the CT (HU, soft-tissue window), the organ labels with their
names and fixed colours, and the lesion instances, all on the phantom's exact grid. The shipped
copy in ``sample_data/phantom`` is used when present, else the same phantom is generated
(``make_phantom(seed=0)`` is byte-identical to it).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["phantom_sample", "phantom_volumes"]

_SHIPPED = Path(__file__).resolve().parents[1] / "sample_data" / "phantom"


def phantom_volumes():
    """(ct, organs, lesions) volumes of the phantom: organs carry their LabelSet."""
    from medseg.labels import DEFAULT_ORGANS

    if (_SHIPPED / "ct.nii.gz").is_file():
        from medseg.io import load_volume

        ct = load_volume(_SHIPPED / "ct.nii.gz")
        organs = load_volume(_SHIPPED / "organs.nii.gz")
        lesions = load_volume(_SHIPPED / "lesions.nii.gz")
        ct = ct.with_array(ct.array, modality="CT")  # NIfTI has no modality tag; it is a CT in HU
    else:  # installed without the repository's sample_data/: generate the same phantom
        from medseg.phantom import make_phantom

        phantom = make_phantom(seed=0)
        ct, organs, lesions = phantom.ct, phantom.organs, phantom.lesions
    if organs.label_set is None:
        organs = organs.with_labels(DEFAULT_ORGANS)
    return ct, organs, lesions.with_labels(None)


def phantom_sample() -> list[tuple]:
    """CT, organ labels and lesion instances of the shipped phantom, as napari layer data."""
    from napari_plugin._layers import layer_data_from_volume

    ct, organs, lesions = phantom_volumes()
    try:
        from napari import current_viewer

        from napari_plugin._view import axial_when_added

        axial_when_added(current_viewer())
    except ImportError:  # pragma: no cover - napari is what calls this
        pass
    return [
        layer_data_from_volume(ct, "phantom CT", kind="image"),
        layer_data_from_volume(organs, "phantom organs", kind="labels"),
        layer_data_from_volume(lesions, "phantom lesions", kind="lesions"),
    ]
