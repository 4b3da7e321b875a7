"""One scan's correction session in the viewer: its layers, napari's undo history, log, review, recovery.

A :class:`ScanSession` ties the organ labels layer and the lesions layer of one scan (layers on the
same world grid) to a :class:`medseg.corrections.CorrectionSession` whose maps are views of the
layers' data. Operations (:mod:`medseg.corrections`) are computed on those views and applied with
:func:`napari_plugin._edits.apply_delta`: one entry of napari's own history per operation, so
Ctrl+Z / Ctrl+Shift+Z undo and redo paint strokes and bulk operations alike, in order. Every edit
of the layers is logged: the plugin's operations with their records, napari's paint/fill/erase
strokes as ``"paint"`` records, undo and redo as such. Every few changes the working maps go to
the recovery file, written in a background thread from copies taken here.

No Qt: widgets call this and show what it returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from medseg.corrections import Correction, CorrectionSession, Recovery, read_recovery
from medseg.errors import InputError
from napari_plugin._edits import LabelsEdit, apply_delta, watch_edits
from napari_plugin._geometry import same_world_grid
from napari_plugin._layers import layer_info, volume_from_layer
from napari_plugin._view import layer_slice_index

__all__ = ["ScanSession", "current_slice", "session_for", "volume_point"]

_AXES = "ijk"


def _editable_layers(viewer: Any, layer: Any) -> dict[str, Any]:
    """The labels and lesions layers of ``layer``'s scan (same world grid), ``layer`` first."""
    info = layer_info(layer)
    if info is None or info.role not in ("labels", "lesions"):
        raise InputError(getattr(layer, "name", "layer"), "is not a label or lesion layer opened with medseg",
                         "choose the organ labels or the lesions of a scan")
    found = {info.role: layer}
    for other in viewer.layers:
        other_info = layer_info(other)
        if other is layer or other_info is None or other_info.role not in ("labels", "lesions"):
            continue
        if other_info.role not in found and other_info.session is None and \
                same_world_grid(other_info.geometry, info.geometry):
            found[other_info.role] = other
    return found


def session_for(viewer: Any, layer: Any) -> ScanSession:
    """The session of ``layer``'s scan (made on first use, shared by its labels and lesions layers)."""
    info = layer_info(layer)
    if info is not None and info.session is not None:
        return info.session
    return ScanSession(viewer, _editable_layers(viewer, layer))


def current_slice(viewer: Any, layer: Any) -> tuple[int, int]:
    """(volume axis, slice index) of the plane on screen, in ``layer``'s volume indices.

    Raises
    ------
    InputError
        In napari's 3D view (no slice is on screen).
    """
    if viewer.dims.ndisplay != 2:
        raise InputError("view", "the viewer shows 3D, not a slice", "switch to the 2D view (Ctrl+Y)")
    geometry = layer_info(layer).geometry
    lead = viewer.dims.ndim - 3
    hidden = [a - lead for a in viewer.dims.not_displayed if a >= lead]
    layer_axis = hidden[-1]
    axis = geometry.axes[layer_axis]
    index = geometry.volume_index(np.asarray(layer_slice_index(layer, viewer), dtype=float)[-3:])
    return int(axis), round(float(index[axis]))


def volume_point(layer: Any, world: Any) -> tuple[int, int, int]:
    """Volume (i, j, k) of the voxel at a world point (RAS mm)."""
    index = np.asarray(layer.world_to_data(np.asarray(world, dtype=float)), dtype=float)[-3:]
    ijk = layer_info(layer).geometry.volume_index(index)
    return tuple(round(float(v)) for v in ijk)  # type: ignore[return-value]


class ScanSession:
    """The correction session of one scan: ``layers["labels"]`` and/or ``layers["lesions"]``."""

    def __init__(self, viewer: Any, layers: dict[str, Any]) -> None:
        self.viewer = viewer
        self.layers = dict(layers)
        first = next(iter(self.layers.values()))
        info = layer_info(first)
        labels_info = layer_info(self.layers.get("labels", first))
        based_on = {"case_path": labels_info.case_path,
                    "case_version": (labels_info.provenance or {}).get("case_version"),
                    "source": info.source.path, "series_uid": info.source.series_uid}
        # Every map in the first layer's array order (the same voxels; LAS labels of an LPS series are
        # views in LPS order), so one delta's indices mean the same voxels in every map.
        self.geometry = info.geometry
        self.core = CorrectionSession({name: self._volume(layer) for name, layer in self.layers.items()},
                                      based_on=based_on)
        lesions = self.layers.get("lesions")
        if lesions is not None:  # the lesion table's ticks and the review's lesions are one set
            self.core.review.lesions = layer_info(lesions).reviewed
        self._applying = False
        self._stops = [watch_edits(layer, lambda edit, name=name: self._on_edit(name, edit))
                       for name, layer in self.layers.items()]
        for layer in self.layers.values():
            layer_info(layer).session = self
        #: Called with a short message after every change (widgets refresh their status).
        self.listeners: list[Callable[[str], None]] = []
        #: Changes since the case was last saved (operations, undo/redo, review marks).
        self.changes = 0
        self.last_nbytes = 0
        self._writer: threading.Thread | None = None
        self._base: dict[str, np.ndarray] = {}
        self._dirty_boxes: dict[str, tuple[slice, ...]] = {}
        self._lock = threading.Lock()
        self._busy = False
        self._pending: dict[str, Any] | None = None
        self.autosaves = 0
        self.autosave_error = ""
        #: A recovery file an earlier session of this scan left (looked for once, before this one writes).
        self.found_recovery: Recovery | None = self.find_recovery()

    # --- which map ---------------------------------------------------------------------------------
    def name_of(self, layer: Any) -> str:
        for name, other in self.layers.items():
            if other is layer:
                return name
        raise InputError(getattr(layer, "name", "layer"), "is not part of this scan's session",
                         "choose the scan's organ labels or lesions layer")

    def volume(self, name: str) -> Any:
        return self.core.maps[name]

    def _volume(self, layer: Any) -> Any:
        first = next(iter(self.layers.values()))
        return volume_from_layer(layer, grid=None if layer is first else first)

    def _refresh_map(self, name: str) -> None:
        self.core.maps[name] = self._volume(self.layers[name])

    # --- operations --------------------------------------------------------------------------------
    def run(self, layer: Any, compute: Callable[[Any], Correction]) -> Correction:
        """Compute a correction on ``layer``'s map and apply it as one step of napari's history."""
        name = self.name_of(layer)
        correction = compute(self.core.maps[name])
        self.apply(layer, correction)
        return correction

    def apply(self, layer: Any, correction: Correction) -> None:
        name = self.name_of(layer)
        if not correction.delta.matches(self.core.maps[name].array):
            raise InputError(layer.name, "changed since the operation was computed", "run the operation again")
        self._applying = True
        try:
            apply_delta(layer, correction.delta, geometry=self.geometry)
        finally:
            self._applying = False
        self.core.record(correction, name)
        self._changed(f"{correction.record['operation']}: {correction.voxels} voxels")

    def _on_edit(self, name: str, edit: LabelsEdit) -> None:
        if edit.kind == "replace":
            self._refresh_map(name)
            self._base.pop(name, None)  # a new array: copied whole at the next auto-save
            return
        self.last_nbytes = edit.nbytes
        self._dirty(name, self.geometry.volume_box(edit.box))
        if edit.kind == "undo":
            self.core.record_undo(name)
            self._changed("undone")
        elif edit.kind == "redo":
            self.core.record_redo(name)
            self._changed("redone")
        elif not self._applying:  # napari's own paint, fill, erase or polygon
            box = self.geometry.volume_box(edit.box)
            from medseg.corrections.slices import slice_axis_of

            axis = slice_axis_of(self.core.maps[name], None)
            painted = sorted(edit.new_values)
            self.core.record({"operation": "erase" if painted == [0] else "paint", "label": painted[0] if
                              len(painted) == 1 else painted, "axis": _AXES[axis],
                              "slices": [box[axis].start, box[axis].stop - 1], "voxels_changed": edit.voxels}, name)
            self._changed(f"painted {edit.voxels} voxels")

    def _changed(self, message: str) -> None:
        """After every change; the recovery file is written later, when the event loop is free
        (:meth:`autosave_if_due`, the Correct widget's timer), never inside an operation."""
        self.changes += 1
        for listener in list(self.listeners):
            listener(message)

    def _dirty(self, name: str, box: tuple[slice, ...]) -> None:
        """Grow the box of map ``name`` that changed since its full copy was taken."""
        old = self._dirty_boxes.get(name)
        self._dirty_boxes[name] = box if old is None else tuple(
            slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(old, box))

    def mark_reviewed(self) -> None:
        """A review mark changed (the review widget marked a slice or lesion)."""
        self.core.touched()
        self.changes += 1

    # --- auto-save ---------------------------------------------------------------------------------
    def autosave_if_due(self) -> bool:
        """Write the recovery file when the session's policy says so (every few changes or minutes)."""
        if self.core.autosave_due():
            self.autosave()
            return True
        return False

    def snapshot(self) -> dict[str, Any]:
        """What the recovery file needs, copied here in the GUI thread (which edits the maps): each
        map whole the first time, afterwards only the box holding every change since that copy."""
        snapshot = self.core.snapshot(maps=False)
        regions = {}
        for name, volume in self.core.maps.items():
            if name not in self._base:
                self._base[name] = np.array(volume.array, order="C", copy=True)
                self._dirty_boxes.pop(name, None)
            elif name in self._dirty_boxes:
                box = self._dirty_boxes[name]
                regions[name] = (box, np.array(volume.array[box], order="C", copy=True))
        snapshot["maps"] = dict(self._base)  # read only by the writer thread; replaced, never changed in place
        snapshot["regions"] = regions
        return snapshot

    def autosave(self, *, wait: bool = False) -> None:
        """Write the recovery file from copies of the maps, in a background thread."""
        snapshot = self.snapshot()
        self.core.mark_autosaved()
        with self._lock:
            if self._busy:  # the newest snapshot is written when the running write ends
                self._pending = snapshot
            else:
                self._busy = True
                self._writer = threading.Thread(target=self._write, args=(snapshot,), name="medseg recovery",
                                                daemon=True)
                self._writer.start()
        if wait:
            self.wait_for_autosave()

    def _write(self, snapshot: dict[str, Any]) -> None:
        while True:
            try:
                self.core.write_recovery(snapshot)
                self.autosaves += 1
                self.autosave_error = ""
            except OSError as error:  # a full disk must not stop the corrections; said in the widget
                self.autosave_error = f"recovery file not written: {error}"
            with self._lock:
                if self._pending is None:
                    self._busy = False
                    return
                snapshot, self._pending = self._pending, None

    def wait_for_autosave(self, timeout: float = 60.0) -> None:
        if self._writer is not None:
            self._writer.join(timeout)

    # --- recovery ----------------------------------------------------------------------------------
    def find_recovery(self) -> Recovery | None:
        """A recovery file left by an earlier session of this scan that fits it, or None."""
        path = self.core.recovery_file
        if not path.is_file():
            return None
        try:
            recovery = read_recovery(path)
        except InputError:
            return None
        first = next(iter(self.core.maps.values()))
        if not recovery.fits(first.affine, first.shape) or not set(recovery.maps) & set(self.core.maps):
            return None
        before, now = recovery.based_on.get("case_version"), self.core.based_on.get("case_version")
        if self.core.based_on.get("case_path") and before is not None and now is not None and before != now:
            return None  # made on another version of the case
        return recovery

    def restore(self, recovery: Recovery) -> int:
        """Apply a recovery file's maps (one undoable step per layer), log and review; returns voxels."""
        reviewed = self.core.review.lesions
        deltas = self.core.restore(recovery)
        reviewed.clear()
        reviewed.update(self.core.review.lesions)
        self.core.review.lesions = reviewed
        voxels = 0
        self._applying = True
        try:
            for name, delta in deltas.items():
                voxels += apply_delta(self.layers[name], delta, geometry=self.geometry)
        finally:
            self._applying = False
        self.found_recovery = None
        self.core.record({"operation": "restore", "from": str(recovery.path), "recovery_saved_utc": recovery.saved_utc,
                          "voxels_changed": voxels}, next(iter(deltas), "labels"))
        self._changed(f"restored {voxels} voxels from {recovery.path.name}")
        return voxels

    def discard_recovery(self) -> None:
        self.found_recovery = None
        self.wait_for_autosave()
        self.core.recovery_file.unlink(missing_ok=True)

    def saved(self, case_path: str, version: int | None) -> None:
        """The scan was saved as a case: the recovery file goes, a new log starts for the next version."""
        from medseg.corrections import CorrectionLog, recovery_path

        self.wait_for_autosave()
        self.core.saved()
        self._base.clear()
        self._dirty_boxes.clear()
        self.core.based_on.update(case_path=str(case_path), case_version=version)
        self.core.recovery_file = recovery_path(case_path=case_path)
        self.core.log = CorrectionLog()
        self.changes = 0

    def close(self) -> None:
        for stop in self._stops:
            stop()
        for layer in self.layers.values():
            if layer_info(layer) is not None and layer_info(layer).session is self:
                layer_info(layer).session = None
