"""napari sample data: medseg's synthetic CT phantom with its organ and lesion ground truth."""

from __future__ import annotations

from pathlib import Path

__all__ = ["phantom_sample"]

_SHIPPED = Path(__file__).resolve().parents[1] / "sample_data" / "phantom"


def phantom_sample() -> list[tuple]:
    """CT, organ labels and lesion instances of the shipped phantom (generated if not shipped)."""
    from medseg.io import load_volume
    from napari_plugin._view import layer_data_from_volume

    if (_SHIPPED / "ct.nii.gz").is_file():
        ct = load_volume(_SHIPPED / "ct.nii.gz")
        organs = load_volume(_SHIPPED / "organs.nii.gz")
        lesions = load_volume(_SHIPPED / "lesions.nii.gz")
        ct = type(ct)(ct.array, ct.affine, "CT", ct.source)
    else:  # installed without the repository's sample_data/: generate the same phantom
        from medseg.phantom import make_phantom

        phantom = make_phantom(seed=0)
        ct, organs, lesions = phantom.ct, phantom.organs, phantom.lesions
    return [
        layer_data_from_volume(ct, "phantom CT", kind="image"),
        layer_data_from_volume(organs, "phantom organs", kind="labels"),
        layer_data_from_volume(lesions, "phantom lesions", kind="labels"),
    ]
