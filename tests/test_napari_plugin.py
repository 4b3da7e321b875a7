"""napari plugin without a window: manifest, geometry of layers, reader, writer, case save, worker.

Layers are real napari layer objects (``napari.layers.Labels``), which need no viewer, so the
world placement is napari's own ``data_to_world``. The GUI tests are in ``test_napari_gui.py``.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import CancelledError
from medseg.io import load_volume
from medseg.labels import LabelSet
from medseg.progress import CancelToken
from medseg.volume import Volume
from napari_plugin._geometry import layer_geometry, same_world_grid
from napari_plugin._layers import layer_data_from_volume, looks_like_labels, volume_from_layer
from napari_plugin._reader import get_reader, read
from napari_plugin._worker import TOTAL_STEPS, run_case_steps

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "napari_plugin" / "napari.yaml"
PHANTOM = REPO / "sample_data" / "phantom"


def _napari_layer(layer_data):
    import napari.layers

    data, kwargs, kind = layer_data
    return getattr(napari.layers, kind.capitalize())(data, **kwargs)


def _affine(axcodes: str, spacing, origin, *, rotate_deg: float = 0.0, shear: float = 0.0) -> np.ndarray:
    from nibabel.orientations import axcodes2ornt
    from scipy.spatial.transform import Rotation

    affine = np.zeros((4, 4))
    for axis, (world, sign) in enumerate(axcodes2ornt(tuple(axcodes))):
        affine[int(world), axis] = sign * spacing[axis]
    skew = np.eye(3)
    skew[2, 1] = shear  # gantry tilt: slice positions move along y with k
    affine[:3, :3] = Rotation.from_euler("x", rotate_deg, degrees=True).as_matrix() @ affine[:3, :3] @ skew
    affine[:3, 3] = origin
    affine[3, 3] = 1.0
    return affine


# --- manifest ---------------------------------------------------------------------------------------
def test_manifest_declares_reader_writers_sample_and_widgets_and_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "medseg"
    contributions = manifest.contributions
    assert [r.command for r in contributions.readers] == ["medseg.get_reader"]
    assert {w.command for w in contributions.writers} == {"medseg.write_labels", "medseg.write_case",
                                                          "medseg.write_dicom_seg"}
    assert [s.key for s in contributions.sample_data] == ["phantom"]
    assert {w.display_name for w in contributions.widgets} == {"Segment", "Lesion table", "Save case", "View",
                                                               "Correct", "Review"}
    for command in contributions.commands:
        module, func = command.python_name.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func)), command.python_name
    npe2 = Path(sys.executable).with_name("npe2")
    done = subprocess.run([str(npe2), "validate", "medseg"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "valid" in done.stdout, done.stdout + done.stderr


# --- geometry -----------------------------------------------------------------------------------------
ORIENTATIONS = ["".join(p) for p in itertools.product("RL", "AP", "SI")]
ORIENTATIONS = [a[i] + a[j] + a[k] for a in ORIENTATIONS for i, j, k in itertools.permutations(range(3))]


@pytest.mark.parametrize("axcodes", ["LPS", "RAS", "LAS", "PSR", "ASL", "PIL", "LIP", "SAR", "IRP"])
def test_layer_world_position_equals_the_volume_affine(axcodes):
    """napari's own data_to_world of the layer = the volume's affine at the same voxel, for any storage."""
    rng = np.random.default_rng(len(axcodes) + ord(axcodes[0]))
    shape, spacing = (7, 9, 5), (0.7, 0.9, 5.0)
    affine = _affine(axcodes, spacing, rng.uniform(-200, 200, 3))
    volume = Volume(rng.integers(0, 5, shape).astype(np.uint8), affine, "", label_set=LabelSet({0: "bg", 1: "a"}))
    layer = _napari_layer(layer_data_from_volume(volume, "x", kind="labels"))
    geometry = layer.metadata["medseg"].geometry
    for ijk in ([0, 0, 0], [6, 8, 4], [3, 1, 2], [5, 7, 0]):
        index = geometry.layer_index(ijk)
        np.testing.assert_allclose(layer.data_to_world(index), volume.voxel_to_world(ijk), atol=1e-9)
        assert layer.data[tuple(index.astype(int))] == volume.array[tuple(ijk)]
    np.testing.assert_allclose(layer.scale, [spacing[a] for a in geometry.axes])
    assert np.array_equal(layer.rotate, np.eye(3)) and geometry.exact_in_2d
    back = volume_from_layer(layer)
    assert np.shares_memory(back.array, volume.array) and np.array_equal(back.array, volume.array)
    assert np.array_equal(back.affine, volume.affine) and back.label_set == volume.label_set


def test_every_orientation_and_oblique_or_tilted_grids_round_trip():
    rng = np.random.default_rng(0)
    shape = (4, 5, 6)
    cases = [(codes, 0.0, 0.0) for codes in sorted(set(ORIENTATIONS))] + [("LPS", 6.0, 0.0), ("RAS", 0.0, 0.2),
                                                                          ("PIL", 17.0, 0.1)]
    assert len(cases) == 48 + 3
    for codes, degrees, shear in cases:
        affine = _affine(codes, rng.uniform(0.5, 4, 3), rng.uniform(-100, 100, 3), rotate_deg=degrees, shear=shear)
        geometry = layer_geometry(affine, shape)
        layer = geometry.layer_affine
        for ijk in np.argwhere(np.ones(shape, bool))[::7]:
            np.testing.assert_allclose(layer @ np.r_[geometry.layer_index(ijk), 1], affine @ np.r_[ijk, 1],
                                       atol=1e-9)
        assert (geometry.scale > 0).all() and abs(np.linalg.det(geometry.rotate) - 1) < 1e-9
        assert geometry.exact_in_2d == (degrees == 0 and shear == 0), (codes, degrees, shear)
        if not geometry.exact_in_2d:
            assert "napari has no oblique slicing" in geometry.problem()
    assert abs(layer_geometry(_affine("LPS", (1, 1, 1), (0, 0, 0), rotate_deg=6.0), shape).oblique_deg - 6.0) < 1e-9


def test_same_voxels_stored_in_another_order_are_the_same_world_grid():
    lps = _affine("LPS", (0.8, 0.8, 2.0), (10, 20, 30))
    volume = Volume(np.zeros((6, 7, 8), np.int16), lps)
    las = volume.reoriented("LAS")
    assert not volume.same_grid(las)
    assert same_world_grid(layer_geometry(volume.affine, volume.shape), layer_geometry(las.affine, las.shape))
    moved_affine = lps.copy()
    moved_affine[2, 3] += 246.0  # example_ct_sm vs example_ct: the same array, 246 mm apart
    assert not same_world_grid(layer_geometry(volume.affine, volume.shape), layer_geometry(moved_affine, (6, 7, 8)))


# --- reader -------------------------------------------------------------------------------------------
def test_reader_places_the_phantom_in_world_mm_with_names_and_window():
    assert get_reader(str(PHANTOM / "ct.nii.gz")) is read and get_reader(str(PHANTOM)) is read
    assert get_reader(str(PHANTOM / "README.md")) is None
    ((data, kwargs, kind),) = read(str(PHANTOM / "ct.nii.gz"))
    volume = load_volume(PHANTOM / "ct.nii.gz")
    assert kind == "image" and kwargs["contrast_limits"] == (-160.0, 240.0)  # CT in HU: soft-tissue window
    assert kwargs["scale"] == (2.0, 2.0, 3.0) and data.shape == (200, 170, 70)
    # LPS storage: the layer shows the array flipped in x and y, the translate is voxel (199, 169, 0)'s position.
    np.testing.assert_allclose(kwargs["translate"], volume.voxel_to_world([199, 169, 0]))
    ((_, lkwargs, lkind),) = read(str(PHANTOM / "organs.nii.gz"))
    assert lkind == "labels" and dict(zip(lkwargs["features"]["index"], lkwargs["features"]["class"]))[1] == "liver"
    assert lkwargs["colormap"].map(np.array([1]))[0, :3].tolist() == pytest.approx([0.86, 0.55, 0.40])


def test_a_ct_of_three_or_four_slices_is_not_taken_for_colour(make_volume):
    for slices in (3, 4):
        ct = make_volume(np.full((6, 5, slices), 40, np.int16), modality="CT")
        layer = _napari_layer(layer_data_from_volume(ct, "ct"))
        assert layer.ndim == 3 and not layer.rgb


@pytest.mark.shared_data
def test_nrrd_image_and_label_sit_where_simpleitk_puts_them(shared_data):
    """The reference reader for NRRD is SimpleITK: the value napari's layer holds at the world position
    of a SimpleITK voxel is that voxel's value (LPS -> RAS)."""
    import SimpleITK as sitk

    root = shared_data / "lesions" / "pyradiomics"
    for name in ("brain1_image.nrrd", "brain1_label.nrrd"):
        ((data, kwargs, kind),) = read(str(root / name))
        layer = _napari_layer((data, kwargs, kind))
        image = sitk.ReadImage(str(root / name))
        values = sitk.GetArrayFromImage(image)  # (z, y, x)
        size = image.GetSize()
        rng = np.random.default_rng(0)
        for xyz in [(0, 0, 0), tuple(s - 1 for s in size)] + [tuple(int(rng.integers(0, s)) for s in size)
                                                               for _ in range(20)]:
            lps = np.array(image.TransformIndexToPhysicalPoint(xyz))
            ras = lps * [-1.0, -1.0, 1.0]
            index = np.round(layer.world_to_data(ras)).astype(int)
            assert layer.data[tuple(index)] == values[xyz[2], xyz[1], xyz[0]]
            np.testing.assert_allclose(layer.data_to_world(index), ras, atol=1e-4)
        assert kind == ("labels" if "label" in name else "image")


def test_label_detection(make_volume):
    labels = make_volume(np.zeros((4, 4, 4), np.uint8), modality="")
    ct = make_volume(np.full((4, 4, 4), -1000, np.int16), modality="CT")
    assert looks_like_labels(labels) and not looks_like_labels(ct)
    assert not looks_like_labels(ct, "liver_mask_study")  # a CT series stays an image
    assert looks_like_labels(make_volume(np.zeros((4, 4, 4), np.int16), modality=""), "liver_mask")
    assert layer_data_from_volume(labels, "x")[2] == "labels"


def test_lesion_ids_with_gaps_are_renumbered_and_kept(make_volume):
    ids = np.zeros((6, 6, 6), np.uint32)
    ids[1, 1, 1], ids[4, 4, 4], ids[2, 4, 1] = 70000, 3, 12
    data, kwargs, kind = layer_data_from_volume(make_volume(ids, modality=""), "lesions", kind="lesions")
    info = kwargs["metadata"]["medseg"]
    assert kind == "labels" and data.max() == 3 and data.dtype == np.uint16
    assert info.renumbered == {1: 3, 2: 12, 3: 70000}
    assert int(data[tuple(info.geometry.layer_index([1, 1, 1]).astype(int))]) == 3


# --- writer and case save -----------------------------------------------------------------------------
def test_writer_puts_labels_back_on_the_source_grid_and_never_over_the_source(tmp_path):
    from napari_plugin._writer import write_labels

    source = tmp_path / "organs.nii.gz"
    shutil.copy(PHANTOM / "organs.nii.gz", source)
    shutil.copy(PHANTOM / "organs.json", tmp_path / "organs.json")
    before = source.read_bytes()
    ((data, kwargs, _),) = read(str(source))
    original = load_volume(source)
    for name in ("out.nrrd", "out.mha", "out.nii.gz"):
        out = write_labels(str(tmp_path / name), data, kwargs)
        written = load_volume(out[0])
        assert np.array_equal(written.array, original.array) and np.allclose(written.affine, original.affine)
        assert written.label_set == original.label_set
    assert write_labels(str(source), data, kwargs) == []  # over its own source: refused
    assert source.read_bytes() == before


def test_case_save_keeps_the_proposal_and_records_the_correction(tmp_path):
    from medseg.case import read_case
    from medseg.pipeline import CaseResult
    from napari_plugin._sample_data import phantom_volumes
    from napari_plugin._writer import save_case

    ct, organs, lesions = phantom_volumes()
    from medseg.lesions import instances_from_map, lesion_table

    instances = instances_from_map(lesions)
    proposal = CaseResult(ct, organs, instances, lesion_table(instances, image=ct, organs=organs),
                          provenance={"model": {"name": "phantom-truth"}, "command": "test"})
    layers = [layer_data_from_volume(v.with_array(v.array.copy(), label_set=v.label_set), name, kind=kind)
              for v, name, kind in ((ct, "ct", "image"), (organs, "organs", "labels"), (lesions, "les", "lesions"))]
    for item in layers[1:]:
        item[1]["metadata"]["medseg"].proposal = proposal
    image, labels, les = [(d, k) for d, k, _ in layers]
    index = tuple(labels[1]["metadata"]["medseg"].geometry.layer_index([100, 80, 35]).astype(int))
    old = int(labels[0][index])
    labels[0][index] = 7 if old != 7 else 6  # a correction, written through the layer's view
    les[1]["metadata"]["medseg"].reviewed = {1, 2}
    folder = save_case(tmp_path / "case", labels=labels, lesions=les, image=image, author="dr. test", plots=False)
    case = read_case(folder, verify=True)
    assert case.version == 2 and case.kind == "correction" and case.history[0]["kind"] == "proposal"
    assert case.provenance["model"] == {"name": "phantom-truth"}
    correction = case.provenance["correction"]
    assert correction["author"] == "dr. test" and correction["voxels_changed"] == {"labels": 1, "lesions": 0}
    assert case.provenance["review"]["reviewed_lesions"] == [1, 2]
    assert case.provenance["input"]["sha256"] == _sha256(PHANTOM / "ct.nii.gz")
    assert int(case.labels.array[100, 80, 35]) != old and case.labels.label_set == organs.label_set
    proposal_labels = load_volume(folder / "history" / "v1" / "labels.nii.gz")
    assert int(proposal_labels.array[100, 80, 35]) == old
    assert np.array_equal(case.lesions.array, lesions.array)


def test_case_writer_is_what_napari_calls_for_several_layers(tmp_path):
    from medseg.case import read_case
    from napari_plugin._sample_data import phantom_sample
    from napari_plugin._writer import write_case_folder

    layers = phantom_sample()
    assert write_case_folder(str(tmp_path / "case"), layers) == [str(tmp_path / "case")]
    case = read_case(tmp_path / "case", verify=True)
    assert case.kind == "import" and case.labels.label_set.name_of(1) == "liver"
    assert len(case.lesion_rows) == 6 and case.image_path == PHANTOM / "ct.nii.gz"
    assert write_case_folder(str(tmp_path / "case.tif"), layers) == []  # a case is a folder
    assert not (tmp_path / "case.tif").exists()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the worker generator ----------------------------------------------------------------------------
def _slow_run(source, *, progress, cancel, windows=40, delay=0.01):
    progress(0, 1, "read: x")
    progress(0, 1, "load model")
    for w in range(1, windows + 1):
        time.sleep(delay)
        cancel.raise_if_cancelled("inference")
        progress(w, windows, f"inference: window {w}/{windows}")
    progress(3, 3, "lesions: done")
    return source * 2


def test_worker_steps_add_up_and_return_the_result():
    steps = run_case_steps(_slow_run, 21, cancel=CancelToken())
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as stop:
            result = stop.value
            break
    assert result == 42 and len(seen) == TOTAL_STEPS and [s.step for s in seen] == list(range(1, TOTAL_STEPS + 1))
    assert any(s.stage == "running the network" for s in seen)


def test_worker_stops_the_run_when_napari_asks_and_when_closed():
    stop = threading.Event()
    steps = run_case_steps(_slow_run, 1, cancel=CancelToken(), should_stop=stop.is_set, windows=400)
    next(steps)
    stop.set()  # what worker.quit() sets (activity dock cancel)
    with pytest.raises(StopIteration) as ended:
        while True:
            next(steps)
    assert isinstance(ended.value.value.error, CancelledError)  # returned, not raised into napari's GUI thread
    token = CancelToken()
    steps = run_case_steps(_slow_run, 1, cancel=token, windows=400)
    next(steps)
    steps.close()  # a generator dropped early must not leave the run working
    assert token.cancelled
    assert not any(t.name == "medseg run_case" for t in threading.enumerate())


def test_case_json_is_what_the_reader_takes(tmp_path):
    """A case folder opens as image + labels + lesions, with the case's lesion rows and review."""
    from medseg.case import write_case
    from medseg.lesions import instances_from_map, lesion_table
    from napari_plugin._sample_data import phantom_volumes

    ct, organs, lesions = phantom_volumes()
    table = lesion_table(instances_from_map(lesions), image=ct, organs=organs)
    write_case(tmp_path / "case", labels=organs, lesions=lesions, lesion_table=table, image=ct, plots=False,
               provenance={"review": {"reviewed_lesions": [3]}})
    out = read(str(tmp_path / "case"))
    assert [k["name"] for _, k, _ in out] == ["case image", "case labels", "case lesions"]
    info = out[2][1]["metadata"]["medseg"]
    assert info.reviewed == {3} and [r.id for r in info.lesion_rows] == [r.id for r in table.rows]
    assert info.lesion_rows[0] == table.rows[0]  # JSON round trip of the row: exact
    json.loads((tmp_path / "case" / "case.json").read_text())
