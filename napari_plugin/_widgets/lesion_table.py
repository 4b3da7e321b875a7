"""The lesion table: one row per lesion, click to go there, follows edits lesion by lesion.

Columns: id, organ, volume (mL), RECIST long x short axis (mm, on the axial slice where the
lesion is longest), mean HU, reviewed. Sortable by any column (numbers sort as numbers). Clicking
a row moves the viewer to the lesion's slice of longest axis, centres it and selects its label on
the lesions layer. After a paint stroke, fill, bulk edit, undo or redo of the lesions layer, only
the lesions whose ids the edit touched are measured again, on a box around them
(:func:`medseg.lesions._rows.measure_lesion`), not the whole volume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QStandardItem, QStandardItemModel
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from medseg.lesions import LesionMeasurement, lesion_table
from medseg.lesions._rows import measure_lesion
from napari_plugin._edits import LabelsEdit, watch_edits
from napari_plugin._geometry import same_world_grid
from napari_plugin._layers import layer_info, volume_from_layer
from napari_plugin._notify import catching
from napari_plugin._view import go_to
from napari_plugin._widgets._viewer import unwrap

if TYPE_CHECKING:
    import napari.viewer

__all__ = ["COLUMNS", "LesionTableWidget"]

COLUMNS = ("Lesion", "Organ", "Volume (mL)", "Long × short (mm)", "Mean HU", "Reviewed")
_ID_ROLE = Qt.ItemDataRole.UserRole
_SORT_ROLE = Qt.ItemDataRole.UserRole + 1  # numbers sort as numbers, shown as formatted text


def _rows_match(array: np.ndarray, rows: list[LesionMeasurement]) -> bool:
    """Whether stored rows still describe ``array``: every lesion's voxel count inside its box, and
    no voxel outside them (one pass over the map, no measuring)."""
    if int(np.count_nonzero(array)) != sum(int(row.voxel_count) for row in rows):
        return False
    for row in rows:
        box = tuple(slice(a, b) for a, b in zip(row.bbox_start_ijk, row.bbox_stop_ijk))
        if int(np.count_nonzero(array[box] == row.id)) != int(row.voxel_count):
            return False
    return True


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...]) -> tuple[slice, ...]:
    if a is None:
        return b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


class LesionTableWidget(Container):
    """Dock widget listing the lesions of a lesions layer (napari injects ``viewer``)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = unwrap(viewer)
        self._viewer = viewer
        self._layer_choice = ComboBox(label="Lesions layer", choices=self._lesion_layers, nullable=True)
        self._summary = Label(value="No lesions layer")
        super().__init__(widgets=[self._layer_choice, self._summary], labels=True)
        self.model = QStandardItemModel(0, len(COLUMNS))
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        self.model.setSortRole(_SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # by id until the user clicks a header
        self.native.layout().addWidget(self.table)
        self.rows: dict[int, LesionMeasurement] = {}
        self.layer: Any = None
        self._stop_watching = None
        self._pending: dict[int, tuple[slice, ...] | None] = {}
        self._pending_full = False
        self._flush_timer = QTimer()
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(0)
        self._flush_timer.timeout.connect(self._flush)
        #: Ids measured again after edits, in order (for tests and the status line).
        self.remeasured: list[int] = []
        #: The worker measuring the whole table, while it runs.
        self.measuring: Any = None
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.model.itemChanged.connect(self._on_item_changed)
        self._layer_choice.changed.connect(self._on_layer_chosen)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_layers_changed()

    # --- which layer ---------------------------------------------------------------------------
    def _lesion_layers(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers
                if layer_info(layer) is not None and layer_info(layer).role == "lesions"]

    def _on_layers_changed(self, event: Any = None) -> None:
        self._layer_choice.reset_choices()
        layers = [layer for _, layer in self._lesion_layers()]
        if event is not None and getattr(event, "type", "") == "inserted" and event.value in layers:
            self._layer_choice.value = event.value  # a newly opened or computed lesions layer
        elif self.layer not in layers:
            self._layer_choice.value = layers[-1] if layers else None
        if self._layer_choice.value is not self.layer:
            self.attach(self._layer_choice.value)

    def _on_layer_chosen(self, layer: Any) -> None:
        if layer is not self.layer:
            self.attach(layer)

    @catching
    def attach(self, layer: Any) -> None:
        """Show the lesions of ``layer`` (a lesions layer) and follow its edits."""
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        self.layer = layer
        self.rows = {}
        if layer is not None:
            self._stop_watching = watch_edits(layer, self._on_edit)
            known = layer_info(layer).lesion_rows
            if known is not None and _rows_match(volume_from_layer(layer).array, known):
                self.rows = {row.id: row for row in known}
                layer_info(layer).rows_edits = layer_info(layer).edits
            else:
                self._measure_all_in_background()
        self._fill()

    # --- measuring -----------------------------------------------------------------------------
    def _context(self) -> dict[str, Any]:
        """The image (HU) and organ map on the lesions' grid, from the viewer's layers."""
        info = layer_info(self.layer)
        context: dict[str, Any] = {}
        for layer in self._viewer.layers:
            other = layer_info(layer)
            key = "image" if other is not None and other.role == "image" else "organs"
            if other is None or other.role not in ("image", "labels") or key in context:
                continue
            if same_world_grid(other.geometry, info.geometry):
                context[key] = volume_from_layer(layer, grid=self.layer)
        return context

    def _set_rows(self, rows: Any) -> None:
        self.rows = {row.id: row for row in rows}
        if self.layer is not None:
            info = layer_info(self.layer)
            info.lesion_rows = list(self.rows.values())
            # Up to date with every edit so far (the Correct widget then trusts their boxes).
            info.rows_edits = info.edits if not self._pending and not self._pending_full else -1

    def _measure_all_in_background(self) -> None:
        """Measure every lesion in a worker thread (a large map takes seconds); edits made
        meanwhile are measured after it."""
        from napari.qt.threading import create_worker

        layer = self.layer
        self._summary.value = "measuring lesions…"
        worker = create_worker(lesion_table, volume_from_layer(layer), **self._context(),
                               _progress={"desc": f"medseg: measuring lesions of {layer.name}"})
        self.measuring = worker

        def done(table: Any) -> None:
            if self.layer is layer:
                self._set_rows(table.rows)
                self._fill()
                if self._pending:
                    self._flush_timer.start()

        worker.returned.connect(done)
        worker.finished.connect(lambda: setattr(self, "measuring", None))
        worker.start()

    def _on_edit(self, edit: LabelsEdit) -> None:
        if edit.kind == "replace":
            self._pending_full = True
        else:
            box = layer_info(self.layer).geometry.volume_box(edit.box)
            for value in edit.values:
                if value:
                    self._pending[int(value)] = _union(self._pending.get(int(value)), box)
        # napari emits the event before it writes an unbatched paint: measure once the loop is free.
        self._flush_timer.start()

    @catching
    def _flush(self) -> None:
        if self.layer is None:
            return
        if getattr(self, "measuring", None) is not None:
            return  # the whole table is being measured; pending edits follow it
        if self._pending_full:
            self._pending_full = False
            self._pending.clear()
            self._measure_all_in_background()
            return
        pending, self._pending = self._pending, {}
        lesions = volume_from_layer(self.layer)
        context = self._context()
        for lesion_id, box in pending.items():
            old = self.rows.get(lesion_id)
            if old is not None:
                box = _union(box, tuple(slice(a, b) for a, b in zip(old.bbox_start_ijk, old.bbox_stop_ijk)))
            row = measure_lesion(lesions, lesion_id, within=box, **context)
            self.remeasured.append(lesion_id)
            if row is None:
                self.rows.pop(lesion_id, None)
            else:
                self.rows[lesion_id] = row
        self._set_rows(list(self.rows.values()))
        self._fill()

    # --- the table -----------------------------------------------------------------------------
    def _fill(self) -> None:
        reviewed = layer_info(self.layer).reviewed if self.layer is not None else set()
        selected = self.selected_id()
        header = self.table.horizontalHeader()
        self.model.blockSignals(True)
        self.model.removeRows(0, self.model.rowCount())
        for row in sorted(self.rows.values(), key=lambda m: m.id):
            hu = row.intensity_mean
            cells = [
                (str(row.id), row.id),
                (row.organ or "-", row.organ or "~"),
                (f"{row.volume_ml:.2f}", float(row.volume_ml)),
                (f"{row.axial_long_axis_mm:.1f} × {row.axial_short_axis_mm:.1f}", float(row.axial_long_axis_mm)),
                ("-" if hu is None else f"{hu:.0f}", -1e9 if hu is None else float(hu)),
                ("yes" if row.id in reviewed else "no", int(row.id in reviewed)),
            ]
            items = []
            for text, key in cells:
                item = QStandardItem(text)
                item.setEditable(False)
                item.setData(key, _SORT_ROLE)
                item.setData(int(row.id), _ID_ROLE)
                items.append(item)
            items[-1].setCheckable(True)
            items[-1].setCheckState(Qt.CheckState.Checked if row.id in reviewed else Qt.CheckState.Unchecked)
            self.model.appendRow(items)
        self.model.blockSignals(False)
        self.model.layoutChanged.emit()
        if header.isSortIndicatorShown():
            self.model.sort(header.sortIndicatorSection(), header.sortIndicatorOrder())
        if selected is not None and selected in self.rows:
            self._select_quietly(selected)
        total = sum(row.volume_ml for row in self.rows.values())
        measurable = sum(row.axial_long_axis_mm >= 10.0 for row in self.rows.values())
        self._summary.value = (f"{len(self.rows)} lesions, {total:.1f} mL, {measurable} measurable (RECIST ≥ 10 mm), "
                               f"{len(reviewed & set(self.rows))} reviewed") if self.layer is not None else "No lesions layer"

    def _select_quietly(self, lesion_id: int) -> None:
        r = self.row_of(lesion_id)
        if r >= 0:
            selection = self.table.selectionModel()
            selection.blockSignals(True)
            self.table.selectRow(r)
            selection.blockSignals(False)
            self.table.viewport().update()

    def row_of(self, lesion_id: int) -> int:
        """The table row (as currently sorted) showing ``lesion_id``; -1 if none."""
        for r in range(self.model.rowCount()):
            if self.model.item(r, 0).data(_ID_ROLE) == lesion_id:
                return r
        return -1

    def cell(self, row: int, column: int | str) -> str:
        """The text shown in a cell (``column`` by index or :data:`COLUMNS` name)."""
        column = COLUMNS.index(column) if isinstance(column, str) else column
        return self.model.item(row, column).text()

    def selected_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return int(self.model.item(rows[0].row(), 0).data(_ID_ROLE)) if rows else None

    def _on_selection(self, *_: Any) -> None:
        lesion_id = self.selected_id()
        if lesion_id is not None:
            self.go_to_lesion(lesion_id)

    def _on_item_changed(self, item: QStandardItem) -> None:
        if item.column() != COLUMNS.index("Reviewed") or self.layer is None:
            return
        reviewed = layer_info(self.layer).reviewed
        lesion_id = int(item.data(_ID_ROLE))
        if item.checkState() == Qt.CheckState.Checked:
            reviewed.add(lesion_id)
        else:
            reviewed.discard(lesion_id)
        QTimer.singleShot(0, self._fill)  # not inside the model's own signal

    def set_reviewed(self, lesion_id: int, reviewed: bool = True) -> None:
        """Tick (or untick) a lesion's Reviewed box, as a click on it does."""
        r = self.row_of(lesion_id)
        if r >= 0:
            item = self.model.item(r, COLUMNS.index("Reviewed"))
            item.setCheckState(Qt.CheckState.Checked if reviewed else Qt.CheckState.Unchecked)

    # --- going to a lesion -----------------------------------------------------------------------
    def lesion_point(self, lesion_id: int) -> np.ndarray:
        """RAS mm of the lesion on its slice of longest axis: the long axis' middle (the centroid
        moved onto that slice when the lesion has no axis, e.g. a single voxel)."""
        row = self.rows[lesion_id]
        if row.axial_long_axis_mm > 0:
            return np.mean(np.asarray(row.long_axis_ras_mm, dtype=np.float64), axis=0)
        info = layer_info(self.layer)
        ijk = np.asarray(row.centroid_ijk, dtype=np.float64)
        from medseg.lesions import slice_axis

        ijk[slice_axis(info.geometry.affine)] = row.axial_slice
        return ijk @ info.geometry.affine[:3, :3].T + info.geometry.affine[:3, 3]

    def go_to_lesion(self, lesion_id: int) -> None:
        """Move to the lesion's slice of longest axis, centre it, select its label."""
        if self.layer is None or lesion_id not in self.rows:
            return
        go_to(self._viewer, self.lesion_point(lesion_id))
        self.layer.selected_label = int(lesion_id)
        self._viewer.layers.selection.active = self.layer
        self._select_quietly(lesion_id)
