"""Largest-component clean-up: agrees with MONAI's transform, travels in the spec, runs in segment()."""

from __future__ import annotations

from pathlib import Path

import cc3d
import numpy as np
import pytest
import torch

from medseg.inference import segment
from medseg.inference.postprocess import keep_largest_components
from medseg.io import load_volume
from medseg.models import SegmentationModel, resolve_model
from medseg.labels import LabelSet
from medseg.models.networks import build_network
from medseg.models.spec import ModelSpec, NetworkSpec, Preprocessing
from medseg.models.store import save_model

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "phantom"
LABELS = LabelSet({0: "air", 1: "fat", 2: "soft_tissue", 3: "enhanced", 4: "bone"})


def test_keeps_the_largest_piece_of_named_classes_only():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[1:4, 1:4, 1:4] = 1      # 27 voxels: kept
    labels[8:10, 8:10, 8:10] = 1   # 8 voxels: removed
    labels[1:3, 8:10, 1:2] = 2     # class 2 is not named: both pieces stay
    labels[8, 1, 8] = 2
    labels[4, 1:4, 1:4] = 3        # touches class 1's big piece; its own single piece stays
    before = labels.copy()
    cleaned, removed = keep_largest_components(labels, [1, 3, 7])
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert removed == {1: 8, 3: 0}
    assert (cleaned == 1).sum() == 27 and cleaned[8:10, 8:10, 8:10].max() == 0
    assert (cleaned == 2).sum() == (before == 2).sum() and (cleaned == 3).sum() == 9
    assert cleaned.dtype == labels.dtype


def test_same_as_monai_keep_largest_connected_component():
    from monai.transforms import KeepLargestConnectedComponent

    rng = np.random.default_rng(3)
    # Blobby random classes: smoothed noise cut into 4 bands gives many pieces of every class.
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.normal(size=(40, 36, 30)), 2.0)
    labels = np.digitize(field, np.quantile(field, [0.4, 0.6, 0.8, 0.95])).astype(np.uint8)
    for value in range(1, 5):
        assert cc3d.connected_components(labels == value, connectivity=26).max() > 1
    ours, _ = keep_largest_components(labels, [1, 2, 4])
    monai = KeepLargestConnectedComponent(applied_labels=[1, 2, 4], is_onehot=False, independent=True,
                                          connectivity=3)(torch.from_numpy(labels[None].astype(np.int64)))
    np.testing.assert_array_equal(ours, monai[0].numpy())


def test_spec_round_trip_and_unknown_names(tmp_path):
    spec = ModelSpec("m", NetworkSpec("unet", {"channels": [4, 8], "strides": [2]}), LABELS,
                     keep_largest=["bone", "enhanced"])
    data = spec.to_dict()
    assert data["postprocessing"] == {"keep_largest_component": ["bone", "enhanced"]}
    assert ModelSpec.from_dict(data) == spec
    folder = save_model(spec, build_network(spec.network, len(LABELS)), tmp_path / "m")
    assert resolve_model(folder).spec.keep_largest == ("bone", "enhanced")
    old = dict(data)
    del old["postprocessing"]  # specs written before the clean-up existed load without one
    assert ModelSpec.from_dict(old).keep_largest == ()
    with pytest.raises(ValueError, match="liver"):
        ModelSpec("m", spec.network, LABELS, keep_largest=("liver",))


class HUBands(torch.nn.Module):
    """Argmax = HU band of the voxel (air | fat | soft tissue | enhanced | bone) at -1000..1000 window."""

    def __init__(self, edges_hu=(-500, -100, 30, 200)) -> None:
        super().__init__()
        t = [(e + 1000.0) / 2000.0 for e in edges_hu]
        self.conv = torch.nn.Conv3d(1, len(edges_hu) + 1, 1)
        with torch.no_grad():
            for c in range(len(edges_hu) + 1):
                self.conv.weight[c].fill_(400.0 * c)
                self.conv.bias[c] = -400.0 * sum(t[:c])

    def forward(self, x):
        return self.conv(x)


@pytest.mark.slow
def test_segment_applies_the_models_clean_up():
    image = load_volume(SAMPLE / "ct.nii.gz")
    pre = Preprocessing(orientation="RAS", spacing_mm=(3.0, 3.0, 3.0), roi_size=(32, 32, 32))
    spec = ModelSpec("bands", NetworkSpec("unet", {"channels": [4, 8], "strides": [2]}), LABELS, pre,
                     keep_largest=("bone",))
    model = SegmentationModel.from_network(spec, HUBands().eval())
    raw = segment(image, model, device="cpu", postprocess=False)
    clean = segment(image, model, device="cpu")
    bone_pieces = cc3d.connected_components(raw.labels.array == 4, connectivity=26)
    sizes = np.bincount(bone_pieces.ravel())[1:]
    assert len(sizes) > 1  # noise and ribs make many bone pieces: the clean-up has work to do
    assert cc3d.connected_components(clean.labels.array == 4, connectivity=26).max() == 1
    assert (clean.labels.array == 4).sum() == sizes.max()
    removed = int(sizes.sum() - sizes.max())
    assert clean.provenance["postprocessing"] == {"keep_largest_component": ["bone"],
                                                  "removed_voxels": {"bone": removed}}
    assert (clean.labels.array == 0).sum() == (raw.labels.array == 0).sum() + removed
    others = raw.labels.array != 4
    np.testing.assert_array_equal(clean.labels.array[others], raw.labels.array[others])
    assert raw.provenance["postprocessing"] == {}
    assert "postprocess" in clean.timings


@pytest.mark.slow
def test_in_memory_model_without_spec_clean_up_is_unchanged():
    image = load_volume(SAMPLE / "ct.nii.gz")
    pre = Preprocessing(orientation="RAS", spacing_mm=(3.0, 3.0, 3.0), roi_size=(32, 32, 32))
    spec = ModelSpec("bands", NetworkSpec("unet", {"channels": [4, 8], "strides": [2]}), LABELS, pre)
    model = SegmentationModel.from_network(spec, HUBands().eval())
    a = segment(image, model, device="cpu")
    b = segment(image, model, device="cpu", postprocess=False)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
