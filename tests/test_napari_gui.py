"""The review workstation under Xvfb: napari's ``make_napari_viewer`` driving the real widgets.

Geometry is checked against independent readers (nibabel for NIfTI, pydicom for DICOM): the value
napari shows at a world position is the value the file has there. Screens are checked by their
pixels. Models are tiny random UNets where the test is about the GUI; the shipped default model
runs once (the save flow), as a user would run it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.io import load_volume, save_volume
from medseg.io._dicom_write import write_dicom_series
from napari_plugin._layers import layer_info, lesion_colour
from napari_plugin._view import layer_slice_index, show_plane
from napari_plugin._worker import TOTAL_STEPS

pytestmark = pytest.mark.gui

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"
DOCS_IMG = REPO / "docs" / "img"


def _process(qtbot, ms: int = 50) -> None:
    qtbot.wait(ms)


def _medseg_layers(viewer):
    return [layer for layer in viewer.layers if layer_info(layer) is not None]


def _check_against_reference(layer, values: np.ndarray, affine_ras: np.ndarray, voxels) -> None:
    """At the world position of each reference voxel the layer holds the reference value, and the
    layer's own data_to_world of that index is the reference affine at the voxel."""
    for ijk in voxels:
        world = affine_ras[:3, :3] @ np.asarray(ijk, float) + affine_ras[:3, 3]
        index = np.round(layer.world_to_data(world)).astype(int)
        assert layer.data[tuple(index)] == values[tuple(ijk)], (ijk, index)
        np.testing.assert_allclose(layer.data_to_world(index), world, atol=1e-3)


def _voxels(shape, n=10, seed=0):
    rng = np.random.default_rng(seed)
    corners = [[0, 0, 0], [s - 1 for s in shape], [shape[0] - 1, 0, shape[2] - 1]]
    return corners + [tuple(int(rng.integers(0, s)) for s in shape) for _ in range(n)]


def _pydicom_reference(folder: Path):
    """(values, affine RAS) of a DICOM series read slice by slice with pydicom alone."""
    import pydicom

    slices = [pydicom.dcmread(str(f)) for f in sorted(folder.iterdir()) if f.is_file()]
    iop = np.array([float(v) for v in slices[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
    rows, cols = float(slices[0].PixelSpacing[0]), float(slices[0].PixelSpacing[1])
    first = np.array([float(v) for v in slices[0].ImagePositionPatient])
    last = np.array([float(v) for v in slices[-1].ImagePositionPatient])
    step = (last - first) / max(len(slices) - 1, 1)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = iop[:3] * cols, iop[3:] * rows, step, first
    values = np.stack([ds.pixel_array.T * float(getattr(ds, "RescaleSlope", 1)) +
                       float(getattr(ds, "RescaleIntercept", 0)) for ds in slices], axis=-1)
    return values, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


# --- opening real and rotated acquisitions -------------------------------------------------------------
@pytest.mark.shared_data
def test_real_ct_dicom_series_and_nifti_with_their_labels(make_napari_viewer, shared_data, notes):
    viewer = make_napari_viewer()
    root = shared_data / "totalsegmentator"
    # A JPEG 2000 CT series (read LPS) and the label map dcm2niix-based TotalSegmentator wrote for it (LAS).
    (ct,) = viewer.open(str(root / "example_ct_dicom"), plugin="medseg")
    (seg,) = viewer.open(str(root / "example_seg_dicom.nii.gz"), plugin="medseg")
    assert layer_info(ct).role == "image" and layer_info(seg).role == "labels"
    values, affine = _pydicom_reference(root / "example_ct_dicom")
    _check_against_reference(ct, values, affine, _voxels(values.shape))
    reference = nib.load(str(root / "example_seg_dicom.nii.gz"))
    _check_against_reference(seg, np.asarray(reference.dataobj), reference.affine, _voxels(reference.shape, seed=1))
    assert ct.data.shape == seg.data.shape and np.allclose(ct.translate, seg.translate)  # one lattice in napari
    # A NIfTI stored LPS (x and y flipped against RAS) and its labels.
    viewer.layers.clear()
    (mr,) = viewer.open(str(root / "example_mr_sm.nii.gz"), plugin="medseg")
    (mr_seg,) = viewer.open(str(root / "example_seg_mr.nii.gz"), plugin="medseg")
    for layer, name in ((mr, "example_mr_sm.nii.gz"), (mr_seg, "example_seg_mr.nii.gz")):
        reference = nib.load(str(root / name))
        _check_against_reference(layer, np.asarray(reference.dataobj), reference.affine, _voxels(reference.shape))
    assert not [n for n in notes if "error" in n[0].lower()]


def test_sagittal_and_coronal_acquisitions_show_the_same_anatomy(make_napari_viewer, tmp_path, notes):
    """A CT written as sagittal and coronal DICOM series (medseg's writer) and as NIfTI stored PSR and
    ASL opens without error, at the reference reader's positions, and its axial view is the axial
    view of the original, pixel for pixel."""
    from napari_plugin._sample_data import phantom_volumes

    ct = phantom_volumes()[0].crop((slice(40, 160), slice(30, 140), slice(20, 50)))
    stored = {}
    for codes, kind in (("PIL", "dicom"), ("LIP", "dicom"), ("PSR", "nifti"), ("ASL", "nifti")):
        reoriented = ct.reoriented(codes)
        if kind == "dicom":
            path = tmp_path / f"ct_{codes}"
            write_dicom_series(reoriented, path, uid_seed=codes, series_description=f"CT {codes}")
        else:
            path = save_volume(reoriented, tmp_path / f"ct_{codes}.nii.gz")
        stored[codes] = path
    original = save_volume(ct, tmp_path / "ct_lps.nii.gz")
    viewer = make_napari_viewer(show=True)
    (reference_layer,) = viewer.open(str(original), plugin="medseg")
    layers = {}
    for codes, path in stored.items():
        (layer,) = viewer.open(str(path), plugin="medseg")
        layers[codes] = layer
        geometry = layer_info(layer).geometry
        assert geometry.exact_in_2d and (not path.is_dir() or layer_info(layer).source.series_description == f"CT {codes}")
        if path.is_dir():
            values, affine = _pydicom_reference(path)
        else:
            image = nib.load(str(path))
            values, affine = np.asarray(image.dataobj), image.affine
        # DICOM stacks slices along the normal of its rows and columns, so k of a PIL-written series reads R.
        n = 2 if path.is_dir() else 3
        assert "".join(nib.aff2axcodes(affine))[:n] == codes[:n]
        _check_against_reference(layer, values, affine, _voxels(values.shape))
    for plane in ("axial", "coronal", "sagittal"):
        show_plane(viewer, plane)
        viewer.dims.point = tuple(ct.voxel_to_world([60, 55, 15]))
        for layer in layers.values():
            layer.visible = False
        reference_layer.visible = True
        expected = viewer.screenshot(canvas_only=True, flash=False)
        assert expected[..., :3].std() > 10  # the body is on screen
        reference_layer.visible = False
        for codes, layer in layers.items():
            layer.visible = True
            shot = viewer.screenshot(canvas_only=True, flash=False)
            layer.visible = False
            same = np.all(shot == expected, axis=-1).mean()
            assert same > 0.999, (plane, codes, same)
    assert not [n for n in notes if "error" in n[0].lower()]


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")  # napari's own words for what we announce
def test_oblique_scan_is_announced_and_kept_exact_in_world(make_napari_viewer, shared_data, notes):
    viewer = make_napari_viewer()
    path = shared_data / "dicom_with_reference" / "dcm_qa_ts" / "In" / "1.dcm"
    (layer,) = viewer.open(str(path), plugin="medseg")
    info = layer_info(layer)
    assert not info.geometry.exact_in_2d and 6.0 < info.geometry.oblique_deg < 6.3  # IOP (1,0,0, 0,.9942,-.108)
    assert any("oblique by 6.2" in message and "napari has no oblique slicing" in message for _, message in notes)
    volume = load_volume(path)
    for ijk in _voxels(volume.shape):
        np.testing.assert_allclose(layer.data_to_world(info.geometry.layer_index(ijk)), volume.voxel_to_world(ijk),
                                   atol=1e-6)


def test_series_picker_opens_the_chosen_series(make_napari_viewer, tmp_path):
    from napari_plugin._sample_data import phantom_volumes
    from napari_plugin._widgets.series import SeriesPicker

    ct = phantom_volumes()[0]
    write_dicom_series(ct.crop((slice(50, 90), slice(50, 90), slice(0, 8))), tmp_path / "study" / "a", uid_seed=1,
                       series_number=2, series_description="small")
    write_dicom_series(ct.crop((slice(0, 60), slice(0, 50), slice(0, 6))), tmp_path / "study" / "b", uid_seed=1,
                       series_number=3, series_description="other")
    viewer = make_napari_viewer()
    assert viewer.open(str(tmp_path / "study"), plugin="medseg") == []
    (picker,) = [w for w in viewer.window.dock_widgets.values() if isinstance(w, SeriesPicker)]
    assert len(picker.infos) == 2
    picker.series.value = [info for info in picker.infos if info.description == "other"]
    picker.open_button.clicked.emit()
    (layer,) = viewer.layers
    assert layer.data.shape == (60, 50, 6) and "other" in layer_info(layer).source.series_description


# --- painting in millimetres ---------------------------------------------------------------------------
def test_3d_brush_paints_the_radius_in_mm_along_every_axis(make_napari_viewer):
    """0.7 x 0.7 mm pixels and 2.5 mm slices, stored sagittal (PSR): a 3D brush of radius 5 mm covers
    5 mm in x, y and z, not 5 mm worth of slices (what a spacing hidden in ``affine`` gave)."""
    from medseg.labels import LabelSet
    from medseg.volume import Volume
    from napari_plugin._layers import add_layers, layer_data_from_volume

    affine = np.array([[0, 0, 2.5, -40.0], [-0.7, 0, 0, 30.0], [0, 0.7, 0, -20.0], [0, 0, 0, 1]])  # PSR
    volume = Volume(np.zeros((80, 90, 20), np.uint8), affine, label_set=LabelSet({0: "background", 1: "liver"}))
    viewer = make_napari_viewer()
    (layer,) = add_layers(viewer, [layer_data_from_volume(volume, "labels", kind="labels")])
    radius_mm = 5.0
    layer.n_edit_dimensions = 3
    layer.brush_size = 2 * radius_mm / min(layer.scale)  # napari's brush size is in the finest axis' voxels
    centre = volume.voxel_to_world([40, 45, 10])
    layer.paint(layer.world_to_data(centre), 1)
    painted = np.argwhere(volume.array == 1)  # written through the layer's view into the volume
    assert len(painted) > 100
    reach = np.abs(volume.voxel_to_world(painted) - centre).max(axis=0)
    spacing_along_world = np.abs(affine[:3, :3]).max(axis=1)  # x: 2.5 mm, y and z: 0.7 mm
    assert np.all(reach <= radius_mm + 0.5 * spacing_along_world.min() + 1e-6), reach
    assert np.all(reach >= radius_mm - spacing_along_world), (reach, spacing_along_world)


# --- segmentation in the worker --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two tiny random UNets with the default classes: a fast one, and a slow one (1.5 mm, many windows)."""
    import torch

    from medseg.labels import DEFAULT_ORGANS
    from medseg.models.networks import build_network, default_network
    from medseg.models.spec import ModelSpec, Preprocessing
    from medseg.models.store import save_model

    labels = DEFAULT_ORGANS.extended(["lesion"])
    folders = {}
    for name, spacing in (("fast", 8.0), ("slow", 1.5)):
        torch.manual_seed(0)
        spec = ModelSpec(f"gui-tiny-{name}", default_network("unet", size="tiny"), labels,
                         Preprocessing(spacing_mm=(spacing,) * 3, roi_size=(32, 32, 32), overlap=0.25))
        folders[name] = save_model(spec, build_network(spec.network, len(labels)),
                                   tmp_path_factory.mktemp("models") / name)
    return folders


class _LoopWatch:
    """Ticks of a 10 ms timer on the GUI thread: the longest gap is the longest the loop was blocked."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def longest_gap_ms(self, start: float, stop: float) -> float:
        return self.longest_gap(start, stop)[0]

    def longest_gap(self, start: float, stop: float) -> tuple[float, float]:
        """(longest gap in ms, when it ended)."""
        ticks = [start, *[t for t in self.ticks if start <= t <= stop], stop]
        gaps = np.diff(ticks)
        return float(gaps.max() * 1000), ticks[int(np.argmax(gaps)) + 1]


@pytest.mark.slow
def test_segment_runs_in_the_worker_then_a_second_run_is_cancelled(make_napari_viewer, qtbot, tiny_models, notes,
                                                                     monkeypatch, tmp_path):
    from medseg import models
    from medseg.case import read_case

    loads = []
    original_load = models._load
    monkeypatch.setattr(models, "_load", lambda *a, **k: loads.append(a[0]) or original_load(*a, **k))
    viewer = make_napari_viewer()
    viewer.open_sample("medseg", "phantom")
    for layer in viewer.layers[1:]:
        viewer.layers.remove(layer)
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "Segment")
    widget.model.value = "model folder or bundle"
    widget.model_folder.value = str(tiny_models["fast"])
    widget.device.value = "cpu"
    widget.lesions.value = False
    qtbot.waitUntil(lambda: widget.ready, timeout=120000)  # PyTorch and MONAI imported in the background
    watch = _LoopWatch()
    watch.timer.start()
    # The same loop idle for 2 s: on a shared 2-core machine the OS alone delays it by tens of ms.
    idle_start = time.perf_counter()
    qtbot.wait(2000)
    idle = watch.longest_gap_ms(idle_start, time.perf_counter())
    for run in range(2):  # the second run reuses the loaded model, and writes its proposal as a case
        if run == 1:
            widget.output.value = str(tmp_path / "case")
        progress = []
        widget.run_button.clicked.emit()
        worker = widget.worker
        worker.yielded.connect(lambda p, progress=progress: progress.append((time.perf_counter(), p)))
        started = time.perf_counter()
        qtbot.waitUntil(lambda: not widget.running, timeout=60000)
        assert progress and progress[-1][1].step == TOTAL_STEPS and progress[-1][1].stage == "done"
        gap, when = watch.longest_gap(started, progress[-1][0])
        stage = next((p.stage for t, p in reversed(progress) if t <= when), "starting")
        print(f"event loop: longest gap {gap:.0f} ms while the model ran ({stage}), {idle:.0f} ms idle")
        assert gap < 100 + idle, f"event loop blocked {gap:.0f} ms while {stage} ({idle:.0f} ms when idle)"
        assert [layer.name for layer in viewer.layers][-1] == "phantom CT organs" + ("" if run == 0 else " [1]")
    assert len(loads) == 1
    case = read_case(tmp_path / "case", verify=True)
    assert case.kind == "proposal" and case.provenance["model"]["name"] == "gui-tiny-fast"
    assert layer_info(viewer.layers[-1]).case_path == str(tmp_path / "case")
    assert np.array_equal(case.labels.array, layer_info(viewer.layers[-1]).geometry.to_volume(viewer.layers[-1].data))
    widget.output.value = ""
    organs = viewer.layers[-1]
    assert layer_info(organs).label_set.name_of(1) == "liver" and organs.data.shape == viewer.layers[0].data.shape
    assert widget.add_layers_s < 2.0  # napari's own set-up of one label layer: ~0.2-0.5 s on 2 cores
    # A second model, slow: cancel it while the network runs.
    widget.model_folder.value = str(tiny_models["slow"])
    n_layers = len(viewer.layers)
    widget.run_button.clicked.emit()
    started = time.perf_counter()
    qtbot.waitUntil(lambda: widget.last_progress is not None and widget.last_progress.stage == "running the network"
                    and widget.last_progress.step > 5, timeout=60000)
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=30000)
    stopped = time.perf_counter()
    assert len(viewer.layers) == n_layers and widget.status.value.startswith("cancelled")
    assert any("cancelled" in message for _, message in notes)
    assert watch.longest_gap_ms(started, stopped) < 100 + idle
    assert stopped - started < 30
    viewer.dims.set_point(2, float(viewer.dims.range[2].start))  # still usable
    (added,) = viewer.open(str(PHANTOM / "organs.nii.gz"), plugin="medseg")
    assert layer_info(added).role == "labels"
    watch.timer.stop()


def test_segment_widget_names_the_option_in_its_errors(make_napari_viewer, tmp_path, notes, qtbot):
    viewer = make_napari_viewer()
    viewer.open(str(PHANTOM / "ct.nii.gz"), plugin="medseg")
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "Segment")
    widget.model.value = "model folder or bundle"
    shown = lambda w: not w.native.isHidden()
    assert shown(widget.trust_bundle) and not shown(widget.bundle_warning)
    widget.trust_bundle.value = True
    assert shown(widget.bundle_warning) and "code" in widget.bundle_warning.value
    widget.trust_bundle.value = False
    widget.model_folder.value = str(tmp_path / "no_such_model")
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=120000)  # behind PyTorch's import on a busy machine
    errors = [message for severity, message in notes if "error" in severity.lower()]
    assert errors and errors[-1].startswith(f'"Model" ({tmp_path / "no_such_model"}): does not exist'), errors
    assert len(viewer.layers) == 1


def _same_row(a, b) -> None:
    """Two lesion rows agree: integers and names exactly, millimetres to 1e-9 (summation order)."""
    for key, value in a.as_dict().items():
        other = b.as_dict()[key]
        if isinstance(value, (float, tuple, list)):
            np.testing.assert_allclose(np.asarray(value, float), np.asarray(other, float), atol=1e-9, err_msg=key)
        else:
            assert value == other, key


# --- the lesion table ---------------------------------------------------------------------------------------
def test_lesion_table_goes_to_a_lesion_and_follows_edits(make_napari_viewer, qtbot):
    from qtpy.QtCore import QPoint, Qt

    from medseg.lesions import lesion_table
    from napari_plugin._edits import apply_labels_edit
    from napari_plugin._layers import volume_from_layer

    viewer = make_napari_viewer()
    ct, organs, lesions = viewer.open_sample("medseg", "phantom")
    assert ct.contrast_limits == [-160.0, 240.0]  # CT opens in the soft-tissue window
    # The View widget: planes in one click, CT windows from a list or Alt+1..4.
    from napari.utils.key_bindings import KeyBinding

    _, view = viewer.window.add_plugin_dock_widget("medseg", "View")
    view.buttons["sagittal"].clicked.emit()
    assert tuple(viewer.dims.order) == (0, 2, 1) and tuple(viewer.dims.displayed) == (2, 1)
    view.window.value = "lung"
    assert ct.contrast_limits == [-1350.0, 150.0]
    viewer.keymap[KeyBinding.from_str("Alt-3")](viewer)
    assert ct.contrast_limits == [-500.0, 1300.0]
    viewer.keymap[KeyBinding.from_str("Alt-7")](viewer)
    assert tuple(viewer.dims.order) == (2, 1, 0)
    show_plane(viewer, "axial")
    _, table = viewer.window.add_plugin_dock_widget("medseg", "Lesion table")
    qtbot.waitUntil(lambda: table.measuring is None and len(table.rows) == 6, timeout=30000)
    full = lesion_table(volume_from_layer(lesions), image=volume_from_layer(ct), organs=volume_from_layer(organs))
    assert [table.rows[r.id] for r in full.rows] == list(full.rows)
    assert table.cell(0, "Organ") == "liver"
    # Sort by volume (click the header: largest first, then smallest first), then click the first row.
    header = table.table.horizontalHeader()
    for _ in range(2):
        x = header.sectionViewportPosition(2) + header.sectionSize(2) // 2
        qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))
    volumes = [float(table.cell(r, "Volume (mL)")) for r in range(len(full.rows))]
    assert volumes == sorted(volumes) or volumes == sorted(volumes, reverse=True)
    if volumes != sorted(volumes):
        qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))
    smallest = min(full.rows, key=lambda r: r.volume_ml)
    assert int(table.cell(0, "Lesion")) == smallest.id
    rect = table.table.visualRect(table.model.index(0, 1))
    qtbot.mouseClick(table.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    geometry = layer_info(lesions).geometry
    index = layer_slice_index(lesions, viewer)
    assert geometry.volume_index(index)[2] == smallest.axial_slice  # the slice of longest axis
    assert lesions.selected_label == smallest.id and viewer.layers.selection.active is lesions
    on_screen = geometry.to_volume(lesions.data)[:, :, smallest.axial_slice]
    assert np.count_nonzero(on_screen == smallest.id) > 0
    # Paint onto lesion 2 with napari's brush: only lesion 2 is measured again.
    before = lesions.data.copy()
    target = full.row(2)
    lesions.brush_size = 3
    lesions.n_edit_dimensions = 2
    show_plane(viewer, "axial", reset=False)
    viewer.dims.set_point(2, float(np.mean(np.asarray(target.long_axis_ras_mm)[:, 2])))
    edge = np.asarray(target.long_axis_ras_mm)[0]
    lesions.paint(lesions.world_to_data(edge), 2)
    qtbot.waitUntil(lambda: table.remeasured == [2], timeout=5000)
    _same_row(table.rows[2], lesion_table(volume_from_layer(lesions), image=volume_from_layer(ct),
                                          organs=volume_from_layer(organs)).row(2))
    assert table.rows[2].voxel_count > target.voxel_count
    # Delete lesion 4 as one undoable edit; Ctrl+Z (the layer's key binding) brings it back bit for bit.
    after_paint = lesions.data.copy()
    apply_labels_edit(lesions, np.nonzero(lesions.data == 4), 0)
    qtbot.waitUntil(lambda: 4 not in table.rows, timeout=5000)
    from napari.utils.key_bindings import KeyBinding

    undo = lesions.keymap[KeyBinding.from_str("Control-Z")]  # what napari calls on Ctrl+Z for this layer
    undo(lesions)
    qtbot.waitUntil(lambda: 4 in table.rows, timeout=5000)
    assert np.array_equal(lesions.data, after_paint)
    _same_row(table.rows[4], full.row(4))
    undo(lesions)
    qtbot.waitUntil(lambda: table.rows[2].voxel_count == full.row(2).voxel_count, timeout=5000)
    _same_row(table.rows[2], full.row(2))
    assert np.array_equal(lesions.data, before)
    assert table.remeasured == [2, 4, 4, 2]
    # A new id painted is a new row.
    lesions.paint(lesions.world_to_data(table.lesion_point(1) + [30.0, 0.0, 0.0]), 7)
    qtbot.waitUntil(lambda: 7 in table.rows, timeout=5000)
    assert table.row_of(7) >= 0 and table.rows[7].voxel_count == int(np.count_nonzero(lesions.data == 7))


# --- save and reopen ---------------------------------------------------------------------------------------
def test_save_reopen_and_correct_again(make_napari_viewer, tmp_path, qtbot):
    from medseg.case import read_case
    from napari_plugin._edits import apply_labels_edit

    viewer = make_napari_viewer()
    ct, organs, lesions = viewer.open_sample("medseg", "phantom")
    _, table = viewer.window.add_plugin_dock_widget("medseg", "Lesion table")
    qtbot.waitUntil(lambda: table.measuring is None and len(table.rows) == 6, timeout=30000)
    liver = np.nonzero(organs.data == 1)
    apply_labels_edit(organs, tuple(i[:500] for i in liver), 5)  # a person relabels 500 voxels
    table.set_reviewed(1)
    table.set_reviewed(3)
    _, saver = viewer.window.add_plugin_dock_widget("medseg", "Save case")
    assert saver.labels_layer.value is organs and saver.lesions_layer.value is lesions and saver.image_layer.value is ct
    saver.folder.value = str(tmp_path / "case")
    saver.author.value = "Dr Who"
    saver.save_button.clicked.emit()
    case = read_case(tmp_path / "case", verify=True)
    assert case.version == 1 and case.kind == "import" and "saved version 1" in saver.status.value
    # Reopen in a new viewer: same voxels, grid, names, colours, table, review.
    second = make_napari_viewer()
    reopened = second.open(str(tmp_path / "case"), plugin="medseg")
    # The image is not copied into the case: provenance names its file, which is opened with it.
    assert [layer.name for layer in reopened] == ["case image", "case labels", "case lesions"]
    image2, labels2, lesions2 = reopened
    assert layer_info(image2).source.path == str(PHANTOM / "ct.nii.gz")
    assert np.array_equal(labels2.data, organs.data) and np.array_equal(lesions2.data, lesions.data)
    for a, b in ((labels2, organs), (lesions2, lesions)):
        assert np.allclose(a.scale, b.scale) and np.allclose(a.translate, b.translate)
        assert np.array_equal(a.rotate, b.rotate)
        values = np.arange(0, 12)
        np.testing.assert_allclose(a.colormap.map(values), b.colormap.map(values))
    assert layer_info(labels2).label_set == layer_info(organs).label_set
    _, table2 = second.window.add_plugin_dock_widget("medseg", "Lesion table")
    assert table2.measuring is None  # rows came with the case, nothing measured again
    assert {i: r.volume_ml for i, r in table2.rows.items()} == pytest.approx(
        {i: r.volume_ml for i, r in table.rows.items()})
    assert layer_info(lesions2).reviewed == {1, 3}
    provenance = case.provenance
    assert provenance["import"]["author"] == "Dr Who" and provenance["review"]["reviewed_lesions"] == [1, 3]
    assert provenance["input"]["path"] == str(PHANTOM / "ct.nii.gz")
    assert len(provenance["input"]["sha256"]) == 64
    # Correct again in the reopened case and save into it: version 2, version 1 kept in history.
    apply_labels_edit(lesions2, np.nonzero(lesions2.data == 6), 0)
    _, saver2 = second.window.add_plugin_dock_widget("medseg", "Save case")
    assert Path(str(saver2.folder.value)) == tmp_path / "case"
    saver2.save_button.clicked.emit()
    case = read_case(tmp_path / "case", verify=True)
    assert case.version == 2 and case.kind == "correction" and case.history[0]["version"] == 1
    assert case.provenance["correction"]["voxels_changed"]["lesions"] == int(np.count_nonzero(lesions.data == 6))
    assert 6 not in np.unique(case.lesions.array) and len(case.lesion_rows) == 5
    saver2.save_button.clicked.emit()  # nothing changed since version 2: nothing written
    assert read_case(tmp_path / "case").version == 2
    assert np.array_equal(load_volume(tmp_path / "case" / "history" / "v1" / "lesions" / "lesions.nii.gz").array,
                          case.lesions.array + (layer_info(lesions).geometry.to_volume(lesions.data) == 6) * 6)


@pytest.mark.slow
def test_default_model_run_saved_as_proposal_then_correction(make_napari_viewer, tmp_path, qtbot):
    """The shipped model on the phantom: lesions in the table; Save keeps its proposal as version 1."""
    from medseg.case import read_case
    from napari_plugin._edits import apply_labels_edit
    from napari_plugin._widgets.lesion_table import LesionTableWidget

    viewer = make_napari_viewer()
    viewer.open(str(PHANTOM / "ct.nii.gz"), plugin="medseg")
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "Segment")
    widget.device.value = "cpu"
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=120000)
    organs, lesions = widget.added
    assert layer_info(organs).provenance["model"]["name"] == "medseg-default-ct-3mm"
    (table,) = [w for w in viewer.window.dock_widgets.values() if isinstance(w, LesionTableWidget)]
    assert table.layer is lesions and len(table.rows) == int(lesions.data.max()) > 0
    liver_lesions = [r for r in table.rows.values() if r.organ == "liver"]
    assert liver_lesions, [r.organ for r in table.rows.values()]
    apply_labels_edit(organs, np.nonzero(organs.data == 2), 0)  # the reviewer removes the spleen
    _, saver = viewer.window.add_plugin_dock_widget("medseg", "Save case")
    saver.folder.value = str(tmp_path / "case")
    saver.save_button.clicked.emit()
    case = read_case(tmp_path / "case", verify=True)
    assert case.version == 2 and case.kind == "correction" and case.history[0]["kind"] == "proposal"
    proposal = load_volume(tmp_path / "case" / "history" / "v1" / "labels.nii.gz")
    assert np.count_nonzero(proposal.array == 2) > 0 and np.count_nonzero(case.labels.array == 2) == 0
    assert case.provenance["model"]["name"] == "medseg-default-ct-3mm"
    assert case.provenance["correction"]["voxels_changed"]["labels"] == int(np.count_nonzero(proposal.array == 2))


# --- what the screen shows ------------------------------------------------------------------------------------
def _screen_pixel(viewer, world, shape) -> tuple[int, int]:
    """Canvas pixel (row, column) of a world point in the radiological axial view (+y up, +x left)."""
    camera = viewer.scene.camera
    centre_y, centre_x = camera.center[-2:]
    zoom = camera.zoom
    row = shape[0] / 2 - (world[1] - centre_y) * zoom
    col = shape[1] / 2 - (world[0] - centre_x) * zoom
    return round(row), round(col)


def _blended(shot_with, shot_without, opacity):
    """The label colour napari blended over the image: (with - (1 - a) * without) / a."""
    return (shot_with[..., :3].astype(float) - (1 - opacity) * shot_without[..., :3].astype(float)) / opacity / 255.0


def test_screen_shows_the_liver_colour_at_the_liver_and_a_lesion_colour_at_the_lesion(make_napari_viewer, qtbot):
    from medseg.labels import label_colour
    from napari_plugin._widgets.lesion_table import LesionTableWidget

    viewer = make_napari_viewer(show=True)
    _, organs, lesions = viewer.open_sample("medseg", "phantom")
    table = LesionTableWidget(viewer)  # not docked: the canvas keeps the window's width
    qtbot.addWidget(table.native)  # closed and deleted with the test
    qtbot.waitUntil(lambda: table.measuring is None and len(table.rows) == 6, timeout=30000)
    show_plane(viewer, "axial")
    target = table.rows[1]  # the largest liver lesion
    table.go_to_lesion(1)
    viewer.scene.camera.zoom = 1.5  # screen pixels per mm
    shot = viewer.screenshot(canvas_only=True, flash=False)
    organs.visible = lesions.visible = False
    image_only = viewer.screenshot(canvas_only=True, flash=False)
    organs.visible = True
    organs_only = viewer.screenshot(canvas_only=True, flash=False)
    lesions.visible = True
    volume_organs = layer_info(organs).geometry.to_volume(organs.data)
    volume_lesions = layer_info(lesions).geometry.to_volume(lesions.data)
    affine = layer_info(organs).geometry.affine
    k = target.axial_slice
    liver = np.argwhere((volume_organs[:, :, k] == 1) & (volume_lesions[:, :, k] == 0))
    lesion = np.argwhere(volume_lesions[:, :, k] == 1)
    # Interior voxels only (napari samples voxel centres; edges may fall on the neighbour).
    from scipy import ndimage

    inner_liver = ndimage.binary_erosion((volume_organs[:, :, k] == 1) & (volume_lesions[:, :, k] == 0), iterations=2)
    inner_lesion = ndimage.binary_erosion(volume_lesions[:, :, k] == 1, iterations=1)
    liver, lesion = np.argwhere(inner_liver)[::37], np.argwhere(inner_lesion)
    assert len(liver) > 20 and len(lesion) > 3
    liver_rgb, lesion_rgb = np.array(label_colour("liver")), np.array(lesion_colour(1)[:3])
    for points, shot_with, shot_without, opacity, expected in (
            (liver, organs_only, image_only, organs.opacity, liver_rgb),
            (lesion, shot, organs_only, lesions.opacity, lesion_rgb)):
        colours = []
        for i, j in points:
            world = affine[:3, :3] @ [i, j, k] + affine[:3, 3]
            r, c = _screen_pixel(viewer, world, shot.shape)
            if 0 <= r < shot.shape[0] and 0 <= c < shot.shape[1]:
                colours.append(_blended(shot_with, shot_without, opacity)[r, c])
        assert len(colours) >= min(len(points), 4), (len(colours), len(points))
        np.testing.assert_allclose(np.median(colours, axis=0), expected, atol=0.03)
    # The liver is on the screen's left (patient's right) in the radiological view.
    columns = [_screen_pixel(viewer, affine[:3, :3] @ [i, j, k] + affine[:3, 3], shot.shape)[1] for i, j in liver]
    assert np.median(columns) < shot.shape[1] / 2 + 2 * 40
    if os.environ.get("MEDSEG_NAPARI_DOCS_IMG"):  # regenerate the user guide's pictures
        from skimage.io import imsave

        viewer.reset_view()
        imsave(DOCS_IMG / "napari_axial.png", viewer.screenshot(canvas_only=True, flash=False), check_contrast=False)
        viewer.window.resize(1600, 860)
        _, docked = viewer.window.add_plugin_dock_widget("medseg", "Lesion table")
        qtbot.waitUntil(lambda: docked.measuring is None and len(docked.rows) == 6, timeout=30000)
        docked.table.selectRow(docked.row_of(1))
        show_plane(viewer, "axial")
        docked.go_to_lesion(1)
        qtbot.wait(200)
        imsave(DOCS_IMG / "napari_workstation.png", viewer.screenshot(canvas_only=False, flash=False),
               check_contrast=False)


# --- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_bad_input_is_one_notification_and_nothing_is_added_or_lost(make_napari_viewer, tmp_path, shared_data,
                                                                   notes):
    from medseg.case import write_case
    from napari_plugin._sample_data import phantom_volumes

    viewer = make_napari_viewer()
    errors = lambda: [m for s, m in notes if "error" in s.lower()]
    # 1. A folder with no image.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no image here")
    assert viewer.open(str(tmp_path / "notes"), plugin="medseg") == [] and len(viewer.layers) == 0
    assert errors()[-1].startswith(f"{tmp_path / 'notes'}: holds no image")
    # 2. A label map on another grid: example_seg.nii.gz belongs to example_ct_sm, which is the last
    # 30 slices of example_ct but keeps the full volume's origin (246 mm apart).
    root = shared_data / "totalsegmentator"
    viewer.open(str(root / "example_ct.nii.gz"), plugin="medseg")
    assert viewer.open(str(root / "example_seg.nii.gz"), plugin="medseg") == [] and len(viewer.layers) == 1
    assert "lies on another grid (122x101x30 voxels" in errors()[-1] and "nothing was added" in errors()[-1]
    # 3. A case folder missing its labels.
    ct, organs, _ = phantom_volumes()
    write_case(tmp_path / "case", labels=organs, provenance={}, plots=False)
    (tmp_path / "case" / "labels.nii.gz").unlink()
    assert viewer.open(str(tmp_path / "case"), plugin="medseg") == [] and len(viewer.layers) == 1
    assert errors()[-1].startswith(f"{tmp_path / 'case' / 'labels.nii.gz'}: is missing from the case")
    # 4. Saving a label layer over the file it was opened from, and a case into a DICOM input folder.
    source = tmp_path / "organs.nii.gz"
    source.write_bytes((PHANTOM / "organs.nii.gz").read_bytes())
    before = source.read_bytes()
    viewer.layers.clear()
    (labels,) = viewer.open(str(source), plugin="medseg")
    viewer.layers.selection = {labels}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # napari adds "did not return any written paths"
        assert viewer.layers.save(str(source), selected=True, plugin="medseg") == []
    assert "is the input file; writing there would destroy the input" in errors()[-1]
    assert source.read_bytes() == before
    dicom = tmp_path / "dicom"
    crop = (slice(60, 100), slice(60, 100), slice(30, 34))
    write_dicom_series(ct.crop(crop), dicom, uid_seed=3)
    files = sorted((p.name, p.stat().st_size) for p in dicom.iterdir())
    save_volume(organs.crop(crop), tmp_path / "crop_organs.nii.gz")
    viewer.layers.clear()
    viewer.open(str(dicom), plugin="medseg")
    viewer.open(str(tmp_path / "crop_organs.nii.gz"), plugin="medseg")
    _, saver = viewer.window.add_plugin_dock_widget("medseg", "Save case")
    saver.folder.value = str(dicom)
    assert saver.save() is None
    assert "lies inside the input folder" in errors()[-1] and errors()[-1].startswith(str(dicom))
    assert sorted((p.name, p.stat().st_size) for p in dicom.iterdir()) == files


def test_segment_widget_offers_the_back_ends_run_case_takes(make_napari_viewer):
    import inspect

    from medseg.errors import MedsegError, option
    from medseg.pipeline import run_case
    from napari_plugin._notify import message

    viewer = make_napari_viewer()
    viewer.open(str(PHANTOM / "ct.nii.gz"), plugin="medseg")
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "Segment")
    takes = "backend" in inspect.signature(run_case).parameters
    assert (not widget.backend.native.isHidden()) == takes and widget.backend.choices == (
        "auto", "torch", "openvino", "onnxruntime")
    widget.backend.value = "torch"
    assert widget.options().get("backend") == ("torch" if takes else None)
    error = MedsegError(option("backend", "tpu"), "is not a back-end", "use auto, torch, openvino, onnxruntime")
    assert message(error) == '"Back-end" (tpu): is not a back-end. Use auto, torch, openvino, onnxruntime'
