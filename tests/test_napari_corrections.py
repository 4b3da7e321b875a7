"""Correcting a proposal slice by slice, under Xvfb: the real Correct, Review and Lesion table widgets.

Every operation lands in napari's own history: Ctrl+Z (the layer's key binding, what napari calls on
the key press) gives the labels back bit for bit, Ctrl+Shift+Z re-applies them, and paint strokes
made with napari's brush undo in order with the widget's bulk operations. Other labels are never
touched. On the shipped phantom (exact truth: a missed kidney restored by interpolation, the
touching lesions 2 and 3 split and merged) and on a real CT series from ``../shared/data``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_plugin._layers import layer_info

pytestmark = pytest.mark.gui

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"


@pytest.fixture(autouse=True)
def recovery_dir(tmp_path, monkeypatch):
    """Recovery files of scans without a case go here, not into ~/.cache."""
    monkeypatch.setenv("MEDSEG_RECOVERY_DIR", str(tmp_path / "recovery"))
    return tmp_path / "recovery"


def _errors(notes):
    return [message for severity, message in notes if "error" in severity.lower()]


def _key(layer, key: str):
    """What napari runs when ``key`` is pressed with ``layer`` active."""
    from napari.utils.key_bindings import KeyBinding

    layer.keymap[KeyBinding.from_str(key)](layer)


def _undo(layer):
    _key(layer, "Control-Z")


def _redo(layer):
    _key(layer, "Control-Shift-Z")


def _go_to_slice(viewer, layer, k: int) -> None:
    """Show volume slice k (axial) of ``layer``."""
    geometry = layer_info(layer).geometry
    centre = np.array([(n - 1) / 2 for n in geometry.volume_shape], dtype=float)
    centre[2] = k
    world = layer.data_to_world(geometry.layer_index(centre))
    viewer.dims.set_point(2, float(world[2]))


def _volume(layer):
    return layer_info(layer).geometry.to_volume(layer.data)


def _world(layer, ijk):
    return layer.data_to_world(layer_info(layer).geometry.layer_index(np.asarray(ijk, dtype=float)))


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _check_undo_redo(layer, before, after):
    """Ctrl+Z gives ``before`` bit for bit, Ctrl+Shift+Z ``after``."""
    _undo(layer)
    assert np.array_equal(layer.data, before)
    _redo(layer)
    assert np.array_equal(layer.data, after)


# --- the phantom: one session, every operation -----------------------------------------------------
def test_phantom_session_interpolate_split_merge_delete_undo_review_and_provenance(make_napari_viewer, qtbot, notes,
                                                                                    tmp_path):
    from napari.utils.key_bindings import KeyBinding
    from scipy import ndimage

    from medseg.case import read_case
    from napari_plugin._edits import apply_labels_edit

    viewer = make_napari_viewer()
    _, organs, lesions = viewer.open_sample("medseg", "phantom")
    truth_organs, truth_lesions = _volume(organs).copy(), _volume(lesions).copy()
    _, table = viewer.window.add_plugin_dock_widget("medseg", "Lesion table")
    qtbot.waitUntil(lambda: table.measuring is None and len(table.rows) == 6, timeout=30000)
    _, correct = viewer.window.add_plugin_dock_widget("medseg", "Correct")
    _, review = viewer.window.add_plugin_dock_widget("medseg", "Review")
    assert organs.n_edit_dimensions == 2 and organs.preserve_labels  # this slice only, other labels kept

    # 1. A missed kidney: the proposal lacks kidney_right on slices 22-37; restore it by interpolation.
    correct.layer_choice.value = organs
    kidney = layer_info(organs).label_set.value_of("kidney_right")
    missed = (slice(None), slice(None), slice(22, 38))
    region = _volume(organs)[missed] == kidney
    volume_missing = np.zeros(truth_organs.shape, bool)
    volume_missing[missed] = region
    missing = layer_info(organs).geometry.to_layer(volume_missing)
    apply_labels_edit(organs, np.nonzero(missing), 0)
    # The reviewer draws the kidney on slice 29 (here: its true outline), then interpolates around it.
    key = np.zeros(truth_organs.shape, bool)
    key[:, :, 29] = truth_organs[:, :, 29] == kidney
    apply_labels_edit(organs, np.nonzero(layer_info(organs).geometry.to_layer(key)), kidney)
    proposal = organs.data.copy()
    organs.selected_label = kidney
    _go_to_slice(viewer, organs, 29)
    shown = correct.interpolate()  # preview first
    assert correct.pending is not None and "medseg preview" in viewer.layers and np.array_equal(organs.data, proposal)
    assert shown.record["slices"] == [22, 37] and shown.record["key_slices"] == [21, 29, 38]
    correct.interpolate()  # again: apply
    assert "medseg preview" not in viewer.layers
    restored = _volume(organs)
    assert _dice(restored[missed] == kidney, truth_organs[missed] == kidney) > 0.9
    assert np.array_equal(organs.data[proposal != 0], proposal[proposal != 0])  # nothing else touched
    interpolated = organs.data.copy()
    _check_undo_redo(organs, proposal, interpolated)
    # A hole in the liver on slice 29, filled with the widget's key (Shift+H, bound on the viewer).
    liver = layer_info(organs).label_set.value_of("liver")
    inner = np.argwhere(ndimage.binary_erosion(_volume(organs)[:, :, 29] == liver, iterations=4))
    hole = np.zeros(truth_organs.shape, bool)
    i, j = inner[len(inner) // 2]
    hole[i - 1:i + 2, j - 1:j + 2, 29] = True
    apply_labels_edit(organs, np.nonzero(layer_info(organs).geometry.to_layer(hole)), 0)
    holed = organs.data.copy()
    organs.selected_label = liver
    _go_to_slice(viewer, organs, 29)
    viewer.keymap[KeyBinding.from_str("Shift-H")](viewer)
    assert correct.last.record["operation"] == "fill_holes" and correct.last.voxels == 9
    assert np.array_equal(organs.data, interpolated)
    _check_undo_redo(organs, holed, interpolated)

    # 2. The touching lesions 2 and 3 as the model gave them (one lesion), split at two seeds, merged back.
    correct.layer_choice.value = lesions
    separate = lesions.data.copy()
    correct.merge([2, 3])
    merged = lesions.data.copy()
    _check_undo_redo(lesions, separate, merged)
    qtbot.waitUntil(lambda: 3 not in table.rows, timeout=5000)
    centres = [np.argwhere(truth_lesions == i).mean(axis=0) for i in (2, 3)]
    split = correct.split(seeds=[_world(lesions, c) for c in centres])
    new_id = split.record["new_lesion"]
    assert split.record["lesion"] == 2 and new_id == 7 and lesions.selected_label == 7
    parts = _volume(lesions)
    for part, truth_id in ((2, 2), (new_id, 3)):
        assert _dice(parts == part, truth_lesions == truth_id) > 0.9
    assert abs(np.count_nonzero(parts == 2) - 424) <= 25 and abs(np.count_nonzero(parts == new_id) - 171) <= 25
    assert np.count_nonzero(parts == 2) + np.count_nonzero(parts == new_id) == 424 + 171
    qtbot.waitUntil(lambda: new_id in table.rows and table.rows[new_id].organ == "liver", timeout=5000)
    assert table.rows[new_id].voxel_count == np.count_nonzero(parts == new_id)
    after_split = lesions.data.copy()
    _check_undo_redo(lesions, merged, after_split)
    correct.merge_ids.value = f"2, {new_id}"
    correct.buttons["merge"].clicked.emit()
    assert np.array_equal(lesions.data, merged)
    qtbot.waitUntil(lambda: new_id not in table.rows, timeout=5000)
    assert table.rows[2].voxel_count == 424 + 171

    # 3. Delete lesion 6 and draw it again: a new id, painted with napari's brush on two slices, interpolated.
    lesions.selected_label = 6
    box = np.argwhere(truth_lesions == 6)
    correct.delete()
    qtbot.waitUntil(lambda: 6 not in table.rows, timeout=5000)
    assert not np.any(lesions.data == 6)
    deleted = lesions.data.copy()
    new = correct.new_lesion()
    assert new == 6 and lesions.selected_label == 6 and lesions.mode == "paint"  # one above the largest id (5)
    correct.brush_mm.value = 16.0  # the brush in mm: 8 pixels of 2 mm
    assert lesions.brush_size == 8
    for k in (box[:, 2].min() + 1, box[:, 2].max() - 1):
        _go_to_slice(viewer, lesions, int(k))
        centre = box[box[:, 2] == k].mean(axis=0)
        lesions.paint(lesions.world_to_data(_world(lesions, centre)), new)
    painted = lesions.data.copy()
    _go_to_slice(viewer, lesions, int(box[:, 2].min()) + 1)
    redrawn = correct.interpolate(preview=False)
    assert redrawn.record["label"] == new
    qtbot.waitUntil(lambda: new in table.rows, timeout=5000)
    assert table.rows[new].organ == "liver" and 0.4 < table.rows[new].voxel_count / 275 < 2.5
    recreated = lesions.data.copy()

    # 4. Paint strokes and bulk operations undo in order.
    _undo(lesions)
    assert np.array_equal(lesions.data, painted)
    _undo(lesions)
    _undo(lesions)
    assert np.array_equal(lesions.data, deleted)  # the two brush strokes, one step each
    _undo(lesions)
    assert np.array_equal(lesions.data, merged)  # the delete
    for _ in range(4):
        _redo(lesions)
    assert np.array_equal(lesions.data, recreated)
    assert np.array_equal(organs.data, interpolated)  # the other layer never moved

    # 5. Bad input: a clear notification, nothing changed.
    correct.layer_choice.value = organs
    apply_labels_edit(organs, (np.array([5]), np.array([5]), np.array([3])), 12)  # a label on one slice only
    organs.selected_label = 12
    state = (organs.data.copy(), lesions.data.copy())
    notes.clear()
    assert correct.interpolate(preview=False) is None
    assert _errors(notes)[-1] == ("interpolate: label 12 is drawn on 1 slice (k=3); interpolation needs two. Draw it "
                                  "on at least two slices with empty slices between them, then interpolate")
    correct.layer_choice.value = lesions
    one, four = (np.argwhere(truth_lesions == i).mean(axis=0) for i in (1, 4))
    assert correct.split(seeds=[_world(lesions, one), _world(lesions, four)]) is None
    assert _errors(notes)[-1] == ("split: the seeds lie in two different lesions (1 and 4). Put both seeds inside the "
                                  "one lesion to split (to join two lesions, merge them)")
    assert correct.merge([5]) is None and _errors(notes)[-1] == "merge: 1 lesion (5) to merge. Select two or more lesions to merge"
    assert np.array_equal(organs.data, state[0]) and np.array_equal(lesions.data, state[1])
    _undo(organs)  # the stray voxel

    # 6. Review: mark slices and lesions, coverage, next unreviewed; then save and read the provenance.
    review.layer_choice.value = lesions
    for k in range(10, 19):
        _go_to_slice(viewer, lesions, k)
        assert review.mark_slice() == (2, k)
    _go_to_slice(viewer, lesions, 19)
    viewer.keymap[KeyBinding.from_str("Shift-R")](viewer)  # the review key
    assert review.next_slice() == 20
    review.mark_lesion(1)
    qtbot.waitUntil(lambda: table.cell(table.row_of(1), "Reviewed") == "yes", timeout=5000)  # the table's tick
    assert review.coverage.value == "10/70 slices (k) reviewed, 1/5 lesions"  # 2+3 merged, 6 drawn again
    assert review.next_lesion() == 2 and lesions.selected_label == 2
    _, saver = viewer.window.add_plugin_dock_widget("medseg", "Save case")
    saver.folder.value = str(tmp_path / "case")
    saver.save_button.clicked.emit()
    case = read_case(tmp_path / "case", verify=True)
    correction = case.provenance["import"]
    operations = [r["operation"] for r in correction["operations"]]
    # The erase and the drawn key slice (bulk edits of the test, as a brush would make them) are logged as paint.
    assert operations[:5] == ["erase", "paint", "interpolate", "undo", "redo"]
    assert operations[5:9] == ["erase", "fill_holes", "undo", "redo"]
    assert "split" in operations and "merge" in operations and "delete" in operations
    interp = next(r for r in correction["operations"] if r["operation"] == "interpolate")
    assert interp["map"] == "labels" and interp["label_name"] == "kidney_right" and interp["slices"] == [22, 37]
    assert interp["voxels_changed"] == np.count_nonzero(interpolated != proposal)
    assert correction["summary"]["by_operation"]["split"] == 1
    assert case.provenance["review"]["slices_reviewed"] == {"k": [[10, 19]]}
    assert case.provenance["review"]["coverage"]["k"] == {"reviewed": 10, "slices": 70, "fraction": 0.1429}
    assert case.provenance["review"]["reviewed_lesions"] == [1]
    json.dumps(case.provenance)


# --- a real CT series and its real label map (stored in another voxel order) ---------------------------
@pytest.mark.shared_data
def test_real_ct_interpolate_liver_split_merge_delete_with_exact_undo(make_napari_viewer, shared_data, qtbot, notes):
    """A JPEG 2000 CT series (512 x 512 x 20, 0.98 x 0.98 x 2 mm, read LPS) and TotalSegmentator's labels
    for it (stored LAS): the liver restored over 7 erased slices, and a touching pair of lesions drawn in
    it, split at two seeds, merged back, deleted and undone: always bit-identical, nothing else touched."""
    from medseg.volume import Volume
    from napari_plugin._edits import apply_labels_edit
    from napari_plugin._layers import (
        add_layers,
        layer_data_from_volume,
        volume_from_layer,
    )

    root = shared_data / "totalsegmentator"
    viewer = make_napari_viewer()
    (ct,) = viewer.open(str(root / "example_ct_dicom"), plugin="medseg")
    (organs,) = viewer.open(str(root / "example_seg_dicom.nii.gz"), plugin="medseg")
    ct_volume = volume_from_layer(ct)
    assert (volume_from_layer(organs).orientation, ct_volume.orientation) == ("LAS", "LPS")  # two storage orders
    (lesions,) = add_layers(viewer, [layer_data_from_volume(
        Volume(np.zeros(ct_volume.shape, np.uint16), ct_volume.affine, "SEG", ct_volume.source), "lesions",
        kind="lesions")])
    _, table = viewer.window.add_plugin_dock_widget("medseg", "Lesion table")
    _, correct = viewer.window.add_plugin_dock_widget("medseg", "Correct")

    # The liver (TotalSegmentator value 5) erased on slices 5-11, restored by interpolation between 4 and 12.
    correct.layer_choice.value = organs
    original = organs.data.copy()
    labels_volume = _volume(organs)
    erase = np.zeros(labels_volume.shape, bool)
    erase[:, :, 5:12] = labels_volume[:, :, 5:12] == 5
    apply_labels_edit(organs, np.nonzero(layer_info(organs).geometry.to_layer(erase)), 0)
    erased = organs.data.copy()
    organs.selected_label = 5
    _go_to_slice(viewer, organs, 8)  # an empty slice between the two drawn ones
    done = correct.interpolate(preview=False)
    assert done.record["slices"] == [5, 11] and done.record["key_slices"] == [4, 12]
    restored = organs.data == 5
    assert _dice(restored & erase_layer(organs, erase), (original == 5) & erase_layer(organs, erase)) > 0.98
    assert np.array_equal(organs.data[erased != 0], erased[erased != 0])  # other organs: not one voxel
    _check_undo_redo(organs, erased, organs.data.copy())

    # A touching pair in the liver (balls of 9 and 6 mm, centres 13 mm apart), as one lesion.
    liver = np.argwhere(labels_volume == 5)
    centre = liver[np.argmin(np.abs(liver[:, 2] - 10) + np.abs(liver - liver.mean(0))[:, :2].sum(1) * 0.01)]
    centre_mm = ct_volume.voxel_to_world(centre)
    spacing = ct_volume.spacing
    grid = np.indices(ct_volume.shape).reshape(3, -1).T
    near = np.all(np.abs(grid - centre) <= np.ceil(25 / spacing), axis=1)
    points = ct_volume.voxel_to_world(grid[near])
    offset = ct_volume.affine[:3, :3] @ np.array([13.0 / spacing[0], 0, 0])
    ball_a = np.linalg.norm(points - centre_mm, axis=1) <= 9.0
    ball_b = np.linalg.norm(points - (centre_mm + offset), axis=1) <= 6.0
    pair = np.zeros(ct_volume.shape, bool)
    pair[tuple(grid[near][ball_a | ball_b].T)] = True
    apply_labels_edit(lesions, np.nonzero(layer_info(lesions).geometry.to_layer(pair)), 1)
    qtbot.waitUntil(lambda: 1 in table.rows, timeout=10000)
    one = lesions.data.copy()
    correct.layer_choice.value = lesions
    split = correct.split(seeds=[centre_mm, centre_mm + offset])
    parts = _volume(lesions)
    n_a, n_b = np.count_nonzero(ball_a & ~ball_b), np.count_nonzero(ball_b & ~ball_a)
    neck = np.count_nonzero(ball_a & ball_b)
    assert split.record["new_lesion"] == 2
    assert abs(np.count_nonzero(parts == 1) - n_a) <= neck and abs(np.count_nonzero(parts == 2) - n_b) <= neck
    assert np.count_nonzero(parts == 1) + np.count_nonzero(parts == 2) == np.count_nonzero(pair)
    qtbot.waitUntil(lambda: 2 in table.rows, timeout=10000)
    assert table.rows[2].voxel_count == np.count_nonzero(parts == 2)
    after = lesions.data.copy()
    _check_undo_redo(lesions, one, after)
    correct.merge([1, 2])
    assert np.array_equal(lesions.data, one)
    lesions.selected_label = 1
    correct.delete()
    assert not lesions.data.any()
    _undo(lesions)
    assert np.array_equal(lesions.data, one)
    _undo(lesions)
    assert np.array_equal(lesions.data, after)  # undo the merge: the split pair again
    assert not _errors(notes)


def erase_layer(layer, volume_mask):
    return layer_info(layer).geometry.to_layer(volume_mask)


# --- a killed session leaves its corrections in the recovery file ------------------------------------------
_SESSION = r'''
import hashlib, json, sys, time
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from napari_plugin._edits import apply_labels_edit
from napari_plugin._layers import layer_info

case = sys.argv[1]
viewer = napari.Viewer(show=False)
image, organs, lesions = viewer.open(case, plugin="medseg")
_, correct = viewer.window.add_plugin_dock_widget("medseg", "Correct")
_, review = viewer.window.add_plugin_dock_widget("medseg", "Review")
correct._autosave_timer.setInterval(100)          # the widget's timer writes the recovery file
geometry = layer_info(organs).geometry
volume = geometry.to_volume(organs.data)
key = np.zeros(volume.shape, bool)
key[:, :, 22:38] = volume[:, :, 22:38] == 3
apply_labels_edit(organs, np.nonzero(geometry.to_layer(key)), 0)      # a person erases the kidney ...
key[:] = False
key[:, :, 29] = volume[:, :, 29] == 3
apply_labels_edit(organs, np.nonzero(geometry.to_layer(key)), 3)      # ... draws it on slice 29 ...
correct.layer_choice.value = organs
organs.selected_label = 3
world = organs.data_to_world(geometry.layer_index([100.0, 85.0, 29.0]))
viewer.dims.set_point(2, float(world[2]))
correct.interpolate(preview=False)                                  # ... and interpolates
correct.layer_choice.value = lesions
correct.merge([2, 3])
correct.delete(5)
review.layer_choice.value = lesions
review.mark_slice()
session = layer_info(organs).session
session.core.every_s = 0.0
app = QApplication.instance()
deadline = time.time() + 60
while (session.autosaves < 1 or session._busy) and time.time() < deadline:
    app.processEvents()
    time.sleep(0.02)
digest = {name: hashlib.sha256(np.ascontiguousarray(session.core.maps[name].array).tobytes()).hexdigest()
          for name in ("labels", "lesions")}
print(json.dumps({"ready": True, "autosaves": session.autosaves, **digest}), flush=True)
while True:                                                          # still working when killed
    app.processEvents()
    time.sleep(0.05)
'''


@pytest.mark.slow
def test_a_killed_session_is_restored_from_its_recovery_file(make_napari_viewer, tmp_path, qtbot, notes):
    import hashlib
    import os
    import signal
    import subprocess
    import sys

    from medseg.case import read_case, write_case
    from medseg.io import load_volume
    from medseg.labels import DEFAULT_ORGANS

    organs = load_volume(PHANTOM / "organs.nii.gz")
    organs = organs.with_labels(organs.label_set or DEFAULT_ORGANS)
    lesions = load_volume(PHANTOM / "lesions.nii.gz").with_labels(None)
    case = write_case(tmp_path / "case", labels=organs, lesions=lesions, kind="proposal",
                      provenance={"source_image": str(PHANTOM / "ct.nii.gz")}, plots=False)
    script = tmp_path / "session.py"
    script.write_text(_SESSION)
    process = subprocess.Popen([sys.executable, str(script), str(case)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = ""
        while not line.startswith("{"):
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                pytest.fail(f"the session died: {process.stderr.read()[-3000:]}")
        state = json.loads(line)
        assert state["ready"] and state["autosaves"] >= 1
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)  # the crash: no chance to clean up
        process.wait(30)
    recovery = tmp_path / "case.recovery.npz"
    assert recovery.is_file() and not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no half-written file
    assert read_case(case).version == 1  # the case itself untouched

    viewer = make_napari_viewer()
    _, organs_layer, _ = viewer.open(str(case), plugin="medseg")
    _, correct = viewer.window.add_plugin_dock_widget("medseg", "Correct")
    assert correct.recovery is not None and not correct.recovery_row.native.isHidden()
    assert any("unsaved corrections" in message for _, message in notes)
    correct.buttons["restore"].clicked.emit()
    session = layer_info(organs_layer).session
    for name in ("labels", "lesions"):
        digest = hashlib.sha256(np.ascontiguousarray(session.core.maps[name].array).tobytes()).hexdigest()
        assert digest == state[name], name
    assert [r["operation"] for r in session.core.log.records][-1] == "restore"
    assert {"interpolate", "merge", "delete"} <= {r["operation"] for r in session.core.log.records}
    assert session.core.review.coverage(2)[0] == 1
    _undo(organs_layer)  # the restore is one undoable step per layer
    assert np.array_equal(_volume(organs_layer), organs.array)
    _redo(organs_layer)
    # Saving the case makes the recovery file unnecessary: it goes.
    _, saver = viewer.window.add_plugin_dock_widget("medseg", "Save case")
    saver.save_button.clicked.emit()
    saved = read_case(case)
    assert saved.version == 2 and not recovery.exists()
    assert "restore" in [r["operation"] for r in saved.provenance["correction"]["operations"]]


# --- what the screen shows ----------------------------------------------------------------------------------
def _screen_pixel(viewer, world, shape) -> tuple[int, int]:
    """Canvas pixel (row, column) of a world point in the radiological axial view (+y up, +x left)."""
    camera = viewer.scene.camera
    centre_y, centre_x = camera.center[-2:]
    return round(shape[0] / 2 - (world[1] - centre_y) * camera.zoom), round(shape[1] / 2 - (world[0] - centre_x) * camera.zoom)


def test_screen_shows_the_interpolation_preview_then_the_restored_kidney(make_napari_viewer, qtbot):
    """On an erased slice the preview outlines the kidney in its colour (inside: still the CT); applying
    fills it: inside, the screen is the kidney's colour blended over the CT."""
    import os

    from scipy import ndimage

    from medseg.labels import label_colour
    from napari_plugin._edits import apply_labels_edit
    from napari_plugin._view import show_plane

    viewer = make_napari_viewer(show=True)
    ct, organs, lesions = viewer.open_sample("medseg", "phantom")
    lesions.visible = False
    show_plane(viewer, "axial")
    _, correct = viewer.window.add_plugin_dock_widget("medseg", "Correct")
    viewer.window.add_plugin_dock_widget("medseg", "Review")  # in the picture
    correct.layer_choice.value = organs
    kidney = layer_info(organs).label_set.value_of("kidney_right")
    volume = _volume(organs)
    erase = np.zeros(volume.shape, bool)
    erase[:, :, 26:33] = volume[:, :, 26:33] == kidney
    apply_labels_edit(organs, np.nonzero(layer_info(organs).geometry.to_layer(erase)), 0)
    organs.selected_label = kidney
    _go_to_slice(viewer, organs, 29)
    affine = layer_info(organs).geometry.affine
    interior = np.argwhere(ndimage.binary_erosion(erase[:, :, 29], iterations=3))
    ring = np.argwhere(erase[:, :, 29] & ~ndimage.binary_erosion(erase[:, :, 29]))
    centre = affine[:3, :3] @ [*interior.mean(axis=0), 29.0] + affine[:3, 3]
    viewer.scene.camera.center = (centre[1], centre[0])
    viewer.scene.camera.zoom = 2.5
    colour = np.array(label_colour("kidney_right"))

    def shots():
        """The canvas with the labels (and preview), and without them: one size, taken together."""
        qtbot.wait(100)
        with_labels = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
        drawn = [layer for layer in viewer.layers if layer is not ct and layer.visible]
        for layer in drawn:
            layer.visible = False
        without = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
        for layer in drawn:
            layer.visible = True
        return with_labels, without

    def pixels(voxels, shape):
        return [_screen_pixel(viewer, affine[:3, :3] @ [i, j, 29.0] + affine[:3, 3], shape) for i, j in voxels]

    viewer.window.resize(1700, 950)
    erased, image = shots()
    assert all(np.allclose(erased[r, c], image[r, c]) for r, c in pixels(interior, erased.shape))  # nothing drawn
    preview = correct.interpolate()  # the preview: an outline in the kidney's colour, the layer unchanged
    shape = np.zeros(volume.shape, bool)
    shape[preview.delta.indices()] = True
    interior = np.argwhere(ndimage.binary_erosion(shape[:, :, 29], iterations=2))
    ring = np.argwhere(shape[:, :, 29] & ~ndimage.binary_erosion(shape[:, :, 29]))
    previewed, image = shots()
    assert all(np.allclose(previewed[r, c], image[r, c], atol=1) for r, c in pixels(interior, image.shape))
    on_outline = [np.linalg.norm(previewed[r, c] / 255 - colour) < 0.1 for r, c in pixels(ring, image.shape)]
    assert np.mean(on_outline) > 0.5, np.mean(on_outline)
    if os.environ.get("MEDSEG_NAPARI_DOCS_IMG"):  # the user guide's picture of the Correct widget
        from skimage.io import imsave

        imsave(REPO / "docs" / "img" / "napari_correct.png", viewer.screenshot(canvas_only=False, flash=False),
               check_contrast=False)
    correct.interpolate()  # apply: filled, the kidney's colour over the CT at the layer's opacity
    applied, image = shots()
    a = organs.opacity
    blended = [(applied[r, c] - (1 - a) * image[r, c]) / a / 255 for r, c in pixels(interior, applied.shape)]
    np.testing.assert_allclose(np.median(blended, axis=0), colour, atol=0.03)
