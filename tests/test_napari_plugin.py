"""napari plugin: manifest, reader in world mm, and what a person sees in the axial view."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_plugin._reader import get_reader
from napari_plugin._view import layer_data_from_volume, looks_like_labels

MANIFEST = Path(__file__).resolve().parents[1] / "napari_plugin" / "napari.yaml"


def _ct_with_marker(path: Path) -> Path:
    """A 'CT' stored LPS (like DICOM) with a bright marker on the patient's right-anterior side."""
    array = np.full((40, 40, 10), -1000, np.int16)
    array[5:35, 5:35, :] = 40  # body
    # LPS storage: i grows towards the patient's Left, j towards Posterior. Right-anterior is
    # therefore small i and small j.
    array[8:14, 8:14, :] = 1000
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    affine[:3, 3] = [40.0, 40.0, -15.0]
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def test_manifest_is_valid_and_commands_import():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "medseg"
    for command in manifest.contributions.commands:
        assert callable(command.exec) or command.python_name  # resolvable python_name
        module, func = command.python_name.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))


def test_reader_places_layers_in_world_mm(tmp_path):
    from medseg.io import load_volume

    path = _ct_with_marker(tmp_path / "ct.nii.gz")
    reader = get_reader(str(path))
    assert reader is not None
    ((data, kwargs, kind),) = reader(str(path))
    vol = load_volume(path)
    assert kind == "image"
    np.testing.assert_array_equal(kwargs["affine"], vol.affine)
    assert kwargs["contrast_limits"] == (-160.0, 240.0)
    assert get_reader(str(tmp_path / "notes.txt")) is None


def test_label_detection(make_volume):
    labels = make_volume(np.zeros((4, 4, 4), np.uint8), modality="")
    ct = make_volume(np.full((4, 4, 4), -1000, np.int16), modality="CT")
    assert looks_like_labels(labels) and not looks_like_labels(ct)
    assert looks_like_labels(ct, "liver_mask")
    assert layer_data_from_volume(labels, "x")[2] == "labels"


@pytest.mark.gui
def test_axial_view_is_radiological(tmp_path, make_napari_viewer):
    """Anterior at the top, the patient's right on the screen's left (what a radiologist expects)."""
    from napari_plugin import show_axial

    path = _ct_with_marker(tmp_path / "ct.nii.gz")
    viewer = make_napari_viewer(show=True)
    viewer.open(str(path), plugin="medseg")
    show_axial(viewer)
    layer = viewer.layers[0]
    # World coordinates are RAS mm: voxel (10, 10, 5) is 20 mm right and 20 mm anterior of (20, 20).
    np.testing.assert_allclose(layer.data_to_world((10, 10, 5)), [20.0, 20.0, 0.0])
    shot = viewer.screenshot(canvas_only=True, flash=False)
    grey = shot[..., :3].mean(axis=2)
    bright = np.argwhere(grey > 0.9 * grey.max())
    row, col = bright.mean(axis=0)
    body = np.argwhere(grey > 0.2 * grey.max())
    top, left = body.min(axis=0)
    bottom, right = body.max(axis=0)
    # The marker sits in the top-left quarter of the body.
    assert row < (top + bottom) / 2 and col < (left + right) / 2, (row, col, top, bottom, left, right)
