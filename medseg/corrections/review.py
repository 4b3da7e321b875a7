"""What a person has reviewed: slices (per slice axis) and lesions, and the coverage.

A reviewer marks the slice on screen as reviewed (one key in napari), ticks lesions in the lesion
table, and jumps to the next slice or lesion not yet reviewed. :class:`ReviewState` keeps those
marks as plain data (saved in the case's provenance and in the recovery file) and answers the
coverage questions: "143/300 slices", "4 of 6 lesions".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReviewState"]

_AXES = "ijk"


def _ranges(values: Iterable[int]) -> list[list[int]]:
    """[[first, last], ...] runs of consecutive integers (compact JSON for long slice lists)."""
    out: list[list[int]] = []
    for v in sorted({int(x) for x in values}):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


def _from_ranges(ranges: Iterable[Iterable[int]]) -> set[int]:
    out: set[int] = set()
    for first, last in ranges:
        out.update(range(int(first), int(last) + 1))
    return out


@dataclass
class ReviewState:
    """Reviewed slices and lesions of one scan.

    Attributes
    ----------
    shape : tuple of int
        The volume's shape (slices along axis ``a``: ``shape[a]``).
    slices : dict of int -> set of int
        Slice axis -> indices of the slices marked reviewed.
    lesions : set of int
        Lesion ids marked reviewed (the same set object the lesion table ticks).
    """

    shape: tuple[int, int, int]
    slices: dict[int, set[int]] = field(default_factory=dict)
    lesions: set[int] = field(default_factory=set)

    # --- marking -------------------------------------------------------------------------------
    def mark_slice(self, axis: int, index: int, reviewed: bool = True) -> None:
        if not 0 <= int(index) < self.shape[axis]:
            raise ValueError(f"slice {index} is outside 0..{self.shape[axis] - 1}")
        marked = self.slices.setdefault(int(axis), set())
        if reviewed:
            marked.add(int(index))
        else:
            marked.discard(int(index))

    def is_reviewed(self, axis: int, index: int) -> bool:
        return int(index) in self.slices.get(int(axis), set())

    def mark_lesion(self, lesion_id: int, reviewed: bool = True) -> None:
        if reviewed:
            self.lesions.add(int(lesion_id))
        else:
            self.lesions.discard(int(lesion_id))

    # --- coverage ------------------------------------------------------------------------------
    def coverage(self, axis: int) -> tuple[int, int]:
        """(slices reviewed, slices) along ``axis``."""
        return len(self.slices.get(int(axis), set())), int(self.shape[axis])

    def lesion_coverage(self, present: Iterable[int]) -> tuple[int, int]:
        """(lesions reviewed, lesions) among the ids ``present``."""
        ids = {int(i) for i in present if int(i)}
        return len(ids & self.lesions), len(ids)

    def describe(self, axis: int, present: Iterable[int] | None = None) -> str:
        """E.g. ``"143/300 slices (k) reviewed, 4/6 lesions"``."""
        done, total = self.coverage(axis)
        text = f"{done}/{total} slices ({_AXES[axis]}) reviewed"
        if present is not None:
            lesions_done, lesions_total = self.lesion_coverage(present)
            text += f", {lesions_done}/{lesions_total} lesions"
        return text

    def next_unreviewed_slice(self, axis: int, current: int, step: int = 1) -> int | None:
        """The next slice after ``current`` (in the direction of ``step``, wrapping around) not yet
        reviewed; None when every slice is."""
        n = int(self.shape[axis])
        marked = self.slices.get(int(axis), set())
        direction = 1 if step >= 0 else -1
        for offset in range(1, n + 1):
            index = (int(current) + direction * offset) % n
            if index not in marked:
                return index
        return None

    def next_unreviewed_lesion(self, present: Iterable[int], current: int | None = None) -> int | None:
        """The next lesion id after ``current`` (by id, wrapping around) not yet reviewed."""
        todo = sorted({int(i) for i in present if int(i)} - self.lesions)
        if not todo:
            return None
        later = [i for i in todo if current is None or i > int(current)]
        return (later or todo)[0]

    # --- plain data ----------------------------------------------------------------------------
    def to_dict(self, present: Iterable[int] | None = None) -> dict[str, Any]:
        """JSON form: slice runs per axis, the coverage, reviewed lesions."""
        out: dict[str, Any] = {"shape": list(self.shape), "slices_reviewed": {}, "coverage": {},
                               "reviewed_lesions": sorted(self.lesions)}
        for axis, marked in sorted(self.slices.items()):
            if marked:
                out["slices_reviewed"][_AXES[axis]] = _ranges(marked)
                done, total = self.coverage(axis)
                out["coverage"][_AXES[axis]] = {"reviewed": done, "slices": total,
                                                "fraction": round(done / total, 4) if total else 0.0}
        if present is not None:
            done, total = self.lesion_coverage(present)
            out["coverage"]["lesions"] = {"reviewed": done, "lesions": total}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], shape: tuple[int, int, int] | None = None) -> ReviewState:
        shape = tuple(int(s) for s in (shape or data.get("shape") or (0, 0, 0)))  # type: ignore[assignment]
        slices = {_AXES.index(axis): _from_ranges(runs) for axis, runs in (data.get("slices_reviewed") or {}).items()}
        return cls(shape, slices, {int(i) for i in data.get("reviewed_lesions") or []})  # type: ignore[arg-type]
