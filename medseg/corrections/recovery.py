"""The recovery file: a correction session's working maps, written atomically, restored after a crash.

While a person corrects, the plugin writes the working label maps, the provenance log and the
review marks every few operations or minutes to one file **beside the case** (``CASE.recovery.npz``
next to the folder ``CASE``; outside it, so the case folder keeps only what its manifest lists),
or, for scans not yet saved as a case, to a recovery folder (``$MEDSEG_RECOVERY_DIR``, default
``~/.cache/medseg/recovery``) under a name derived from the scan's source. The write is atomic
(:func:`medseg.io.atomic_output`): killed at any instant, the previous recovery file or the new one
is there, never half of one. Saving the case removes it; reopening the scan after a crash finds it
and offers to restore it.

Format: a NumPy ``.npz`` (zip, deflate level 1: a 512 x 512 x 300 map with organs compresses in
well under a second) holding one array per map (``labels``, ``lesions``; volume order ``i, j, k``),
optionally a newer *region* of each (``labels.region.npy``: the box holding every change since the
full array was copied, so a session copies the whole maps once and then only what it changed), and
``meta.json`` (what it was based on, the grid, the regions' boxes, the log, the review marks).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.corrections._delta import now_utc_ms
from medseg.errors import InputError

__all__ = ["RECOVERY_FORMAT", "RECOVERY_SUFFIX", "Recovery", "read_recovery", "recovery_path", "write_recovery"]

RECOVERY_FORMAT = "medseg-recovery"
RECOVERY_SUFFIX = ".recovery.npz"
_META = "meta.json"


def recovery_path(*, case_path: str | os.PathLike = "", source: str = "", series_uid: str = "",
                  shape: tuple[int, ...] = (), folder: str | os.PathLike | None = None) -> Path:
    """Where a session's recovery file goes.

    ``case_path`` given: ``CASE.recovery.npz`` beside the case folder. Otherwise a file in
    ``folder`` (default ``$MEDSEG_RECOVERY_DIR`` or ``~/.cache/medseg/recovery``) named after
    the source and a hash of (source, series UID, shape), so the same scan finds it again.
    """
    if case_path:
        case = Path(case_path).resolve()
        return case.with_name(case.name + RECOVERY_SUFFIX)
    base = Path(folder or os.environ.get("MEDSEG_RECOVERY_DIR") or Path.home() / ".cache" / "medseg" / "recovery")
    key = hashlib.sha256(json.dumps([os.path.abspath(source) if source else "", series_uid,
                                     [int(s) for s in shape]]).encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(source.rstrip("/\\")).name)[:40] or "scan"
    return base / f"{stem}-{key}{RECOVERY_SUFFIX}"


@dataclass
class Recovery:
    """A recovery file read back: the maps (volume order), their grid and the session's records."""

    path: Path
    maps: dict[str, np.ndarray]
    affine: np.ndarray
    saved_utc: str
    based_on: dict[str, Any] = field(default_factory=dict)
    operations: list[dict[str, Any]] = field(default_factory=list)
    review: dict[str, Any] = field(default_factory=dict)
    label_names: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return next(iter(self.maps.values())).shape if self.maps else ()

    def fits(self, affine: np.ndarray, shape: tuple[int, ...], *, atol_mm: float = 1e-3) -> bool:
        """True when the maps lie on this grid (same shape and voxel centres)."""
        if tuple(shape) != tuple(self.shape):
            return False
        corners = np.array([[0, 0, 0, 1], [*[s - 1 for s in shape], 1]], dtype=np.float64)
        return bool(np.allclose(corners @ np.asarray(affine).T, corners @ self.affine.T, atol=atol_mm)
                    and np.allclose(np.asarray(affine)[:3, :3], self.affine[:3, :3], atol=atol_mm / max(shape)))

    def describe(self) -> str:
        """E.g. ``"12 operations, saved 2026-12-05T10:31:02.114Z"``."""
        n = sum(r.get("operation") not in ("undo", "redo") for r in self.operations)
        return f"{n} operation{'s' if n != 1 else ''}, saved {self.saved_utc}"


def write_recovery(path: str | os.PathLike, maps: dict[str, np.ndarray], *, affine: np.ndarray,
                   based_on: dict[str, Any] | None = None, operations: list[dict[str, Any]] | None = None,
                   review: dict[str, Any] | None = None, label_names: dict[Any, str] | None = None,
                   regions: dict[str, tuple[tuple[slice, ...], np.ndarray]] | None = None) -> Path:
    """Write the recovery file atomically; returns its path.

    Parameters
    ----------
    path : path-like
        From :func:`recovery_path`.
    maps : dict name -> ndarray
        The working maps in volume order (``"labels"``, ``"lesions"``); the caller passes copies
        when it keeps editing while this runs in another thread.
    affine : ndarray (4, 4)
        Their voxel -> RAS grid.
    based_on : dict
        What the session started from (case folder and version, source path, series UID).
    operations, review
        The provenance log records and the review marks (:meth:`ReviewState.to_dict`).
    label_names : dict value -> name
        Class names of ``labels``.
    regions : dict name -> (box, array), optional
        Newer values of a box of a map (written over ``maps[name][box]`` when read back).
    """
    from medseg.io import atomic_output

    meta = {"format": RECOVERY_FORMAT, "format_version": 1, "saved_utc": now_utc_ms(),
            "affine_ras": [[float(v) for v in row] for row in np.asarray(affine)],
            "based_on": dict(based_on or {}), "maps": {k: {"dtype": str(v.dtype), "shape": list(v.shape)}
                                                      for k, v in maps.items()},
            "label_names": {str(k): v for k, v in (label_names or {}).items()},
            "regions": {name: [[int(b.start), int(b.stop)] for b in box] for name, (box, _) in (regions or {}).items()},
            "operations": list(operations or []), "review": dict(review or {})}
    # zipfile + numpy's own .npy writer: np.load reads it; level 1 deflate is ~5x faster than
    # savez_compressed's level 6 and label maps (long runs of one value) compress nearly as well.
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED,
                                                     compresslevel=1) as archive:
        entries = [(f"{name}.npy", array) for name, array in maps.items()]
        entries += [(f"{name}.region.npy", array) for name, (_, array) in (regions or {}).items()]
        for entry, array in entries:
            with archive.open(entry, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
        archive.writestr(_META, json.dumps(meta, default=str))
    return Path(path)


def read_recovery(path: str | os.PathLike) -> Recovery:
    """Read a recovery file.

    Raises
    ------
    InputError
        Not a medseg recovery file, or damaged.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read(_META))
            if meta.get("format") != RECOVERY_FORMAT:
                raise InputError(path, "is not a medseg recovery file", "open the case folder itself")
            maps = {}
            for name in meta.get("maps", {}):
                with archive.open(f"{name}.npy") as handle:
                    maps[name] = np.lib.format.read_array(handle, allow_pickle=False)
            for name, box in (meta.get("regions") or {}).items():
                with archive.open(f"{name}.region.npy") as handle:
                    maps[name][tuple(slice(a, b) for a, b in box)] = np.lib.format.read_array(handle, allow_pickle=False)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"cannot be read as a recovery file ({exc})",
                         "discard it; the case folder beside it is intact") from exc
    return Recovery(path, maps, np.asarray(meta["affine_ras"], dtype=np.float64), meta.get("saved_utc", ""),
                    meta.get("based_on") or {}, meta.get("operations") or [], meta.get("review") or {},
                    meta.get("label_names") or {})
