"""The Correct widget: slice-by-slice correction of organ labels and lesions, in napari's one undo history.

napari's own tools paint, erase and fill (brush size shown in mm; editing the slice on screen only
and keeping other labels, by default). The widget adds what napari lacks, each as ONE step of
napari's history (Ctrl+Z undoes it, Ctrl+Shift+Z redoes it, in order with paint strokes): fill the
holes of the selected label in the slice, interpolate it between drawn slices (with a preview),
split a lesion (two seeds, or a cut line), merge lesions, delete one, a new lesion id, renumber.
Operations are computed by :mod:`medseg.corrections` on the layer's data and logged for the case's
provenance; the working maps go to a recovery file every few operations. Errors (a label drawn on
one slice only, seeds in two lesions, a merge of one lesion) are one notification; nothing changes.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
)
from qtpy.QtCore import QTimer

from medseg.errors import InputError, MedsegError
from napari_plugin._corrections import ScanSession, current_slice, session_for
from napari_plugin._edits import redo, undo
from napari_plugin._geometry import layer_geometry
from napari_plugin._layers import layer_info
from napari_plugin._notify import notify_error, notify_info, notify_warning
from napari_plugin._widgets._lesion_operations import LesionOperations
from napari_plugin._widgets._viewer import unwrap, wrap_text

if TYPE_CHECKING:
    import napari.viewer

__all__ = ["SHORTCUTS", "CorrectWidget"]

#: Key -> (method of the widget, what it does). Bound on the viewer, so they work whatever layer is
#: active (napari's Labels layer binds none of them).
SHORTCUTS = {
    "Shift-I": ("interpolate", "interpolate the label (again: apply the preview)"),
    "Shift-H": ("fill_holes", "fill holes in this slice"),
    "Shift-S": ("split", "split the lesion at the seeds / cut line"),
    "Shift-M": ("merge", "merge lesions"),
    "Shift-D": ("delete", "delete the selected lesion"),
    "Shift-N": ("new_lesion", "new lesion id"),
}
_NAPARI_KEYS = "Ctrl+Z undo, Ctrl+Shift+Z redo, 2 paint, 1 erase, 4 fill, [ ] brush size, M new label (napari)"
PREVIEW = "medseg preview"


class CorrectWidget(LesionOperations, Container):
    """Dock widget: correction operations on a labels or lesions layer (napari injects ``viewer``)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = unwrap(viewer)
        self._viewer = viewer
        self.layer_choice = ComboBox(label="Layer", choices=self._editable, nullable=True)
        self.label_info = Label(value="")
        self.brush_mm = FloatSpinBox(label="Brush (mm)", value=5.0, min=0.1, max=200.0, step=0.5)
        self.slice_only = CheckBox(text="Edit this slice only", value=True)
        self.keep_others = CheckBox(text="Keep other labels", value=True)
        self.preview = CheckBox(text="Preview before applying", value=True)
        self.all_gaps = CheckBox(text="Interpolate every gap (not only next to this slice)", value=False)
        buttons = {name: PushButton(text=text) for name, text in (
            ("fill_holes", "Fill holes (Shift+H)"), ("interpolate", "Interpolate (Shift+I)"),
            ("apply_preview", "Apply preview"), ("cancel_preview", "Cancel preview"),
            ("seeds", "Place seeds"), ("cut", "Draw cut line"), ("split", "Split (Shift+S)"),
            ("merge", "Merge (Shift+M)"), ("delete", "Delete lesion (Shift+D)"), ("new_lesion", "New lesion (Shift+N)"),
            ("renumber", "Renumber 1..n"), ("undo", "Undo (Ctrl+Z)"), ("redo", "Redo (Ctrl+Shift+Z)"),
            ("restore", "Restore"), ("discard", "Discard"), ("train", "Add to training set"))}
        self.buttons = buttons
        self.merge_ids = LineEdit(label="Lesions to merge", value="", tooltip="e.g. 3, 7 (empty: the lesions under the seeds)")
        self.recovery_info = Label(value="")
        self.training_folder = FileEdit(label="Training folder", mode="d", value="")
        self.status = Label(value="")
        keys = "; ".join(f"{k.replace('-', '+')} {what}" for k, (_, what) in SHORTCUTS.items())
        self.keys = Label(value=f"Keys: {keys}; {_NAPARI_KEYS}")

        def row(*names: str) -> Container:
            return Container(widgets=[buttons[n] for n in names], layout="horizontal", labels=False)

        self.preview_row = row("apply_preview", "cancel_preview")
        self.recovery_row = Container(widgets=[self.recovery_info, buttons["restore"], buttons["discard"]],
                                      layout="horizontal", labels=False)
        super().__init__(widgets=[
            self.layer_choice, self.label_info, self.brush_mm, self.slice_only, self.keep_others,
            row("fill_holes", "interpolate"), self.preview, self.all_gaps, self.preview_row,
            row("seeds", "cut", "split"), self.merge_ids, row("merge", "delete"), row("new_lesion", "renumber"),
            row("undo", "redo"), self.recovery_row, self.training_folder, buttons["train"], self.status, self.keys],
            labels=True)
        for label, lines in ((self.keys, 6), (self.status, 3), (self.recovery_info, 2)):
            wrap_text(label, lines)
        self.preview_row.visible = False
        self.recovery_row.visible = False
        for name, button in buttons.items():
            button.changed.connect(lambda *_, n=name: getattr(self, n)())
        self.layer_choice.changed.connect(self._on_layer)
        self.brush_mm.changed.connect(self._set_brush)
        self.slice_only.changed.connect(self._set_edit_mode)
        self.keep_others.changed.connect(self._set_edit_mode)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        self.layer: Any = None
        self._configured: weakref.WeakSet = weakref.WeakSet()
        #: (layer, correction) shown in the preview layer, waiting for Apply.
        self.pending: tuple[Any, Any] | None = None
        self.recovery: Any = None
        self.last: Any = None  #: the last correction applied (for tests and the status line)
        self._autosave_timer = QTimer(self.native)
        self._autosave_timer.setInterval(2_000)  # checks the policy (every 5 changes or 2 minutes)
        self._autosave_timer.timeout.connect(self._autosave_if_due)
        self._autosave_timer.start()
        install_shortcuts(viewer, self)
        self._on_layers_changed()

    # --- layer ---------------------------------------------------------------------------------------
    def _editable(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers
                if layer_info(layer) is not None and layer_info(layer).role in ("labels", "lesions")]

    def _on_layers_changed(self, event: Any = None) -> None:
        self.layer_choice.reset_choices()
        layers = [layer for _, layer in self._editable()]
        for layer in layers:  # the plugin's defaults, once per layer: this slice only, other labels kept
            if layer not in self._configured:
                self._configured.add(layer)
                layer.n_edit_dimensions = 2
                layer.preserve_labels = True
        if self.layer not in layers:
            self.layer_choice.value = layers[-1] if layers else None
        elif event is not None and getattr(event, "type", "") == "inserted" and event.value in layers \
                and layer_info(event.value).role == "lesions":
            self.layer_choice.value = event.value
        if self.layer_choice.value is not self.layer:
            self._on_layer(self.layer_choice.value)

    def _on_layer(self, layer: Any) -> None:
        if self.layer is not None:
            for event, callback in ((self.layer.events.selected_label, self._show_label),
                                    (self.layer.events.brush_size, self._show_brush)):
                event.disconnect(callback)
        self.layer = layer
        self.cancel_preview()
        if layer is None:
            self.label_info.value = "no labels or lesions layer"
            return
        layer.events.selected_label.connect(self._show_label)
        layer.events.brush_size.connect(self._show_brush)
        self.slice_only.value = layer.n_edit_dimensions == 2
        self.keep_others.value = bool(layer.preserve_labels)
        self._set_brush(self.brush_mm.value)
        self._show_label()
        try:
            session = self.session()
        except MedsegError as error:
            notify_error(error)
            return
        if session.found_recovery is not None and self.recovery is None:
            self.recovery = session.found_recovery
            self.recovery_info.value = f"Unsaved corrections found ({self.recovery.describe()})"
            self.recovery_row.visible = True
            notify_warning(f"medseg: unsaved corrections of {layer.name} were found ({self.recovery.describe()}); "
                           "Restore or Discard them in the Correct widget")

    def session(self) -> ScanSession:
        if self.layer is None:
            raise InputError('"Layer"', "no labels or lesions layer chosen", "open a case or segment a scan first")
        session = session_for(self._viewer, self.layer)
        if self._on_session_change not in session.listeners:
            session.listeners.append(self._on_session_change)
        return session

    def _on_session_change(self, message: str) -> None:
        session = self.layer and layer_info(self.layer).session
        saved = f"; recovery file: {session.autosaves} writes" if session and session.autosaves else ""
        self.status.value = message + saved + (f" ({session.autosave_error})" if session and session.autosave_error else "")

    def _show_label(self, *_: Any) -> None:
        layer = self.layer
        info = layer_info(layer)
        value = int(layer.selected_label)
        if info.role == "labels" and info.label_set is not None and value in info.label_set.values:
            name = info.label_set.name_of(value)
        else:
            name = "background" if value == 0 else ("lesion" if info.role == "lesions" else f"class {value}")
        self.label_info.value = f"Selected: {value} ({name}) on {layer.name}"

    def _set_brush(self, mm: float) -> None:
        if self.layer is not None:
            self.layer.brush_size = max(1.0, float(mm) / float(min(self.layer.scale)))

    def _show_brush(self, *_: Any) -> None:
        mm = float(self.layer.brush_size) * float(min(self.layer.scale))
        self.brush_mm.changed.disconnect(self._set_brush)
        self.brush_mm.value = round(mm, 2)
        self.brush_mm.changed.connect(self._set_brush)
        self.brush_mm.tooltip = f"{self.layer.brush_size:g} voxels of {min(self.layer.scale):g} mm"

    def _set_edit_mode(self, *_: Any) -> None:
        if self.layer is not None:
            self.layer.n_edit_dimensions = 2 if self.slice_only.value else 3
            self.layer.preserve_labels = bool(self.keep_others.value)

    # --- running an operation ------------------------------------------------------------------------
    def _run(self, compute: Any, *, lesions_only: bool = False) -> Any:
        """Compute and apply a correction; a MedsegError becomes one notification (nothing changes)."""
        try:
            if lesions_only and layer_info(self.layer).role != "lesions":
                raise InputError(self.layer.name, "is an organ map; split, merge and renumber work on lesions",
                                 "choose the lesions layer")
            session = self.session()
            correction = session.run(self.layer, compute)
        except MedsegError as error:
            notify_error(error)
            self.status.value = "nothing changed: see the notification"
            return None
        self.last = correction
        return correction

    def _selected_value(self) -> int:
        value = int(self.layer.selected_label) if self.layer is not None else 0
        if value <= 0:
            raise InputError('"Selected label"', "is the background (0)", "select the label to work on (pick it with 5, or "
                             "click its lesion in the table)")
        return value

    def _current_slice(self) -> tuple[int, int]:
        return current_slice(self._viewer, self.layer)

    def fill_holes(self) -> Any:
        from medseg.corrections import fill_holes

        def compute(volume: Any) -> Any:
            axis, index = self._current_slice()
            return fill_holes(volume, self._selected_value(), index=index, axis=axis)

        return self._run(compute)

    def interpolate(self, *, preview: bool | None = None, all_gaps: bool | None = None) -> Any:
        """Interpolate the selected label; with a preview, the first call shows it, the second applies."""
        from medseg.corrections import interpolate

        if self.pending is not None and self.pending[0] is self.layer:
            return self.apply_preview()
        preview = self.preview.value if preview is None else preview
        all_gaps = self.all_gaps.value if all_gaps is None else all_gaps

        def compute(volume: Any) -> Any:
            axis, index = self._current_slice()
            return interpolate(volume, self._selected_value(), axis=axis, around=None if all_gaps else index)

        if not preview:
            return self._run(compute)
        try:
            session = self.session()
            correction = compute(session.volume(session.name_of(self.layer)))
        except MedsegError as error:
            notify_error(error)
            return None
        self._show_preview(session, correction)
        return correction

    def _show_preview(self, session: ScanSession, correction: Any) -> None:
        self.cancel_preview()
        delta = correction.delta
        volume = session.volume(session.name_of(self.layer))
        crop = volume.crop(delta.box)
        array = np.zeros(crop.shape, dtype=volume.array.dtype)
        array[delta.mask] = delta.new
        # Placed like the layer (the box's own grid), coloured like it; not a medseg layer (not listed).
        geometry = layer_geometry(crop.affine, crop.shape)
        shown = self._viewer.add_labels(geometry.to_layer(array), name=PREVIEW, colormap=self.layer.colormap,
                                        opacity=1.0, **geometry.layer_kwargs())
        shown.contour = 1
        shown.editable = False
        self._viewer.layers.selection.active = self.layer
        self.pending = (self.layer, correction)
        self.preview_row.visible = True
        record = correction.record
        self.status.value = (f"preview: {correction.voxels} voxels of label {record['label']} on slices "
                             f"{record['slices'][0]}-{record['slices'][1]}; Apply (Shift+I) or Cancel")

    def apply_preview(self) -> Any:
        if self.pending is None:
            return None
        layer, correction = self.pending
        self.cancel_preview()
        try:
            layer_info(layer).session.apply(layer, correction)
        except MedsegError as error:
            notify_error(error)
            return None
        self.last = correction
        return correction

    def cancel_preview(self) -> None:
        self.pending = None
        if PREVIEW in self._viewer.layers:
            self._viewer.layers.remove(PREVIEW)
        self.preview_row.visible = False

    def undo(self) -> None:
        if self.layer is not None:
            undo(self.layer)

    def redo(self) -> None:
        if self.layer is not None:
            redo(self.layer)

    # --- recovery, auto-save, training ---------------------------------------------------------------
    def _autosave_if_due(self) -> None:
        session = layer_info(self.layer).session if self.layer is not None and layer_info(self.layer) else None
        if session is not None:
            session.autosave_if_due()

    def restore(self) -> int:
        if self.recovery is None:
            return 0
        session = self.session()
        voxels = session.restore(self.recovery)
        notify_info(f"medseg: restored {voxels} voxels of unsaved corrections ({self.recovery.describe()})")
        self.recovery = None
        self.recovery_row.visible = False
        return voxels

    def discard(self) -> None:
        if self.recovery is not None:
            self.session().discard_recovery()
        self.recovery = None
        self.recovery_row.visible = False

    def train(self, folder: str | None = None) -> Any:
        """Add image + corrected labels + provenance as a case of the training folder."""
        from napari_plugin._writer import add_to_training_set

        folder = str(folder or self.training_folder.value or "").strip()
        if folder in ("", "."):
            notify_error('"Training folder": none chosen. Choose the folder that collects corrected cases')
            return None
        try:
            session = self.session()
            written = add_to_training_set(folder, session, self._viewer)
        except MedsegError as error:
            notify_error(error)
            return None
        notify_info(f"medseg: added {written.name} to the training set {folder} (medseg train {folder} --from default)")
        self.status.value = f"added to training set: {written}"
        return written


def install_shortcuts(viewer: Any, widget: CorrectWidget) -> None:
    """Bind :data:`SHORTCUTS` on the viewer to ``widget``'s actions."""
    for key, (method, what) in SHORTCUTS.items():
        def action(_viewer: Any, method: str = method) -> None:
            getattr(widget, method)()
        action.__doc__ = f"medseg: {what}"
        viewer.bind_key(key, action, overwrite=True)
