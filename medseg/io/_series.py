"""What ``medseg info`` lists for each image found, and how ``--series`` picks one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from medseg.errors import InputError

__all__ = ["SeriesInfo", "select_series"]


@dataclass(frozen=True)
class SeriesInfo:
    """One readable image (a DICOM series, or one part of a split series, or an image file).

    ``key`` is what ``--series`` accepts besides ``index``: the SeriesInstanceUID, with a
    suffix such as ``#echo=2`` or ``#type=P`` where one UID had to be split into several
    volumes (echoes, magnitude/phase, orientations).
    """

    index: int
    key: str
    path: str
    format: str
    description: str = ""
    modality: str = ""
    shape: tuple[int, ...] | None = None
    spacing_mm: tuple[float, ...] | None = None
    orientation: str = ""
    n_slices: int = 0
    n_files: int = 0
    #: What stops or endangers a read (missing slices, non-uniform spacing, 2D, 4D without a choice).
    problems: tuple[str, ...] = ()
    #: Facts worth knowing that do not stop a read (split of a series, skipped files, gantry tilt).
    notes: tuple[str, ...] = ()
    readable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def one_line(self) -> str:
        shape = "x".join(str(s) for s in self.shape) if self.shape else "?"
        spacing = "x".join(f"{s:g}" for s in self.spacing_mm) if self.spacing_mm else "?"
        desc = f' "{self.description}"' if self.description else ""
        return f"[{self.index}] {self.modality or '?'}{desc} {shape} @ {spacing} mm {self.orientation} uid={self.key}"


def select_series(infos: list[SeriesInfo], series: str | int | None, where: str) -> SeriesInfo:
    """Pick the series the user asked for, or the only one; otherwise a clear error listing them."""
    readable = [info for info in infos if info.readable]
    if not infos:
        raise InputError(where, "holds no DICOM image series", "point to a folder with DICOM files")
    if series is None:
        if len(readable) == 1:
            return readable[0]
        listing = "; ".join(info.one_line() for info in infos)
        if not readable:
            problems = "; ".join(p for info in infos for p in info.problems[:1])
            raise InputError(where, f"has no readable series ({problems})",
                             "see `medseg info` for details")
        raise InputError(where, f"holds {len(readable)} series: {listing}",
                         "choose one with --series INDEX or --series UID")
    text = str(series)
    if text.isdigit():
        index = int(text)
        for info in infos:
            if info.index == index:
                return info
        raise InputError(where, f"has no series with index {index} (indices 0..{len(infos) - 1})",
                         "run `medseg info` to list them")
    matches = [info for info in infos if info.key == text]
    if not matches:
        matches = [info for info in infos if info.key.split("#", 1)[0] == text]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        listing = "; ".join(info.one_line() for info in matches)
        raise InputError(where, f"series UID {text} was split into {len(matches)} volumes: {listing}",
                         "choose one with --series INDEX or the full key with its #suffix")
    raise InputError(where, f"has no series with UID {text}", "run `medseg info` to list them")
