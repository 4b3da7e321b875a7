"""A correction session without a GUI: maps, the provenance log, review marks, auto-save.

The napari plugin keeps one :class:`CorrectionSession` per scan (organ labels + lesion instances)
and applies deltas through napari's own undo history; a script uses the same session to apply
operations and undo them itself::

    session = CorrectionSession({"labels": organs, "lesions": lesions}, based_on={"case_path": "p001"})
    session.apply(interpolate(session.maps["labels"], 3), "labels")      # restore a missed kidney
    session.apply(delete_lesion(session.maps["lesions"], 4), "lesions")
    session.undo()                                                        # exact: the lesion is back
    write_case(..., provenance={"correction": session.provenance()})

The maps are edited in place (they are the napari layers' data in the plugin).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.corrections._delta import Correction, Delta
from medseg.corrections.log import CorrectionLog
from medseg.corrections.recovery import Recovery, recovery_path, write_recovery
from medseg.corrections.review import ReviewState
from medseg.volume import Volume

__all__ = ["AUTOSAVE_EVERY_OPERATIONS", "AUTOSAVE_EVERY_S", "CorrectionSession"]

#: Auto-save after this many operations ...
AUTOSAVE_EVERY_OPERATIONS = 5
#: ... or this many seconds after the first unsaved one.
AUTOSAVE_EVERY_S = 120.0


class CorrectionSession:
    """Maps being corrected, with their log, review state and recovery file.

    Parameters
    ----------
    maps : dict name -> Volume
        ``"labels"`` (class map) and/or ``"lesions"`` (instance map), on one grid. Edited in place.
    based_on : dict
        What they came from (``case_path``, ``case_version``, ``source``, ``series_uid``): kept in
        the recovery file and the provenance.
    recovery_file : path, optional
        Default: :func:`~medseg.corrections.recovery.recovery_path` from ``based_on``.
    every_operations, every_s : auto-save policy (see :meth:`autosave_due`).
    """

    def __init__(self, maps: dict[str, Volume], *, based_on: dict[str, Any] | None = None,
                 recovery_file: str | Path | None = None, every_operations: int = AUTOSAVE_EVERY_OPERATIONS,
                 every_s: float = AUTOSAVE_EVERY_S) -> None:
        if not maps:
            raise ValueError("a session needs at least one map")
        first = next(iter(maps.values()))
        for name, volume in maps.items():
            if not volume.same_grid(first):
                raise ValueError(f"map {name!r} is not on the grid of the others")
        self.maps = dict(maps)
        self.based_on = dict(based_on or {})
        self.log = CorrectionLog()
        self.review = ReviewState(first.shape)
        self.recovery_file = Path(recovery_file) if recovery_file else recovery_path(
            case_path=self.based_on.get("case_path", ""), source=self.based_on.get("source", ""),
            series_uid=self.based_on.get("series_uid", ""), shape=first.shape)
        self.every_operations = int(every_operations)
        self.every_s = float(every_s)
        self.unsaved = 0
        self._first_unsaved: float | None = None
        self._deltas: list[tuple[str, Delta]] = []
        self._undone: list[tuple[str, Delta]] = []

    @property
    def affine(self) -> np.ndarray:
        return next(iter(self.maps.values())).affine

    # --- the log -----------------------------------------------------------------------------------
    def record(self, correction: Correction | dict[str, Any], map_name: str) -> int:
        """Log an operation applied elsewhere (napari applied its delta); returns its seq."""
        record = correction.record if isinstance(correction, Correction) else correction
        seq = self.log.add(record, map_name=map_name)
        self.touched()
        return seq

    def record_undo(self, map_name: str) -> int | None:
        seq = self.log.undo(map_name=map_name)
        self.touched()
        return seq

    def record_redo(self, map_name: str) -> int | None:
        seq = self.log.redo(map_name=map_name)
        self.touched()
        return seq

    def touched(self) -> None:
        """One more unsaved change (operation, undo, redo, review mark)."""
        self.unsaved += 1
        if self._first_unsaved is None:
            self._first_unsaved = time.monotonic()

    # --- applying without napari ---------------------------------------------------------------------
    def apply(self, correction: Correction, map_name: str) -> int:
        """Apply a correction to ``maps[map_name]`` and log it; returns its seq."""
        array = self.maps[map_name].array
        if not correction.delta.matches(array):
            raise ValueError("the correction was computed on other values than the map holds now")
        correction.delta.apply(array)
        self._deltas.append((map_name, correction.delta))
        self._undone.clear()
        return self.record(correction, map_name)

    def undo(self) -> int | None:
        """Revert the last applied correction exactly; returns its seq (None if none)."""
        if not self._deltas:
            return None
        name, delta = self._deltas.pop()
        delta.revert(self.maps[name].array)
        self._undone.append((name, delta))
        return self.record_undo(name)

    def redo(self) -> int | None:
        if not self._undone:
            return None
        name, delta = self._undone.pop()
        delta.apply(self.maps[name].array)
        self._deltas.append((name, delta))
        return self.record_redo(name)

    # --- provenance ----------------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        """``correction`` part of a case's provenance: the operations (all, in order) and a summary."""
        return {"operations": self.log.to_list(), "summary": self.log.summary(), "based_on": dict(self.based_on)}

    def review_record(self) -> dict[str, Any]:
        lesions = self.maps.get("lesions")
        present = None
        if lesions is not None:
            array = lesions.array
            present = np.unique(array).tolist()
        return self.review.to_dict(present)

    # --- auto-save -----------------------------------------------------------------------------------
    def autosave_due(self, now: float | None = None) -> bool:
        """True after ``every_operations`` unsaved changes, or ``every_s`` seconds after the first."""
        if not self.unsaved:
            return False
        now = time.monotonic() if now is None else now
        return self.unsaved >= self.every_operations or (now - (self._first_unsaved or now)) >= self.every_s

    def snapshot(self, *, maps: bool = True) -> dict[str, Any]:
        """Copies of everything the recovery file holds (taken in the GUI thread, written in another);
        ``maps=False`` leaves the maps out (the caller copies what changed)."""
        labels = self.maps.get("labels")
        names = {lab.value: lab.name for lab in labels.label_set} if labels is not None and labels.label_set else {}
        return {"maps": {k: np.array(v.array, order="C", copy=True) for k, v in self.maps.items()} if maps else {},
                "affine": np.array(self.affine), "based_on": dict(self.based_on), "regions": {},
                "operations": self.log.to_list(), "review": self.review.to_dict(), "label_names": names}

    def mark_autosaved(self) -> None:
        self.unsaved = 0
        self._first_unsaved = None

    def write_recovery(self, snapshot: dict[str, Any] | None = None) -> Path:
        """Write the recovery file now (from ``snapshot`` if given, e.g. in a worker thread)."""
        snap = snapshot or self.snapshot()
        if snapshot is None:
            self.mark_autosaved()
        return write_recovery(self.recovery_file, snap["maps"], affine=snap["affine"], based_on=snap["based_on"],
                              operations=snap["operations"], review=snap["review"], label_names=snap["label_names"],
                              regions=snap.get("regions"))

    def saved(self) -> None:
        """The case was saved: the recovery file is no longer needed."""
        self.mark_autosaved()
        self.recovery_file.unlink(missing_ok=True)

    def restore(self, recovery: Recovery) -> dict[str, Delta]:
        """The deltas that turn the current maps into the recovered ones (not applied), and the log and
        review marks taken over from the recovery file."""
        deltas = {}
        for name, array in recovery.maps.items():
            if name not in self.maps:
                continue
            current = self.maps[name].array
            changed = current != array
            box = tuple(slice(0, n) for n in current.shape)
            deltas[name] = Delta.between(current, box, changed, array[changed])
        self.log = CorrectionLog(recovery.operations)
        self.review = ReviewState.from_dict(recovery.review, self.review.shape)
        return deltas
