"""DICOM reading: a file, a folder or a tree of studies/series -> :class:`SeriesInfo` / :class:`Volume`.

The work is split into steps, one module each:

1. ``_dicom_scan``: find files, read headers only (``stop_before_pixels``), skip non-DICOM
   files, report corrupt, truncated and unreadable ones by name.
2. ``_dicom_frames``: each header becomes 2D frames (classic slice, enhanced multi-frame
   functional groups, Siemens mosaic tiles via nibabel's CSA reader).
3. ``_dicom_group``: frames are grouped by SeriesInstanceUID and split into 3D volumes
   (series numbers, stacks, image types, echoes, orientations, time points).
4. ``_dicom_geometry``: slices sorted along the normal, spacing from positions, gaps, tilt,
   RAS affine.
5. ``_dicom_pixels``: the chosen volume is decoded into one preallocated array.

Conventions are written down in ``docs/dicom.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from medseg.errors import InputError, option
from medseg.io._dicom_group import VolumePlan, plan_volumes
from medseg.io._dicom_scan import HeaderScan, find_files, scan_headers
from medseg.io._series import SeriesInfo, select_series
from medseg.progress import CancelToken, ProgressCallback
from medseg.volume import SourceInfo, Volume

__all__ = ["scan_dicom", "read_dicom", "choose_series"]


def _common_folder(paths: list[str]) -> str:
    if len(paths) == 1:
        return paths[0]
    return os.path.commonpath([os.path.dirname(p) for p in paths])


def _axcodes(affine: np.ndarray | None) -> str:
    if affine is None:
        return ""
    from nibabel.orientations import aff2axcodes

    return "".join(aff2axcodes(affine))


def _folder_notes(scan: HeaderScan) -> list[str]:
    notes = list(scan.file_warnings)
    if scan.non_dicom:
        names = ", ".join(Path(p).name for p in scan.non_dicom[:3])
        more = f" and {len(scan.non_dicom) - 3} more" if len(scan.non_dicom) > 3 else ""
        notes.append(f"skipped {len(scan.non_dicom)} non-DICOM file(s): {names}{more}")
    return notes


def _plan_notes(plan: VolumePlan) -> list[str]:
    """What the reader observed and handled (splits, tilt, sorting): facts, not problems."""
    notes = list(plan.warnings)
    for meta_note in sorted({n for f in plan.frames for n in f.meta.notes}):
        notes.append(meta_note)
    return notes


def _info_for_plan(plan: VolumePlan, scan: HeaderScan) -> SeriesInfo:
    geo = plan.geometry
    f0 = plan.frames[0]
    files = plan.files
    codes = sorted({code for code, _ in plan.problems})
    problems = [text for _, text in plan.problems]
    # Files that were skipped (corrupt, truncated, unreadable) are problems the user must see,
    # even though the rest of the series is still read.
    for text in scan.series_warnings.get(plan.series_uid, []) + scan.file_warnings:
        if not any(text in known for known in problems):
            problems.append(text)
    notes = [n for n in _plan_notes(plan) if not any(n in known for known in problems)]
    spacing = geo.spacing_mm
    return SeriesInfo(
        index=0, key=plan.key, path=_common_folder(files), format="dicom",
        description=f0.meta.series_description, modality=f0.meta.modality,
        shape=(f0.cols, f0.rows, geo.n_slices),
        spacing_mm=None if spacing is None else tuple(round(s, 6) for s in spacing),
        orientation=_axcodes(geo.affine), n_slices=geo.n_slices, n_files=len(files),
        problems=tuple(problems), notes=tuple(notes), readable=not codes,
        extra={
            "series_uid": plan.series_uid, "split": dict(plan.split), "problem_codes": codes,
            "series_number": f0.meta.series_number, "study_uid": f0.meta.study_uid,
            "sop_class_uid": f0.meta.sop_class_uid, "layout": f0.layout,
            "transfer_syntaxes": sorted({f.meta.transfer_syntax for f in plan.frames}),
            "image": True,
        },
    )


def _infos_for_rejected(scan: HeaderScan) -> list[SeriesInfo]:
    groups: dict[tuple, list] = {}
    for item in scan.rejected:
        groups.setdefault((item.meta.series_uid or os.path.dirname(item.meta.path), item.reason), []).append(item)
    infos = []
    for (uid, reason), items in groups.items():
        meta = items[0].meta
        paths = sorted(i.meta.path for i in items)
        infos.append(SeriesInfo(
            index=0, key=meta.series_uid or f"noUID:{os.path.relpath(uid, scan.root) if scan.root.is_dir() else uid}",
            path=_common_folder(paths), format="dicom", description=meta.series_description,
            modality=meta.modality, n_files=len(paths), problems=(reason,), readable=False,
            extra={"series_uid": meta.series_uid, "problem_codes": ["blocking"], "image": False,
                   "sop_class_uid": meta.sop_class_uid, "series_number": meta.series_number},
        ))
    return infos


#: The last few scans, keyed by the files' identities: reading several series of one folder
#: (each echo, each time point) parses the headers once. Any change to any file (size, mtime,
#: ctime - which chmod changes too - or inode), or a file added or removed, misses the cache.
_CACHE: OrderedDict[tuple, tuple[HeaderScan, list[VolumePlan], list[SeriesInfo]]] = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()


def _signature(path: Path, files: list[Path], walk_warnings: list[str]) -> tuple | None:
    stamps = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            return None  # vanished or unreachable now: never cache
        stamps.append((str(f), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return (str(path.resolve()), tuple(stamps), tuple(walk_warnings))


def _scan(path: Path, progress: ProgressCallback | None) -> tuple[HeaderScan, list[VolumePlan], list[SeriesInfo]]:
    walk_warnings: list[str] = []
    files = find_files(path, walk_warnings)
    signature = _signature(path, files, walk_warnings)
    with _CACHE_LOCK:
        if signature is not None and signature in _CACHE:
            _CACHE.move_to_end(signature)
            return _CACHE[signature]
    result = _scan_files(path, files, walk_warnings, progress)
    if signature is not None:
        with _CACHE_LOCK:
            _CACHE[signature] = result
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return result


def _scan_files(path: Path, files: list[Path], walk_warnings: list[str],
                progress: ProgressCallback | None) -> tuple[HeaderScan, list[VolumePlan], list[SeriesInfo]]:
    scan = scan_headers(path, files, progress=progress)
    scan.file_warnings[:0] = walk_warnings
    if scan.n_files == 0:
        raise InputError(path, "is an empty folder", "point to a folder that holds DICOM files")
    plans = plan_volumes(scan.frames, root=str(path) if path.is_dir() else "")
    pairs = [(plan, _info_for_plan(plan, scan)) for plan in plans]
    rejected = _infos_for_rejected(scan)
    if not pairs and not rejected:
        if path.is_file():
            problem = scan.file_warnings[0].split(": ", 1)[-1] if scan.file_warnings else "is not a DICOM file"
            raise InputError(path, problem.removesuffix("; skipped"),
                             "give a DICOM file or a folder that holds DICOM files")
        if scan.file_warnings:
            raise InputError(path, f"holds no readable DICOM file ({scan.file_warnings[0]})",
                             "check the files' permissions, or re-export the series")
        example = Path(scan.non_dicom[0]).name if scan.non_dicom else ""
        raise InputError(path, f"holds no DICOM files ({scan.n_files} file(s) looked at, e.g. {example})",
                         "point to a folder with DICOM files")
    # Stable order: by folder of the series' first file, then series number, then split values.
    first_file: dict[str, str] = {}
    for plan, info in pairs:
        first_file[plan.series_uid] = min(first_file.get(plan.series_uid, info.path), info.path)

    def order(pair: tuple[VolumePlan, SeriesInfo]) -> tuple:
        plan, info = pair
        split = tuple((name, (0, float(v), "") if isinstance(v, (int, float)) else (1, 0.0, str(v)))
                      for name, v in plan.split.items())
        return first_file[plan.series_uid], info.extra["series_number"] or 0, plan.series_uid, split

    pairs.sort(key=order)
    rejected.sort(key=lambda info: info.path)
    infos = [dataclasses.replace(info, index=i) for i, (_, info) in enumerate(pairs)]
    infos += [dataclasses.replace(info, index=len(infos) + i) for i, info in enumerate(rejected)]
    return scan, [plan for plan, _ in pairs], infos


def scan_dicom(path: Path, *, progress: ProgressCallback | None = None) -> list[SeriesInfo]:
    """Every series (or split part of one) under ``path``, from headers only.

    Parameters
    ----------
    path : Path
        A DICOM file, or a folder searched recursively (non-DICOM files are skipped).
    progress : callable, optional
        ``progress(done, total, message)`` per file.

    Returns
    -------
    list of SeriesInfo
        Readable volumes first, indexed from 0, then DICOM objects that are not images.
        ``problems`` lists missing slices, non-uniform spacing, 4D/echo/type splits, tilt,
        corrupt or truncated files; ``readable`` is False when the volume cannot be read as 3D
        without an override (``extra["problem_codes"]`` says which: ``2d``, ``gaps``,
        ``blocking``).
    """
    # Copies: the cached infos must not change when a caller edits ``extra``.
    return [dataclasses.replace(info, extra=copy.deepcopy(info.extra)) for info in _scan(Path(path), progress)[2]]


_HINTS = {
    "2d": f"give the whole series, or pass {option('allow_2d', True)} to read the slice as a volume of depth 1",
    "gaps": f"pass {option('allow_gaps', True)} to read it anyway; missing slices are then filled "
            "with the lowest value",
}


def _explain(info: SeriesInfo, plan: VolumePlan, where: str, scan: HeaderScan, allowed: set[str]) -> InputError:
    """The error for a chosen volume that cannot be read as asked: its first problem, and the
    files that were skipped (a damaged or unreadable slice is often why slices are missing)."""
    said = " ".join(text for _, text in plan.problems)
    skipped = [w for w in scan.series_warnings.get(plan.series_uid, []) + scan.file_warnings if w not in said]
    note = f" [{len(skipped)} other file(s) skipped; first: {skipped[0]}]" if skipped else ""
    blocking = [text for code, text in plan.problems if code not in _HINTS]
    if blocking:
        return InputError(where, f"series {info.index} ({info.key}) cannot be read as a 3D volume: "
                          f"{blocking[0]}{note}", "see `medseg info` for details")
    for code, text in plan.problems:
        if code in _HINTS and code not in allowed:
            return InputError(where, f"series {info.index} ({info.key}): {text}{note}", _HINTS[code])
    return InputError(where, f"series {info.index} ({info.key}) cannot be read: {info.problems[0]}",
                      "see `medseg info` for details")


def _four_d(candidates: list[SeriesInfo], where: str) -> InputError | None:
    uids = {c.extra.get("series_uid") for c in candidates}
    splits = [{k: v for k, v in c.extra.get("split", {}).items() if k != "vol"} for c in candidates]
    if len(uids) != 1 or any(s != splits[0] for s in splits) or not all("vol" in c.extra.get("split", {})
                                                                        for c in candidates):
        return None
    c0 = candidates[0]
    shape = "x".join(str(s) for s in c0.shape)
    return InputError(where, f"is a 4D series: {len(candidates)} volumes of {shape} at the same slice "
                      "positions (time points); medseg reads one 3D volume at a time",
                      f"choose one with {option('series')} ({candidates[0].index}..{candidates[-1].index}) "
                      f"or {option('series', repr(c0.key))}")


def choose_series(path: Path, series: str | int | None, *, allow_gaps: bool, allow_2d: bool,
                  progress: ProgressCallback | None = None) -> tuple[VolumePlan, SeriesInfo, HeaderScan]:
    """The series :func:`read_dicom` reads, from headers only: ``(plan, info, scan)``.

    Raises the one-line error of a folder with several series (without ``series``), a 4D series,
    a non-image object or an unreadable series. Also used where a series' grid is needed without
    its pixels (DICOM SEG export and import).
    """
    where = str(path)
    scan, plans, infos = _scan(path, progress)
    allowed = ({"2d"} if allow_2d else set()) | ({"gaps"} if allow_gaps else set())
    adjusted = [dataclasses.replace(i, readable=not (set(i.extra["problem_codes"]) - allowed)) for i in infos]
    images = [i for i in adjusted if i.extra.get("image")]
    readable = [i for i in adjusted if i.readable]
    if series is None and len(readable) != 1:
        if len(images) == 1:
            readable = images
        else:
            four_d = _four_d(readable or images, where)
            if four_d is not None:
                raise four_d
    chosen = readable[0] if series is None and len(readable) == 1 else select_series(adjusted, series, where)
    if not chosen.extra.get("image"):
        raise InputError(where, f"series {chosen.index} ({chosen.key}) is {chosen.problems[0]}",
                         "choose an image series (see `medseg info`)")
    plan = plans[chosen.index]
    if not chosen.readable:
        raise _explain(chosen, plan, where, scan, allowed)
    return plan, chosen, scan


def read_dicom(path: Path, series: str | int | None, *, allow_gaps: bool, allow_2d: bool,
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> Volume:
    """Read one 3D volume from a DICOM file or folder (see :func:`medseg.io.load_volume`)."""
    path = Path(path)
    plan, chosen, scan = choose_series(path, series, allow_gaps=allow_gaps, allow_2d=allow_2d, progress=progress)
    from medseg.io._dicom_pixels import decode_volume

    geo = plan.geometry
    array = decode_volume(plan.frames, geo.grid_k, geo.n_slices, progress=progress, cancel=cancel,
                          where=str(path))
    return Volume(array, geo.affine, plan.frames[0].meta.modality, _source(plan, chosen, scan))


def _source(plan: VolumePlan, info: SeriesInfo, scan: HeaderScan) -> SourceInfo:
    geo = plan.geometry
    meta = plan.frames[0].meta
    sop_uids = [""] * geo.n_slices
    frame_numbers = [0] * geo.n_slices
    files = [""] * geo.n_slices
    for frame, k in zip(plan.frames, geo.grid_k):
        sop_uids[k] = frame.meta.sop_instance_uid
        frame_numbers[k] = frame.index_in_file + 1
        files[k] = os.path.relpath(frame.path, info.path) if os.path.isdir(info.path) else os.path.basename(frame.path)
    slopes = sorted({f.slope for f in plan.frames})
    intercepts = sorted({f.intercept for f in plan.frames})
    notes = _plan_notes(plan) + scan.series_warnings.get(plan.series_uid, []) + _folder_notes(scan)
    if "gaps" in {c for c, _ in plan.problems}:
        missing = sorted(set(range(geo.n_slices)) - set(geo.grid_k))
        notes.append(f"read with missing slices allowed: {len(missing)} slice(s) at k = "
                     f"{missing[:10]}{'...' if len(missing) > 10 else ''} are filled with the lowest value")
    if "2d" in {c for c, _ in plan.problems}:
        notes.append("a single 2D slice read as a volume of depth 1")
    extra = {
        "key": plan.key, "split": dict(plan.split), "files": files,
        "frame_numbers": frame_numbers if plan.frames[0].layout != "single" else [],
        "transfer_syntaxes": info.extra["transfer_syntaxes"], "layout": plan.frames[0].layout,
        "rescale_slopes": slopes, "rescale_intercepts": intercepts,
        "rescale_type": plan.frames[0].units,
        "image_type": list(plan.frames[0].image_type),
        "echo_time_ms": plan.frames[0].echo_time,
        **geo.extra,
    }
    if meta.philips_scale_slope is not None:
        extra["philips_scale_slope"] = sorted({f.meta.philips_scale_slope for f in plan.frames
                                               if f.meta.philips_scale_slope is not None})
    if meta.gantry_tilt_deg:
        extra["gantry_tilt_deg"] = meta.gantry_tilt_deg
    return SourceInfo(
        path=info.path, format="dicom", series_uid=meta.series_uid, study_uid=meta.study_uid,
        frame_of_reference_uid=meta.frame_of_reference_uid, sop_class_uid=meta.sop_class_uid,
        sop_instance_uids=tuple(sop_uids), patient_id=meta.patient_id, patient_name=meta.patient_name,
        patient_position=meta.patient_position, series_description=meta.series_description,
        series_number="" if meta.series_number is None else str(meta.series_number),
        manufacturer=meta.manufacturer, warnings=tuple(dict.fromkeys(notes)), extra=extra,
    )
