"""Training data from CT series with RT Structure Sets (``medseg train DATA`` on a DICOM tree).

Public collections of annotated CT (lung tumours, organs at risk) come as DICOM: per patient a
CT series and an RTSTRUCT drawn on it. :func:`rtstruct_training_cases` finds every RTSTRUCT under
DATA, reads it onto the CT series it references (:func:`medseg.io._rtstruct.import_rtstruct`:
ROI names mapped to medseg classes, GTVs as the lesion class, planning structures left out) and
keeps the result as a case in a cache folder, keyed by the RTSTRUCT's bytes and the options, so a
second run reads the label maps without rasterising again. Nothing is written inside DATA.

The image of each case is the DICOM series itself when its folder holds that one series
(``medseg.io.load_volume(folder)`` reads it), else a copy stored in the cached case.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.progress import ProgressCallback, report

__all__ = ["find_rtstructs", "rtstruct_training_cases", "default_cache_dir", "CACHE_VERSION"]

#: Changes whenever the import would give other label maps for the same files.
CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """``$MEDSEG_CACHE_DIR/rtstruct``, else ``$XDG_CACHE_HOME/medseg/rtstruct`` (``~/.cache``)."""
    root = os.environ.get("MEDSEG_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "medseg")
    return Path(root) / "rtstruct"


def find_rtstructs(root: str | os.PathLike) -> list[Path]:
    """Every RTSTRUCT file under ``root`` (hidden folders skipped), sorted by path.

    Only files with the DICOM preamble are opened, and only their first tags read.
    """
    from medseg.io._rtstruct_file import is_rtstruct

    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            try:
                with open(path, "rb") as handle:
                    head = handle.read(132)
            except OSError:
                continue
            if head[128:132] == b"DICM" and is_rtstruct(path):
                found.append(path)
    return found


def _key(rtstruct: Path, rois: Sequence[str] | None, aliases: Any) -> str:
    from medseg import __version__
    from medseg.case import sha256_of

    extra = aliases if aliases is None or isinstance(aliases, dict) else str(Path(aliases).resolve())
    text = json.dumps([CACHE_VERSION, __version__, sha256_of(rtstruct), str(rtstruct.resolve()),
                       sorted(rois) if rois else None, extra], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _one_series(folder: str) -> bool:
    from medseg.io import scan

    try:
        return len([i for i in scan(folder) if i.extra.get("image")]) == 1
    except InputError:
        return False


def rtstruct_training_cases(data: str | os.PathLike, *, cache: str | os.PathLike | None = None,
                            rois: Sequence[str] | None = None, aliases: Any = None,
                            progress: ProgressCallback | None = None):
    """Training cases from the CT series + RTSTRUCT pairs under ``data``; ``None`` when it holds
    no RTSTRUCT (so :func:`medseg.training.datasets.discover_cases` tries its other layouts).

    Parameters
    ----------
    data : path-like
        A folder tree of DICOM files: CT series and the RTSTRUCTs drawn on them (any layout:
        the referenced series is found by its SeriesInstanceUID, else beside the RTSTRUCT).
    cache : path-like, optional
        Where the imported cases are kept (default :func:`default_cache_dir`).
    rois, aliases
        As for :func:`medseg.io._rtstruct.read_rtstruct`.

    Returns
    -------
    DatasetDescription or None
        Layout ``"rtstruct"``; each case's ``label_names`` are the classes its RTSTRUCT holds.

    Raises
    ------
    InputError
        An RTSTRUCT whose series is missing or is not the one it references, or whose contours
        lie off the slice planes (the message names the file).
    """
    from medseg.case import FILES, is_case, read_case
    from medseg.io._rtstruct import read_rtstruct, write_import_case
    from medseg.training.datasets import DatasetDescription, TrainingCase

    root = Path(data)
    rtstructs = find_rtstructs(root)
    if not rtstructs:
        return None
    folder = Path(cache) if cache is not None else default_cache_dir()
    cases = []
    for n, path in enumerate(rtstructs):
        report(progress, n, len(rtstructs), f"rtstruct: {path.name}")
        target = folder / _key(path, rois, aliases)
        if not is_case(target):
            try:
                result = read_rtstruct(path, root, rois=rois, aliases=aliases)
            except InputError as exc:
                if "names no series" not in exc.problem:
                    raise
                result = read_rtstruct(path, path.parent, rois=rois, aliases=aliases)
            # The series' own folder is the image when it holds only that series; else keep a copy.
            write_import_case(result, target, save_image=not _one_series(result.image.source.path))
        case = read_case(target)
        image = case.file("image") or case.provenance.get("source_image")
        name = path.relative_to(root).with_suffix("").as_posix().replace("/", "_")
        cases.append(TrainingCase(name, str(image), str(target / FILES["labels"]),
                                  {lab.value: lab.name for lab in case.label_set}, case.provenance, source="rtstruct"))
    report(progress, len(rtstructs), len(rtstructs), "rtstruct: done")
    return DatasetDescription(str(root), "rtstruct", tuple(cases), "CT")
