"""The Review widget: mark slices and lesions reviewed, see the coverage, jump to what is left.

One key marks the slice on screen reviewed (Shift+R, again: unmark); Shift+G goes to the next slice
not yet reviewed, Shift+L marks the selected lesion reviewed (the lesion table's tick, the same
mark), Shift+K goes to the next lesion not yet reviewed. Coverage reads e.g. "143/300 slices (k)
reviewed, 4/6 lesions". The marks are kept in the scan's correction session: saved with the case
(``provenance.json``, ``review``) and in the recovery file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton

from medseg.errors import InputError, MedsegError
from napari_plugin._corrections import ScanSession, current_slice, session_for
from napari_plugin._layers import layer_info
from napari_plugin._notify import notify_error, notify_info
from napari_plugin._widgets._viewer import unwrap, wrap_text

if TYPE_CHECKING:
    import napari.viewer

__all__ = ["SHORTCUTS", "ReviewWidget"]

SHORTCUTS = {
    "Shift-R": ("mark_slice", "mark this slice reviewed (again: unmark)"),
    "Shift-G": ("next_slice", "go to the next slice not reviewed"),
    "Shift-L": ("mark_lesion", "mark the selected lesion reviewed"),
    "Shift-K": ("next_lesion", "go to the next lesion not reviewed"),
}
_AXES = "ijk"


class ReviewWidget(Container):
    """Dock widget: review marks and coverage of a scan (napari injects ``viewer``)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = unwrap(viewer)
        self._viewer = viewer
        self.layer_choice = ComboBox(label="Scan", choices=self._layers, nullable=True)
        self.coverage = Label(value="")
        self.this_slice = Label(value="")
        self.lesions_left = Label(value="")
        self.buttons = {name: PushButton(text=text) for name, text in (
            ("mark_slice", "Mark slice reviewed (Shift+R)"), ("next_slice", "Next unreviewed slice (Shift+G)"),
            ("mark_lesion", "Mark lesion reviewed (Shift+L)"), ("next_lesion", "Next unreviewed lesion (Shift+K)"))}
        keys = "; ".join(f"{k.replace('-', '+')} {what}" for k, (_, what) in SHORTCUTS.items())
        self.keys = Label(value=f"Keys: {keys}")
        rows = [Container(widgets=[self.buttons[a], self.buttons[b]], layout="horizontal", labels=False)
                for a, b in (("mark_slice", "next_slice"), ("mark_lesion", "next_lesion"))]
        super().__init__(widgets=[self.layer_choice, self.coverage, self.this_slice, rows[0], self.lesions_left, rows[1],
                                  self.keys], labels=True)
        for label, lines in ((self.keys, 4), (self.coverage, 2), (self.lesions_left, 3)):
            wrap_text(label, lines)
        for name, button in self.buttons.items():
            button.changed.connect(lambda *_, n=name: getattr(self, n)())
        self.layer_choice.changed.connect(lambda *_: self.refresh())
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.dims.events.current_step.connect(lambda *_: self.refresh())
        for key, (method, what) in SHORTCUTS.items():
            def action(_viewer: Any, method: str = method) -> None:
                getattr(self, method)()
            action.__doc__ = f"medseg: {what}"
            viewer.bind_key(key, action, overwrite=True)
        self._on_layers_changed()

    def _layers(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers
                if layer_info(layer) is not None and layer_info(layer).role in ("labels", "lesions")]

    def _on_layers_changed(self, *_: Any) -> None:
        self.layer_choice.reset_choices()
        layers = [layer for _, layer in self._layers()]
        if self.layer_choice.value not in layers:
            self.layer_choice.value = layers[-1] if layers else None
        self.refresh()

    # --- the session ----------------------------------------------------------------------------------
    def session(self) -> ScanSession:
        layer = self.layer_choice.value
        if layer is None:
            raise InputError('"Scan"', "no labels or lesions layer", "open a case or segment a scan first")
        return session_for(self._viewer, layer)

    def _lesions(self, session: ScanSession) -> Any:
        return session.layers.get("lesions")

    def _present(self, session: ScanSession) -> list[int]:
        lesions = session.core.maps.get("lesions")
        if lesions is None:
            return []
        table = self._table(session)
        if table is not None and table.rows:
            return sorted(table.rows)
        from medseg.corrections.lesions import _ids

        return [int(i) for i in _ids(lesions.array)]

    def _table(self, session: ScanSession) -> Any:
        from napari_plugin._widgets.lesion_table import LesionTableWidget

        window = getattr(self._viewer, "window", None)
        docks = getattr(window, "dock_widgets", None) if window is not None else None
        for widget in (docks.values() if docks else []):
            if isinstance(widget, LesionTableWidget) and widget.layer is self._lesions(session):
                return widget
        return None

    def refresh(self) -> None:
        """Update the coverage and the state of the slice on screen."""
        layer = self.layer_choice.value
        if layer is None or layer_info(layer) is None:
            self.coverage.value = "no labels or lesions layer"
            return
        session = self.session()
        present = self._present(session) if "lesions" in session.layers else None
        try:
            axis, index = current_slice(self._viewer, layer)
        except MedsegError:
            self.this_slice.value = "3D view: no slice on screen"
            axis, index = None, None
        from medseg.corrections.slices import slice_axis_of

        shown_axis = axis if axis is not None else slice_axis_of(session.core.maps[session.name_of(layer)], None)
        self.coverage.value = session.core.review.describe(shown_axis, present)
        if index is not None:
            done = session.core.review.is_reviewed(axis, index)
            self.this_slice.value = f"slice {_AXES[axis]}={index}: {'reviewed' if done else 'not reviewed'}"
        if present is not None:
            left = sorted(set(present) - session.core.review.lesions)
            self.lesions_left.value = ("lesions not reviewed: " + ", ".join(map(str, left[:20])) +
                                       (" ..." if len(left) > 20 else "")) if left else "every lesion reviewed"

    # --- actions ---------------------------------------------------------------------------------------
    def mark_slice(self, reviewed: bool | None = None) -> tuple[int, int] | None:
        """Mark the slice on screen reviewed (toggle by default); returns (axis, index)."""
        try:
            session = self.session()
            axis, index = current_slice(self._viewer, self.layer_choice.value)
        except MedsegError as error:
            notify_error(error)
            return None
        review = session.core.review
        reviewed = not review.is_reviewed(axis, index) if reviewed is None else reviewed
        review.mark_slice(axis, index, reviewed)
        session.mark_reviewed()
        self.refresh()
        return axis, index

    def next_slice(self) -> int | None:
        """Go to the next slice not yet reviewed (along the slices on screen)."""
        try:
            session = self.session()
            layer = self.layer_choice.value
            axis, index = current_slice(self._viewer, layer)
        except MedsegError as error:
            notify_error(error)
            return None
        target = session.core.review.next_unreviewed_slice(axis, index)
        if target is None:
            notify_info("medseg: every slice is reviewed")
            return None
        geometry = layer_info(layer).geometry
        volume_index = np.asarray(geometry.volume_index(layer.world_to_data(self._viewer.dims.point)[-3:]), float)
        volume_index[axis] = target
        world = layer.data_to_world(geometry.layer_index(volume_index))
        lead = self._viewer.dims.ndim - 3
        for world_axis in self._viewer.dims.not_displayed:
            if world_axis >= lead:
                self._viewer.dims.set_point(world_axis, float(world[world_axis - lead]))
        self.refresh()
        return target

    def mark_lesion(self, lesion_id: int | None = None, reviewed: bool = True) -> int | None:
        """Mark a lesion (default: the lesions layer's selected one) reviewed, as the table's tick does."""
        try:
            session = self.session()
            lesions = self._lesions(session)
            if lesions is None:
                raise InputError('"Scan"', "has no lesions layer", "open or compute the scan's lesions")
            lesion_id = int(lesions.selected_label if lesion_id is None else lesion_id)
            if lesion_id not in self._present(session):
                raise InputError("review", f"there is no lesion {lesion_id}", "select a lesion (click its row in the "
                                 "lesion table)")
        except MedsegError as error:
            notify_error(error)
            return None
        table = self._table(session)
        if table is not None:
            table.set_reviewed(lesion_id, reviewed)  # the table's own tick updates the shared set
        session.core.review.mark_lesion(lesion_id, reviewed)
        session.mark_reviewed()
        self.refresh()
        return lesion_id

    def next_lesion(self) -> int | None:
        """Go to the next lesion not yet reviewed and select it."""
        try:
            session = self.session()
            lesions = self._lesions(session)
            if lesions is None:
                raise InputError('"Scan"', "has no lesions layer", "open or compute the scan's lesions")
        except MedsegError as error:
            notify_error(error)
            return None
        target = session.core.review.next_unreviewed_lesion(self._present(session), int(lesions.selected_label))
        if target is None:
            notify_info("medseg: every lesion is reviewed")
            return None
        table = self._table(session)
        if table is not None and target in table.rows:
            table.go_to_lesion(target)
        else:
            from medseg.corrections import lesion_bbox
            from napari_plugin._view import go_to

            volume = session.core.maps["lesions"]
            box = lesion_bbox(volume.array, target)
            centre = [(s.start + s.stop - 1) / 2 for s in box]
            go_to(self._viewer, volume.voxel_to_world(centre))
            lesions.selected_label = target
        self.refresh()
        return target
