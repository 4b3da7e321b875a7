"""DATA discovery (MSD, nnU-Net v2, pairs, corrected cases) and the bad inputs a user can give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.labels import DEFAULT_ORGANS, LabelSet
from medseg.models.spec import Preprocessing
from medseg.training.datasets import discover_cases, read_label_names
from medseg.training.transforms import channel_lookup, load_case


def _write(path: Path, array: np.ndarray, affine=None) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine), str(path))
    return path


def _pair(image_path: Path, label_path: Path, *, values=(0, 1, 2), shape=(20, 18, 12), affine=None):
    image = np.full(shape, -1000, dtype=np.int16)
    image[4:16, 4:14, 2:10] = 40
    label = np.zeros(shape, dtype=np.uint8)
    label[5:10, 5:12, 3:9] = values[1]
    if len(values) > 2:
        label[11:15, 5:12, 3:9] = values[2]
    _write(image_path, image, affine)
    _write(label_path, label, affine)


def test_msd_layout(tmp_path):
    for case in ("la_003", "la_007"):
        _pair(tmp_path / "imagesTr" / f"{case}.nii.gz", tmp_path / "labelsTr" / f"{case}.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "Toy", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "spleen"},
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("la_003", "la_007")],
        "test": ["./imagesTs/la_010.nii.gz"]}))
    found = discover_cases(tmp_path)
    assert found.layout == "msd" and found.modality == "CT"
    assert [c.name for c in found.cases] == ["la_003", "la_007"]
    assert found.cases[0].label_names == {0: "background", 1: "liver", 2: "spleen"}
    assert found.class_names == ("background", "liver", "spleen")


def test_nnunet_v2_layout_and_region_labels_refused(tmp_path):
    _pair(tmp_path / "imagesTr" / "case_001_0000.nii.gz", tmp_path / "labelsTr" / "case_001.nii.gz")
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "tumor": 2},
            "numTraining": 1, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    found = discover_cases(tmp_path)
    assert found.layout == "nnunet"
    assert found.cases[0].image.endswith("case_001_0000.nii.gz")
    assert found.cases[0].label_names == {0: "background", 1: "kidney", 2: "tumor"}
    meta["labels"] = {"background": 0, "kidney": [1, 2], "tumor": 2}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="region"):
        discover_cases(tmp_path)


def test_two_channel_data_sets_are_refused(tmp_path):
    _pair(tmp_path / "imagesTr" / "c_0000.nii.gz", tmp_path / "labelsTr" / "c.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2", "1": "ADC"},
                                                       "labels": {"background": 0, "prostate": 1}}))
    with pytest.raises(InputError, match="2 input channels"):
        discover_cases(tmp_path)


def test_pairs_layouts(tmp_path):
    _pair(tmp_path / "a" / "images" / "x1.nii.gz", tmp_path / "a" / "labels" / "x1.nii.gz")
    (tmp_path / "a" / "labels.json").write_text('{"0": "background", "1": "liver", "2": "spleen"}')
    found = discover_cases(tmp_path / "a")
    assert found.layout == "pairs" and [c.name for c in found.cases] == ["x1"]
    _pair(tmp_path / "b" / "p1_image.nii.gz", tmp_path / "b" / "p1_seg.nii.gz")
    _pair(tmp_path / "b" / "p2_ct.nii.gz", tmp_path / "b" / "p2_label.nii.gz")
    (tmp_path / "b" / "labels.json").write_text('[{"value": 1, "name": "liver"}, {"value": 2, "name": "spleen"}]')
    found = discover_cases(tmp_path / "b")
    assert [c.name for c in found.cases] == ["p1", "p2"]
    assert found.cases[1].label_names[2] == "spleen" and found.cases[1].label_names[0] == "background"


def test_corrected_cases_with_provenance(tmp_path):
    for name, source in (("case_a", None), ("case_b", "original.nii.gz")):
        folder = tmp_path / name
        _pair(folder / ("image.nii.gz" if source is None else source), folder / "labels.nii.gz")
        (folder / "labels.json").write_text('{"0": "background", "1": "liver", "2": "lesion"}')
        prov = {"source_image": source} if source else {}
        prov.update({"model": "medseg-default-ct-3mm 1.0.0", "corrected_by": "tester",
                     "saved_at": "2026-11-24T12:00:00Z", "reviewed_slices": [3, 4, 5]})
        (folder / "provenance.json").write_text(json.dumps(prov))
    found = discover_cases(tmp_path)
    assert found.layout == "corrected"
    assert [c.name for c in found.cases] == ["case_a", "case_b"]
    assert found.cases[1].image.endswith("original.nii.gz")
    assert found.cases[0].provenance["reviewed_slices"] == [3, 4, 5]
    # One case folder alone is a data set too.
    assert discover_cases(tmp_path / "case_a").cases[0].name == "case_a"


def test_images_without_labels_are_named(tmp_path):
    _pair(tmp_path / "c1_image.nii.gz", tmp_path / "c1_label.nii.gz")
    _write(tmp_path / "c2_image.nii.gz", np.zeros((8, 8, 8), np.int16))
    (tmp_path / "labels.json").write_text('{"1": "liver", "2": "spleen"}')
    with pytest.raises(InputError, match=r"c2_image.nii.gz: 1 image\(s\) have no label map \(c2\)"):
        discover_cases(tmp_path)


def test_msd_image_without_label_is_named(tmp_path):
    _pair(tmp_path / "imagesTr" / "a.nii.gz", tmp_path / "labelsTr" / "a.nii.gz")
    _write(tmp_path / "imagesTr" / "b.nii.gz", np.zeros((8, 8, 8), np.int16))
    (tmp_path / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "liver"}, "modality": {"0": "CT"},
        "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}))
    with pytest.raises(InputError, match=r"imagesTr: 1 image\(s\) have no label map: b.nii.gz"):
        discover_cases(tmp_path)


def test_empty_and_missing_data_folders(tmp_path):
    with pytest.raises(InputError, match="holds no training cases"):
        discover_cases(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        discover_cases(tmp_path / "nope")
    _pair(tmp_path / "c1_image.nii.gz", tmp_path / "c1_label.nii.gz")
    with pytest.raises(InputError, match="no labels.json"):
        discover_cases(tmp_path)


def test_label_on_another_grid_names_the_pair(tmp_path):
    shifted = np.diag([2.0, 2.0, 3.0, 1.0])
    shifted[:3, 3] = (0.0, 0.0, 30.0)
    _pair(tmp_path / "c1_image.nii.gz", tmp_path / "c1_label.nii.gz")
    _write(tmp_path / "c1_label.nii.gz", np.zeros((20, 18, 12), np.uint8), shifted)
    (tmp_path / "labels.json").write_text('{"1": "liver", "2": "spleen"}')
    case = discover_cases(tmp_path).cases[0]
    labels = LabelSet({0: "background", 1: "liver", 2: "spleen"})
    with pytest.raises(InputError) as err:
        load_case(case, Preprocessing(spacing_mm=(4, 4, 4), roi_size=(16, 16, 16)), labels)
    text = str(err.value)
    assert "c1_label.nii.gz: is on another grid than its image" in text and "c1_image.nii.gz" in text
    assert "origin [0.0, 0.0, 30.0]" in text


def test_label_values_missing_from_names(tmp_path):
    _pair(tmp_path / "c1_image.nii.gz", tmp_path / "c1_label.nii.gz", values=(0, 1, 7))
    (tmp_path / "labels.json").write_text('{"1": "liver", "2": "spleen"}')
    case = discover_cases(tmp_path).cases[0]
    with pytest.raises(InputError, match=r"c1_label.nii.gz: has label values \[7\] that have no class name"):
        load_case(case, Preprocessing(spacing_mm=(4, 4, 4), roi_size=(16, 16, 16)),
                  LabelSet({0: "background", 1: "liver", 2: "spleen"}))


def test_loaded_case_is_on_the_inference_grid_with_channels(tmp_path):
    from medseg.inference.preprocess import plan_grid
    from medseg.io import load_volume

    _pair(tmp_path / "c1_image.nii.gz", tmp_path / "c1_label.nii.gz", values=(0, 3, 9))
    (tmp_path / "labels.json").write_text('{"3": "spleen", "9": "liver"}')
    case = discover_cases(tmp_path).cases[0]
    pre = Preprocessing(spacing_mm=(4, 4, 3), roi_size=(16, 16, 16), crop_foreground=False)
    item = load_case(case, pre, DEFAULT_ORGANS)
    grid = plan_grid(load_volume(case.image), pre)  # the grid inference will run on
    assert item["image"].shape[1:] == grid.shape and item["label"].shape[1:] == grid.shape
    np.testing.assert_allclose(item["affine"], grid.affine, atol=1e-6)
    assert set(np.unique(item["label"])) == {0, DEFAULT_ORGANS.value_of("spleen"), DEFAULT_ORGANS.value_of("liver")}
    assert item["annotated"].tolist() == [True, True, True] + [False] * 8
    # The spleen block (source voxels i 5..9, j 5..11, k 3..8 of 2x2x3 mm) keeps its place: its
    # centroid moves by less than half a model voxel, its volume by less than one layer of voxels.
    spleen = np.argwhere(item["label"][0] == DEFAULT_ORGANS.value_of("spleen"))
    centre = item["affine"][:3, :3] @ spleen.mean(axis=0) + item["affine"][:3, 3]
    np.testing.assert_allclose(centre, [7.0 * 2, 8.0 * 2, 5.5 * 3], atol=2.0)
    assert len(spleen) * 4 * 4 * 3 == pytest.approx(5 * 7 * 6 * 12, rel=0.4)


def test_channel_lookup_maps_totalsegmentator_names_through_the_class_map():
    names = {0: "background", 5: "liver", 10: "lung_upper_lobe_left", 13: "lung_middle_lobe_right",
             31: "vertebrae_L1", 18: "small_bowel"}
    lut = channel_lookup(names, DEFAULT_ORGANS)
    assert lut[5] == DEFAULT_ORGANS.channel_of(1)
    assert lut[10] == DEFAULT_ORGANS.value_of("lung_left") and lut[13] == DEFAULT_ORGANS.value_of("lung_right")
    assert lut[31] == DEFAULT_ORGANS.value_of("bone") and lut[18] == 0


def test_read_label_names_forms(tmp_path):
    path = tmp_path / "l.json"
    path.write_text('{"labels": {"background": 0, "liver": 1}}')
    assert read_label_names(path) == {0: "background", 1: "liver"}
    path.write_text('{"0": "background", "1": "liver", "2": "Liver"}')
    with pytest.raises(InputError, match="repeat"):
        read_label_names(path)
