"""The provenance log of a correction session: every operation, undo and redo, in order.

Each operation's record (from :mod:`medseg.corrections.slices`, :mod:`~medseg.corrections.lesions`,
or a paint stroke made with napari's own tools) gets a sequence number and the map it changed
(``"labels"`` or ``"lesions"``). Undo and redo are appended as records of their own (the log only
grows), and :meth:`CorrectionLog.active` gives the operations in effect now. The log is saved in
the case's ``provenance.json`` (``correction.operations``) and in the recovery file.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from medseg.corrections._delta import now_utc_ms

__all__ = ["CorrectionLog"]


class CorrectionLog:
    """Append-only list of operation records with the undo/redo state mirrored."""

    def __init__(self, records: list[dict[str, Any]] | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self._done: list[int] = []
        self._undone: list[int] = []
        for record in records or []:
            self._replay(dict(record))

    def __len__(self) -> int:
        return len(self.records)

    def _replay(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        operation = record.get("operation")
        if operation == "undo":
            if self._done and self._done[-1] == record.get("undoes"):
                self._undone.append(self._done.pop())
        elif operation == "redo":
            if self._undone and self._undone[-1] == record.get("redoes"):
                self._done.append(self._undone.pop())
        else:
            self._done.append(int(record["seq"]))
            self._undone.clear()

    def add(self, record: dict[str, Any], *, map_name: str) -> int:
        """Append an operation's record (a copy, with ``seq`` and ``map``); returns its seq."""
        seq = len(self.records) + 1
        entry = {"seq": seq, "map": map_name, **record}
        entry.setdefault("time_utc", now_utc_ms())
        self._replay(entry)
        return seq

    def undo(self, *, map_name: str) -> int | None:
        """Record that the last operation in effect was undone; returns its seq (None if none)."""
        if not self._done:
            return None
        seq = self._done[-1]
        self._replay({"seq": len(self.records) + 1, "map": map_name, "operation": "undo", "undoes": seq,
                      "time_utc": now_utc_ms()})
        return seq

    def redo(self, *, map_name: str) -> int | None:
        """Record that the last undone operation was applied again; returns its seq."""
        if not self._undone:
            return None
        seq = self._undone[-1]
        self._replay({"seq": len(self.records) + 1, "map": map_name, "operation": "redo", "redoes": seq,
                      "time_utc": now_utc_ms()})
        return seq

    def active(self) -> list[dict[str, Any]]:
        """The operation records in effect now (undone ones left out), in order."""
        done = set(self._done)
        return [r for r in self.records if r.get("seq") in done]

    def summary(self) -> dict[str, Any]:
        """Counts per operation and voxels changed per map, over the operations in effect."""
        active = self.active()
        voxels: Counter[str] = Counter()
        for record in active:
            voxels[record.get("map", "")] += int(record.get("voxels_changed", 0))
        return {"operations": len(active), "by_operation": dict(Counter(r["operation"] for r in active)),
                "undone": len(self.records) - len(active) - sum(r["operation"] in ("undo", "redo") for r in self.records),
                "voxels_changed_by_operations": dict(voxels)}

    def to_list(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records]
