"""Edits of label layers through napari's own undo history, and following them.

Three rules from napari 0.9.2's Labels layer, which every widget of this plugin goes through:

* **A bulk edit** is :func:`apply_labels_edit` (indices and values) or :func:`apply_delta` (a
  :class:`medseg.corrections.Delta`): inside ``layer.block_history()`` it calls
  ``layer.data_setitem`` (which records old and new values), then refreshes once; Ctrl+Z undoes the
  whole edit as one step. Writing ``layer.data[...]`` directly would bypass the history. The index
  arrays handed to napari are uint16 when the layer's axes allow it: napari keeps them in its
  history, so an undo step costs 3 x 2 bytes per changed voxel plus the old values, not 3 x 8.
* **Replacing a layer's array** is :func:`replace_labels_data`: assigning ``layer.data`` keeps the
  undo history, whose old steps would then replay onto the new array; this helper also clears it.
* **Following edits** is :func:`watch_edits`: napari emits ``layer.events.paint`` with the history
  item (bounding boxes and old values) for every paint stroke, fill, polygon and bulk edit, but
  nothing on undo/redo; so the watcher binds the layer's Ctrl+Z / Ctrl+Shift+Z to wrappers that
  undo, then report the region of the step they undid (kept in a mirror of napari's stack).

Callbacks receive a :class:`LabelsEdit` *before* napari has written a single unbatched paint
(napari emits the event first), so they should defer their work to the event loop (the lesion
table does, with a zero-delay timer, which also merges the events of one stroke).
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_plugin._layers import layer_info

__all__ = ["LabelsEdit", "apply_delta", "apply_labels_edit", "history_item_bytes", "redo", "replace_labels_data",
           "undo", "watch_edits"]

#: napari keeps this many undo steps per Labels layer (``Labels._history_limit`` in 0.9.2).
_HISTORY_STEPS = 100


@dataclass(frozen=True)
class LabelsEdit:
    """What one history step changed: a box in layer indices and the values it touched.

    Attributes
    ----------
    box : tuple of slice
        Bounding box (layer data indices, step 1) of the changed voxels.
    values : frozenset of int
        Label values present before or after the change in those voxels (0 included if touched).
    kind : {"edit", "undo", "redo", "replace"}
    voxels : int
        Voxels changed.
    new_values : frozenset of int
        Values written by the edit (for an undo: the values it wrote back).
    nbytes : int
        Memory the history step holds (index arrays, old and new values, masks).
    """

    box: tuple[slice, ...]
    values: frozenset[int]
    kind: str = "edit"
    voxels: int = 0
    new_values: frozenset[int] = frozenset()
    nbytes: int = 0


def history_item_bytes(item: Any) -> int:
    """Bytes a napari history item (list of atoms) holds: what one undo step costs."""
    total = 0
    for atom in item or []:
        if hasattr(atom, "slice_key"):
            total += int(np.asarray(atom.old_values).nbytes) + (0 if atom.mask is None else int(atom.mask.nbytes))
            continue
        indices, old, new = atom
        total += sum(int(np.asarray(i).nbytes) for i in indices) + int(np.asarray(old).nbytes) + int(np.asarray(new).nbytes)
    return total


def _atom_edit(atom: Any) -> tuple[tuple[slice, ...], set[int], set[int], set[int], int]:
    """Box, touched values, old values, new values and voxel count of one napari history atom
    (mask atom or (indices, old, new))."""
    if hasattr(atom, "slice_key"):  # napari >= 0.8 paint/fill/polygon: bbox + mask
        old = set(np.unique(np.asarray(atom.old_values)).tolist())
        new = {int(atom.new_value)}
        voxels = int(np.asarray(atom.old_values).size)  # under the mask, or the whole box when it all changed
        return tuple(atom.slice_key), old | new, old, new, voxels
    indices, old, new = atom
    indices = [np.asarray(i).ravel() for i in indices]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    old_values = set(np.unique(np.asarray(old)).tolist())
    new_values = set(np.unique(np.asarray(new)).tolist())
    return box, old_values | new_values, old_values, new_values, int(indices[0].size)


@dataclass(frozen=True)
class _Step:
    """The mirror of one napari history item."""

    box: tuple[slice, ...]
    values: frozenset[int]
    old_values: frozenset[int]
    new_values: frozenset[int]
    voxels: int
    nbytes: int


def _merge(item: list[Any]) -> _Step | None:
    box = None
    values: set[int] = set()
    old: set[int] = set()
    new: set[int] = set()
    voxels = 0
    for atom in item:
        atom_box, atom_values, atom_old, atom_new, atom_voxels = _atom_edit(atom)
        values |= atom_values
        old |= atom_old
        new |= atom_new
        voxels += atom_voxels
        box = atom_box if box is None else tuple(
            slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box, atom_box))
    if box is None:
        return None
    return _Step(box, frozenset(int(v) for v in values), frozenset(int(v) for v in old),
                 frozenset(int(v) for v in new), voxels, history_item_bytes(item))


class _Watcher:
    """The edit followers of one layer and the mirror of its undo/redo stacks."""

    def __init__(self, layer: Any) -> None:
        self.layer = weakref.ref(layer)
        self.callbacks: list[Callable[[LabelsEdit], None]] = []
        self.undo_stack: deque[_Step] = deque(maxlen=_HISTORY_STEPS)
        self.redo_stack: list[_Step] = []
        layer.events.paint.connect(self.on_paint)
        layer.bind_key("Control-Z", undo, overwrite=True)
        layer.bind_key("Control-Shift-Z", redo, overwrite=True)

    def emit(self, edit: LabelsEdit) -> None:
        layer = self.layer()
        info = layer_info(layer) if layer is not None else None
        if info is not None and edit.kind != "replace":
            info.edits += 1
        for callback in list(self.callbacks):
            callback(edit)

    def on_paint(self, event: Any) -> None:
        merged = _merge(list(event.value or []))
        if merged is None:
            return
        self.undo_stack.append(merged)
        self.redo_stack.clear()
        self.emit(LabelsEdit(merged.box, merged.values, "edit", merged.voxels, merged.new_values, merged.nbytes))

    def reset(self) -> None:
        self.undo_stack.clear()
        self.redo_stack.clear()


_WATCHERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _watcher(layer: Any) -> _Watcher:
    watcher = _WATCHERS.get(layer)
    if watcher is None:
        watcher = _WATCHERS[layer] = _Watcher(layer)
    return watcher


def watch_edits(layer: Any, callback: Callable[[LabelsEdit], None]) -> Callable[[], None]:
    """Call ``callback(LabelsEdit)`` after every edit, undo and redo of a Labels layer.

    Returns a function that stops following.
    """
    watcher = _watcher(layer)
    watcher.callbacks.append(callback)

    def stop() -> None:
        if callback in watcher.callbacks:
            watcher.callbacks.remove(callback)

    return stop


def undo(layer: Any) -> None:
    """Undo the last edit of ``layer`` (napari's history) and tell its watchers what changed."""
    watcher = _watcher(layer)
    layer.undo()
    if watcher.undo_stack:
        step = watcher.undo_stack.pop()
        watcher.redo_stack.append(step)
        watcher.emit(LabelsEdit(step.box, step.values, "undo", step.voxels, step.old_values, step.nbytes))


def redo(layer: Any) -> None:
    """Redo the last undone edit of ``layer`` and tell its watchers what changed."""
    watcher = _watcher(layer)
    layer.redo()
    if watcher.redo_stack:
        step = watcher.redo_stack.pop()
        watcher.undo_stack.append(step)
        watcher.emit(LabelsEdit(step.box, step.values, "redo", step.voxels, step.new_values, step.nbytes))


def apply_labels_edit(layer: Any, indices: tuple[np.ndarray, ...], values: Any) -> int:
    """Write ``values`` at ``indices`` of the layer through napari's ``data_setitem``, inside
    ``block_history()``, so the whole edit is ONE undoable step of napari's history.

    Parameters
    ----------
    layer : napari Labels layer
    indices : tuple of int arrays
        Layer data indices (numpy fancy indexing), one array per axis.
    values : int or int array
        New values (broadcast against the indices).

    Returns
    -------
    int
        Number of voxels whose value changed (0: nothing recorded in the history).
    """
    indices = tuple(np.asarray(i, dtype=np.intp) for i in indices)
    if not indices or indices[0].size == 0:
        return 0
    changed = int(np.count_nonzero(np.asarray(layer.data[indices]) != values))
    if not changed:
        return 0
    with layer.block_history():
        layer.data_setitem(indices, values, refresh=False)
    layer.refresh()
    return changed


def _index_dtype(shape: tuple[int, ...]) -> Any:
    """The smallest index type for ``shape``: napari keeps the index arrays in its history."""
    return np.uint16 if max(shape, default=0) <= np.iinfo(np.uint16).max + 1 else np.intp


def apply_delta(layer: Any, delta: Any, *, revert: bool = False, geometry: Any = None) -> int:
    """Apply a :class:`medseg.corrections.Delta` (volume indices) to a layer made by this plugin, as
    ONE undoable step of napari's history; returns the voxels changed.

    The delta's volume ``(i, j, k)`` indices are mapped to the layer's axes (the layer shows the
    volume through a transposed/flipped view, see :mod:`napari_plugin._geometry`).
    ``revert=True`` writes the old values back instead (not for undo: undo is napari's).
    ``geometry``: the grid the delta's indices refer to when it is not the layer's own (the same
    voxels stored in another order: another layer of the scan); default the layer's.
    """
    from napari_plugin._layers import layer_info

    if not delta:
        return 0
    geometry = geometry or layer_info(layer).geometry
    dtype = _index_dtype(layer.data.shape)
    volume_index = delta.indices(np.intp)
    layer_index = [None, None, None]
    for a, (axis, flip) in enumerate(zip(geometry.axes, geometry.flips)):
        index = volume_index[axis]
        if flip:
            index = geometry.volume_shape[axis] - 1 - index
        layer_index[a] = index.astype(dtype, copy=False)
    values = delta.old if revert else delta.new
    values = values.item() if values.ndim == 0 else values  # one value: napari keeps a scalar, not an array
    with layer.block_history():
        layer.data_setitem(tuple(layer_index), values, refresh=False)
    layer.refresh()
    return delta.voxels


def replace_labels_data(layer: Any, array: np.ndarray) -> None:
    """Give ``layer`` a new array and clear its undo/redo history (old steps must not replay on it).

    napari has no public call to clear a Labels history; making the layer read-only does it
    (``Labels._on_editable_changed``), so the layer is made read-only and editable again, and its
    paint mode restored.
    """
    mode = layer.mode
    layer.data = array
    layer.editable = False
    layer.editable = True
    layer.mode = mode
    watcher = _WATCHERS.get(layer)
    if watcher is not None:
        watcher.reset()
        box = tuple(slice(0, s) for s in np.shape(array))
        watcher.emit(LabelsEdit(box, frozenset(), "replace"))
