"""The lesion operations of the Correct widget: seeds and cut line, split, merge, delete, new id, renumber.

A mixin of :class:`napari_plugin._widgets.correct.CorrectWidget` (it uses the widget's layer, viewer,
``_run`` and status); kept apart so that each file stays one concern.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_plugin._corrections import volume_point
from napari_plugin._layers import layer_info
from napari_plugin._notify import notify_error

__all__ = ["CUT", "SEEDS", "LesionOperations"]

SEEDS, CUT = "medseg seeds", "medseg cut line"


class LesionOperations:
    """Split, merge, delete, new lesion id and renumber, on the widget's chosen layer."""

    def _known(self) -> dict | None:
        """Lesion boxes and voxel counts from the lesion table's rows, when they are up to date with
        every edit and in the session's array order (they spare a search of the whole map; the
        operation checks each count before it trusts a box)."""
        info = layer_info(self.layer)
        session = info.session
        if info.role != "lesions" or not info.lesion_rows or info.rows_edits != info.edits or session is None:
            return None
        mine, theirs = info.geometry, session.geometry
        if mine.axes != theirs.axes or mine.flips != theirs.flips or not np.allclose(mine.affine, theirs.affine):
            return None
        return {row.id: (tuple(slice(a, b) for a, b in zip(row.bbox_start_ijk, row.bbox_stop_ijk)), row.voxel_count)
                for row in info.lesion_rows}

    def _world_points(self, name: str, kind: str) -> list[Any]:
        if name not in self._viewer.layers:
            return []
        layer = self._viewer.layers[name]
        if kind == "points":
            return [layer.data_to_world(p) for p in np.asarray(layer.data)]
        lines = [s for s, t in zip(layer.data, layer.shape_type) if t in ("line", "path")]
        return [layer.data_to_world(p) for p in np.asarray(lines[-1])[[0, -1]]] if lines else []

    def seeds(self) -> Any:
        """Add (or select) the seeds layer in add mode: click two points inside the lesion."""
        if SEEDS not in self._viewer.layers:
            self._viewer.add_points(ndim=3, name=SEEDS, size=4, face_color="yellow")
        layer = self._viewer.layers[SEEDS]
        self._viewer.layers.selection.active = layer
        layer.mode = "add"
        return layer

    def cut(self) -> Any:
        """Add (or select) the cut-line layer in line mode: draw a line across the lesion."""
        if CUT not in self._viewer.layers:
            self._viewer.add_shapes(ndim=3, name=CUT, edge_color="yellow", edge_width=1.0)
        layer = self._viewer.layers[CUT]
        self._viewer.layers.selection.active = layer
        layer.mode = "add_line"
        return layer

    def split(self, *, seeds: list[Any] | None = None, cut: list[Any] | None = None) -> Any:
        """Split at two seeds or along a cut line (world mm; default: the seeds / cut-line layers)."""
        from medseg.corrections import split_lesion

        if seeds is None and cut is None:
            seeds = self._world_points(SEEDS, "points")[-2:] or None
            cut = None if seeds else (self._world_points(CUT, "line") or None)
        if seeds is None and cut is None:
            notify_error("split: no seeds and no cut line. Click Place seeds and put two points inside the lesion, "
                         "or Draw cut line across it")
            return None

        def compute(volume: Any) -> Any:
            if seeds is not None:
                return split_lesion(volume, seeds=[volume_point(self.layer, p) for p in seeds], known=self._known())
            axis, _ = self._current_slice()
            return split_lesion(volume, cut=[volume_point(self.layer, p) for p in cut], axis=axis,
                                known=self._known())

        correction = self._run(compute, lesions_only=True)
        if correction is not None:
            for name in (SEEDS, CUT):
                if name in self._viewer.layers:
                    self._viewer.layers[name].data = []
            self._viewer.layers.selection.active = self.layer
            self.layer.selected_label = correction.record["new_lesion"]
        return correction

    def merge(self, ids: list[int] | None = None) -> Any:
        """Merge the lesions listed (default: the field, else the lesions under the seeds)."""
        from medseg.corrections import merge_lesions

        if ids is None:
            text = self.merge_ids.value.replace(",", " ").split()
            try:
                ids = [int(t) for t in text]
            except ValueError:
                notify_error(f'"Lesions to merge" ({self.merge_ids.value}): not lesion ids. Write ids such as 3, 7')
                return None
        seeds = self._world_points(SEEDS, "points")

        def compute(volume: Any) -> Any:
            wanted = ids or [int(volume.array[volume_point(self.layer, p)]) for p in seeds]
            return merge_lesions(volume, wanted, known=self._known())

        correction = self._run(compute, lesions_only=True)
        if correction is not None:
            self.merge_ids.value = ""
            self.layer.selected_label = correction.record["into"]
        return correction

    def delete(self, lesion_id: int | None = None) -> Any:
        from medseg.corrections import delete_lesion

        def compute(volume: Any) -> Any:
            return delete_lesion(volume, self._selected_value() if lesion_id is None else lesion_id,
                                 known=self._known())

        return self._run(compute)

    def renumber(self) -> Any:
        from medseg.corrections import renumber_lesions

        return self._run(renumber_lesions, lesions_only=True)

    def new_lesion(self) -> int | None:
        """Select a new lesion id (one above the largest) for painting; nothing is written."""
        from medseg.corrections import new_lesion_id

        if self.layer is None or layer_info(self.layer).role != "lesions":
            notify_error(f"{getattr(self.layer, 'name', 'Layer')}: new lesion ids are for a lesions layer. Choose the "
                         "lesions layer")
            return None
        self.layer.selected_label = new_lesion_id(self.layer.data)
        self.layer.mode = "paint"
        self.status.value = f"painting new lesion {self.layer.selected_label}"
        return int(self.layer.selected_label)
