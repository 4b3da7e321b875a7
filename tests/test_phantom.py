"""The synthetic CT phantom: anatomy, HU, exact lesion truth, determinism and the shipped sample."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import cc3d
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import pdist

from medseg.io import load_volume
from medseg.labels import DEFAULT_ORGANS
from medseg.phantom import DEFAULT_SHAPE, GENERATOR_VERSION, make_phantom
from medseg.phantom.__main__ import main as phantom_main
from medseg.phantom._write import write_phantom

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "phantom"
V = {lab.name: lab.value for lab in DEFAULT_ORGANS.foreground}
SMALL = {"shape": (100, 85, 35), "spacing_mm": (4.0, 4.0, 6.0)}  # the same body, 8x fewer voxels


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=0)


def _centroid(ph, value, volume=None) -> np.ndarray:
    volume = ph.organs if volume is None else volume
    return volume.voxel_to_world(np.argwhere(volume.array == value).mean(axis=0))


def test_grid_types_and_geometry(phantom):
    ct, organs, lesions = phantom.ct, phantom.organs, phantom.lesions
    assert ct.shape == DEFAULT_SHAPE and ct.array.dtype == np.int16
    assert organs.array.dtype == np.uint8 and lesions.array.dtype == np.uint8
    assert ct.same_grid(organs) and ct.same_grid(lesions)
    assert ct.orientation == "LPS" and ct.modality == "CT"
    np.testing.assert_allclose(ct.spacing, [2.0, 2.0, 3.0])
    assert ct.voxel_volume_ml == pytest.approx(0.012)
    assert set(np.unique(organs.array)) == set(range(11))
    g = phantom.truth["geometry"]
    np.testing.assert_allclose(g["affine_ras"], ct.affine)
    assert (g["shape"], g["orientation"]) == (list(DEFAULT_SHAPE), "LPS")


def test_organs_lie_where_anatomy_puts_them(phantom):
    c = {name: _centroid(phantom, value) for name, value in V.items()}
    x, y, z = 0, 1, 2  # RAS: +x patient right, +y anterior, +z superior
    assert c["liver"][x] > 40 > -40 > c["spleen"][x]
    assert c["liver"][z] > c["kidney_right"][z] and c["spleen"][y] < c["stomach"][y]
    assert c["kidney_right"][x] > 40 and c["kidney_left"][x] < -40
    assert c["lung_right"][x] > 0 > c["lung_left"][x]
    for lung in ("lung_right", "lung_left"):
        for kidney in ("kidney_right", "kidney_left"):
            assert c[lung][z] > c[kidney][z] + 50
        assert c[lung][y] < c["liver"][y]  # lung bases lie posterior
    assert c["stomach"][x] < 0 and c["stomach"][y] > c["aorta"][y]
    assert c["pancreas"][y] > c["aorta"][y]  # the pancreas crosses in front of the aorta
    # The vertebral column (bone near the midline) lies behind the aorta, which is left of it.
    organs = phantom.organs
    bone = np.argwhere(organs.array == V["bone"])
    bone_ras = organs.voxel_to_world(bone)
    spine = bone_ras[np.abs(bone_ras[:, 0]) < 20]
    assert c["aorta"][x] < 0 and np.median(spine[:, 1]) < c["aorta"][y] - 20
    assert c["aorta"][y] - np.percentile(spine[:, 1], 95) < 25  # close in front of the bodies
    # Volumes in adult ranges (mL).
    ml = {name: row["volume_ml"] for name, row in phantom.truth["organs"].items()}
    assert 900 < ml["liver"] < 2200 and 80 < ml["spleen"] < 400
    assert 70 < ml["kidney_right"] < 250 and 70 < ml["kidney_left"] < 250
    assert 25 < ml["pancreas"] < 120


def test_hu_of_each_tissue(phantom):
    ct, organs = phantom.ct.array, phantom.organs.array
    ranges = {"liver": (90, 125), "spleen": (100, 135), "kidney_right": (130, 200), "kidney_left": (130, 200),
              "pancreas": (70, 110), "aorta": (140, 200), "lung_right": (-900, -700), "lung_left": (-900, -700)}
    for name, (lo, hi) in ranges.items():
        core = ndimage.binary_erosion(organs == V[name], iterations=1)
        assert lo < np.median(ct[core]) < hi, name
    bone = organs == V["bone"]
    assert np.percentile(ct[bone], 95) > 600  # cortical rims
    inner = ndimage.binary_erosion(bone, structure=np.ones((3, 3, 1), bool), iterations=1)
    assert 150 < np.median(ct[inner]) < 450  # cancellous bone
    # Outside the body: air, with noise like CT; and the noise is ~10-15 HU.
    corner = ct[:15, :15, :]
    assert -1010 < corner.mean() < -990 and ct.min() >= -1024
    assert 8 < corner[corner > -1020].std() < 16
    # Fat and muscle in the body wall: sample the abdominal wall in front of the aorta.
    liver_core = ndimage.binary_erosion((organs == V["liver"]) & (phantom.lesions.array == 0), iterations=2)
    assert 8 < ct[liver_core].std() < 20  # homogeneous parenchyma plus noise
    values = phantom.truth["tissue_hu"]
    assert values["fat"] < -60 and 30 < values["muscle"] < 70


def test_lesion_truth_equals_the_voxel_masks(phantom):
    truth, les, organs = phantom.truth, phantom.lesions, phantom.organs
    ids = [row["id"] for row in truth["lesions"]]
    assert ids == list(range(1, les.array.max() + 1)) and truth["lesion_count"] == len(ids) >= 4
    counts = np.bincount(les.array.ravel())
    for row in truth["lesions"]:
        mask = les.array == row["id"]
        assert row["voxels"] == counts[row["id"]] == mask.sum()
        assert row["volume_ml"] == pytest.approx(mask.sum() * les.voxel_volume_ml, abs=1e-6)
        np.testing.assert_allclose(row["centroid_ras_mm"], les.voxel_to_world(np.argwhere(mask).mean(axis=0)),
                                   atol=1e-3)
        np.testing.assert_allclose(row["centroid_lps_mm"], np.array(row["centroid_ras_mm"]) * [-1, -1, 1])
        # Wholly inside its organ, and darker than it (hypodense).
        assert np.all(organs.array[mask] == V[row["organ"]])
        host = (organs.array == V[row["organ"]]) & (les.array == 0)
        assert row["mean_hu"] < phantom.ct.array[host].mean() - 40
        # The longest diameter is the largest distance between any two voxel centres.
        points = les.voxel_to_world(np.argwhere(mask))
        assert row["longest_diameter_mm"] == pytest.approx(pdist(points).max(), abs=1e-3)
        assert row["longest_axial_diameter_mm"] <= row["longest_diameter_mm"] + 1e-9
    organs_hit = {row["organ"] for row in truth["lesions"]}
    assert "liver" in organs_hit and organs_hit & {"spleen", "kidney_left", "kidney_right"}
    liver = [row for row in truth["lesions"] if row["organ"] == "liver"]
    assert all(30 <= row["mean_hu"] <= 60 for row in liver)
    sizes = sorted(row["volume_ml"] for row in liver)
    assert sizes[0] < 1.0 and sizes[-1] > 10.0  # a small and a large one


def test_two_lesions_touch_as_one_component(phantom):
    truth, les = phantom.truth, phantom.lesions.array
    pairs = [row for row in truth["lesions"] if row["touches"]]
    assert [(row["id"], row["touches"]) for row in pairs] == [(2, [3]), (3, [2])]
    components, n = cc3d.connected_components(les > 0, connectivity=26, return_N=True)
    assert n == truth["lesion_components_26"] == truth["lesion_count"] - 1
    assert len(np.unique(components[(les == 2) | (les == 3)])) == 1
    for lesion_id in range(1, les.max() + 1):  # each instance is one 6-connected piece
        assert cc3d.connected_components(les == lesion_id, connectivity=6, return_N=True)[1] == 1


def test_same_seed_same_arrays_other_seed_other_body():
    a = make_phantom(seed=5, **SMALL)
    b = make_phantom(seed=5, **SMALL)
    c = make_phantom(seed=6, **SMALL)
    for name in ("ct", "organs", "lesions"):
        assert getattr(a, name).array.tobytes() == getattr(b, name).array.tobytes()
    assert a.truth == b.truth
    assert not np.array_equal(a.organs.array, c.organs.array)
    assert a.truth["tissue_hu"] != c.truth["tissue_hu"]
    nominal = make_phantom(seed=6, variation=0.0, **SMALL)
    assert nominal.truth["tissue_hu"] == make_phantom(seed=7, variation=0.0, **SMALL).truth["tissue_hu"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_seed_has_the_lesions_the_tests_rely_on(seed):
    ph = make_phantom(seed=seed, **SMALL)
    truth = ph.truth
    assert truth["lesion_count"] >= 4
    assert truth["lesion_components_26"] == truth["lesion_count"] - 1
    assert [row["id"] for row in truth["lesions"] if row["touches"]] == [2, 3]
    for row in truth["lesions"]:
        assert np.all(ph.organs.array[ph.lesions.array == row["id"]] == V[row["organ"]])
    assert all(truth["organs"][name]["voxels"] > 0 for name in V)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="shape"):
        make_phantom(shape=(10, 10))
    with pytest.raises(ValueError, match="seed"):
        make_phantom(seed=-1)


class TestShippedSample:
    """``sample_data/phantom`` (committed; regenerate with ``python -m medseg.phantom sample_data``)."""

    def test_regenerates_identically(self, tmp_path):
        """The committed files are what `python -m medseg.phantom sample_data` writes.

        DICOM, JSON and README are compared byte for byte. The .nii.gz files are compared as
        their gzip header (no time stamp, no file name) and decompressed bytes, since another
        zlib build may compress the same bytes differently.
        """
        assert phantom_main([str(tmp_path), "--seed", "0"]) == 0
        new = tmp_path / "phantom"
        names = sorted(str(p.relative_to(SAMPLE)) for p in SAMPLE.rglob("*") if p.is_file())
        assert names == sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file())
        for name in names:
            old_bytes, new_bytes = (SAMPLE / name).read_bytes(), (new / name).read_bytes()
            if name.endswith(".gz"):
                assert old_bytes[:10] == new_bytes[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + old_bytes[8:10]
                old_bytes, new_bytes = gzip.decompress(old_bytes), gzip.decompress(new_bytes)
            assert hashlib.sha256(old_bytes).digest() == hashlib.sha256(new_bytes).digest(), name

    def test_is_small(self):
        total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
        assert total < 6_000_000

    def test_files_hold_the_phantom(self, phantom):
        assert json.loads((SAMPLE / "organs.json").read_text()) == DEFAULT_ORGANS.to_dict()
        truth = json.loads((SAMPLE / "truth.json").read_text())
        assert truth == json.loads(json.dumps(phantom.truth))
        assert truth["generator_version"] == GENERATOR_VERSION and truth["seed"] == 0
        for name in ("ct", "organs", "lesions"):
            vol = load_volume(SAMPLE / f"{name}.nii.gz")
            assert vol.array.dtype == getattr(phantom, name).array.dtype
            np.testing.assert_array_equal(vol.array, getattr(phantom, name).array)
            np.testing.assert_allclose(vol.affine, phantom.ct.affine, atol=1e-5)
        readme = (SAMPLE / "README.md").read_text()
        assert "python -m medseg.phantom" in readme and "not patient data" in readme

    def test_dicom_series_read_by_simpleitk_equals_ct(self, phantom):
        reader = sitk.ImageSeriesReader()
        names = reader.GetGDCMSeriesFileNames(str(SAMPLE / "ct_dicom"))
        reader.SetFileNames(names)
        image = reader.Execute()
        ct = phantom.ct
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), ct.array)
        np.testing.assert_allclose(image.GetOrigin(), ct.origin_lps, atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), ct.spacing, atol=1e-4)
        np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), ct.direction_lps, atol=1e-6)
        first = pydicom.dcmread(names[0], stop_before_pixels=True)
        assert first.Modality == "CT" and first.PatientID == "MEDSEG-PHANTOM-0"
        assert [float(v) for v in first.ImagePositionPatient] == [-199.0, -169.0, -403.5]
        assert first.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"  # RLE Lossless

    def test_dicom_series_read_by_medseg_equals_ct(self, phantom):
        vol = load_volume(SAMPLE / "ct_dicom")
        np.testing.assert_array_equal(vol.array, phantom.ct.array)
        np.testing.assert_allclose(vol.affine, phantom.ct.affine, atol=1e-4)
        assert vol.orientation == "LPS" and vol.modality == "CT"


def test_cli_refuses_to_overwrite_without_replace(tmp_path, capsys):
    args = [str(tmp_path), "--seed", "2", "--shape", "60", "50", "20", "--spacing", "6", "6", "9"]
    assert phantom_main(args) == 0
    first = (tmp_path / "phantom" / "truth.json").read_text()
    assert phantom_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--replace" in err[0]
    assert phantom_main([*args, "--replace"]) == 0
    assert (tmp_path / "phantom" / "truth.json").read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]
    files = sorted(p.name for p in (tmp_path / "phantom").iterdir())
    assert files == ["README.md", "ct.nii.gz", "ct_dicom", "lesions.nii.gz", "organs.json", "organs.nii.gz",
                     "truth.json"]
    assert len(list((tmp_path / "phantom" / "ct_dicom").iterdir())) == 20


def test_write_phantom_round_trips_through_the_readers(tmp_path):
    ph = make_phantom(seed=3, **SMALL)
    files = write_phantom(ph, tmp_path)
    assert len(files.dicom_files) == SMALL["shape"][2]
    from_dicom = load_volume(files.ct_dicom)
    np.testing.assert_array_equal(from_dicom.array, ph.ct.array)
    np.testing.assert_allclose(from_dicom.affine, ph.ct.affine, atol=1e-4)
    np.testing.assert_array_equal(load_volume(files.lesions).array, ph.lesions.array)
    truth = json.loads(files.truth_json.read_text())
    assert truth["seed"] == 3 and truth["geometry"]["spacing_mm"] == [4.0, 4.0, 6.0]
