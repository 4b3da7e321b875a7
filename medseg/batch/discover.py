"""Find the cases of a batch: image files and DICOM series in a folder tree, or a list of inputs.

One case is one 3D volume: a NIfTI/NRRD/MHA file, or one DICOM series (one part of a series
that had to be split: echoes, time points). Each gets a **case id** that names its folder in the
output (``OUTPUT_DIR/<case_id>/``)::

    INPUT/patient01/ct.nii.gz            -> patient01_ct
    INPUT/patient02/ (one DICOM series)  -> patient02
    INPUT/patient03/ (two series)        -> patient03_s2, patient03_s5 (series numbers)

Ids are filesystem-safe (``[A-Za-z0-9._-]``, no leading dot or dash, at most 120 characters)
and stable: they depend only on the input's path under ``INPUT`` (and its series), never on
the order files were found in. Where two inputs would get the same id (also ignoring case,
for case-insensitive file systems), each gets ``-`` and 8 hex digits of its path's sha1; an id
a previous run of the same output already gave a source is kept (``known_ids``).

Skipped, and said so in :attr:`Discovery.skipped`: hidden files and folders, medseg case folders
(``case.json``), label maps with a label table beside them (``X.nii.gz`` + ``X.json``), DICOM
objects that are not images (SEG, RTSTRUCT, SR) and single-slice series (localizers). What cannot
be read at all becomes a case with a ``problem``: it is reported as failed, with the reason,
without stopping the others.

Nothing here reads voxel data: files are listed and DICOM headers read.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import InputError
from medseg.progress import ProgressCallback, report

__all__ = ["RESERVED_NAMES", "CaseInput", "Discovery", "discover_cases", "safe_case_id"]

#: Image files that are one case each (DICOM is recognised by content, whatever its name).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LIST_SUFFIXES = (".csv", ".tsv", ".txt", ".lst")
#: Names in OUTPUT_DIR that belong to the batch itself, never to a case.
RESERVED_NAMES = frozenset({"batch.sqlite", "batch.sqlite-wal", "batch.sqlite-shm", "batch.lock",
                            "batch.workers.lock", "cohort.csv", "cohort_organ_volumes.png",
                            "cohort_lesion_burden.png", "cohort_case_times.png", "batch_summary.json"})
_MAX_ID = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CaseInput:
    """One case to run: what to read and where its results go.

    Attributes
    ----------
    case_id : str
        Name of the case folder in the output.
    path : str
        Absolute path of the image file or DICOM folder that ``run_case`` reads.
    series : str or None
        Which series of ``path`` (a SeriesInstanceUID key), when the folder holds several.
    kind : str
        ``"nifti"``, ``"nrrd"``, ``"mha"`` or ``"dicom"``.
    source_key : str
        Stable identity of the input: its path under INPUT (``/`` separated), with ``#`` and
        the series key for a DICOM series.
    files : tuple of str
        The files whose bytes are the input, in the order they are hashed (a DICOM series' files
        in slice order, as :func:`medseg.case.input_sha256` hashes them).
    problem : str
        Why this input cannot be run ("" when it can): reported as a failed case.
    """

    case_id: str
    path: str
    series: str | None
    kind: str
    source_key: str
    files: tuple[str, ...] = ()
    problem: str = ""


@dataclass
class Discovery:
    """What :func:`discover_cases` found."""

    root: Path
    cases: list[CaseInput]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for case in self.cases:
            out[case.kind] = out.get(case.kind, 0) + 1
        return out

    def skipped_summary(self) -> list[str]:
        """``3 label maps with a label table beside them (organs.nii.gz, ...)`` lines."""
        groups: dict[str, list[str]] = {}
        for path, why in self.skipped:
            groups.setdefault(why, []).append(path)
        return [f"{len(paths)} {why} ({', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''})"
                for why, paths in groups.items()]


def safe_case_id(text: str) -> str:
    """A filesystem-safe folder name from a path-like text (``a b/c.nii.gz`` -> ``a_b_c``)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text.replace("/", "_").replace("\\", "_"))
    text = re.sub(r"_+", "_", text).lstrip("._-").rstrip("_")
    return text or "case"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _limit(case_id: str, key: str) -> str:
    if len(case_id) <= _MAX_ID:
        return case_id
    return case_id[: _MAX_ID - 9].rstrip("._-") + "-" + _short_hash(key)


def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES + (".dcm", ".dicom", ".ima"):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _image_kind(name: str) -> str:
    lower = name.lower()
    if lower.endswith((".nii", ".nii.gz")):
        return "nifti"
    if lower.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if lower.endswith((".mha", ".mhd")):
        return "mha"
    return ""


def _detached_data_files(path: Path) -> list[str]:
    """The data file(s) a ``.mhd``/``.nhdr`` header names (their bytes are part of the input)."""
    lower = path.name.lower()
    if not lower.endswith((".mhd", ".nhdr")):
        return []
    try:
        text = path.read_text(encoding="latin-1", errors="replace")[:65536]
    except OSError:
        return []
    key = "ElementDataFile" if lower.endswith(".mhd") else "data file"
    for line in text.splitlines():
        name, sep, value = line.partition("=" if key == "ElementDataFile" else ":")
        if sep and name.strip().lower() == key.lower():
            value = value.strip()
            if value and value.upper() not in ("LOCAL", "LIST") and "%" not in value:
                data = path.parent / value
                return [str(data)] if data.is_file() else []
    return []


def _is_label_map(path: Path) -> bool:
    from medseg.labels import find_label_table

    try:
        return find_label_table(path) is not None
    except InputError:
        return False


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _walk(root: Path, skipped: list[tuple[str, str]], exclude_paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``root``, sorted; hidden names, case folders and
    ``exclude_paths`` left out."""
    images: list[Path] = []
    others: list[Path] = []
    excluded = {p.resolve() for p in exclude_paths}

    def on_error(exc: OSError) -> None:
        skipped.append((str(exc.filename), f"folders that cannot be listed ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        here = Path(dirpath)
        if "case.json" in filenames:
            skipped.append((_rel(root, here), "medseg case folders (results, not inputs)"))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            (images if _image_kind(name) else others).append(here / name)
    return images, others


def _rel(root: Path, path: Path) -> str:
    rel = os.path.relpath(path, root) if root.is_dir() else path.name
    return Path(rel).as_posix() if rel != "." else root.name


def _dicom_cases(root: Path, files: list[Path], skipped: list[tuple[str, str]],
                 progress: ProgressCallback | None) -> list[tuple[str, str, str | None, tuple[str, ...], str]]:
    """(id base, folder, series, files in slice order, problem) per DICOM image series."""
    if not files:
        return []
    # The DICOM reader's own scan (headers only): the same grouping into series, and the same
    # slice order, that ``load_volume`` uses later, so a case's files are exactly what it reads.
    from medseg.io._dicom import _scan_files

    try:
        scan, plans, infos = _scan_files(root, files, [], progress)
    except InputError:
        return []  # no DICOM among the files: nothing to add
    for warning in scan.file_warnings:
        skipped.append((warning.split(": ", 1)[0], "unreadable DICOM files"))
    kept = []
    for index, info in enumerate(infos):
        if not info.extra.get("image"):
            skipped.append((_rel(root, Path(info.path)), "DICOM objects that are not images"))
        elif set(info.extra.get("problem_codes", [])) == {"2d"}:
            skipped.append((_rel(root, Path(info.path)), "single-slice DICOM series (localizers)"))
        else:
            kept.append((info, plans[index]))
    per_folder: dict[str, int] = {}
    for info, _ in kept:
        per_folder[info.path] = per_folder.get(info.path, 0) + 1
    found = []
    for info, plan in kept:
        grid_k = getattr(plan.geometry, "grid_k", None) or range(len(plan.frames))  # k of each frame
        ordered = tuple(dict.fromkeys(f.path for _, f in sorted(zip(grid_k, plan.frames), key=lambda t: t[0])))
        base = _rel(root, Path(info.path))
        if base.lower().endswith((".dcm", ".dicom", ".ima")):
            base = _strip_suffix(base)
        several = per_folder.get(info.path, 0) > 1
        if several:
            number = info.extra.get("series_number")
            split = "".join(f"_{k}{v}" for k, v in (info.extra.get("split") or {}).items())
            base += f"/s{number}{split}" if number is not None else f"/{_short_hash(info.key)}{split}"
        # noUID series are named after their folder relative to the scanned root; reading the
        # folder alone finds them under another name, and they are alone in it by construction.
        series = None if (not several or info.key.startswith("noUID:")) else info.key
        # An unreadable series (missing slices, mixed sizes) is still a case: the reader's own
        # error, with its hint, becomes the case's reason when it runs.
        found.append((base, info.path, series, ordered, ""))
    return found


def _assign_ids(entries: list[dict], known_ids: Mapping[str, str]) -> None:
    """Give each entry a unique safe id (see the module docstring)."""
    taken = {v.lower() for v in known_ids.values()}
    for entry in entries:
        if entry["key"] in known_ids:
            entry["id"] = known_ids[entry["key"]]
    fresh = [e for e in entries if "id" not in e]
    wanted: dict[str, list[dict]] = {}
    for entry in fresh:
        candidate = _limit(entry["wanted"], entry["key"])
        wanted.setdefault(candidate.lower(), []).append(entry)
    for lower, group in wanted.items():
        clash = len(group) > 1 or lower in taken or lower in RESERVED_NAMES
        for entry in group:
            base = _limit(entry["wanted"], entry["key"])
            entry["id"] = _limit(f"{base[:_MAX_ID - 9]}-{_short_hash(entry['key'])}", entry["key"]) if clash else base
            taken.add(entry["id"].lower())


def _file_entry(path: Path, key: str, label: str, fixed: bool = False) -> dict:
    return {"key": key, "wanted": label, "path": str(path.resolve()), "series": None, "kind": _image_kind(path.name),
            "files": (str(path.resolve()), *_detached_data_files(path)), "problem": "", "fixed": fixed}


def discover_cases(source: str | os.PathLike, *, patterns: Sequence[str] = (), exclude: Sequence[str] = (),
                   exclude_paths: Sequence[str | os.PathLike] = (), known_ids: Mapping[str, str] | None = None,
                   progress: ProgressCallback | None = None) -> Discovery:
    """Every case under ``source``: a folder tree, one image file, or a CSV/text list of inputs.

    Parameters
    ----------
    source : path-like
        A folder (searched recursively), an image file or DICOM series folder, or a list file
        (``.csv``/``.tsv`` with a column ``input``, optional ``case_id`` and ``series``; ``.txt``
        with one path per line).
    patterns : sequence of str
        Only image files whose path under ``source`` or name matches one of these globs
        (``"*_0000.nii.gz"``, ``"imagesTs/*"``); DICOM series match by their folder.
    exclude : sequence of str
        Globs of paths or names to leave out.
    exclude_paths : sequence of path-like
        Folders never to descend into.
    known_ids : mapping source_key -> case_id
        Ids given by an earlier run (kept, so a new input never renames an existing case).

    Returns
    -------
    Discovery
        ``cases`` sorted by case id, and what was skipped with why.

    Raises
    ------
    InputError
        ``source`` does not exist, or a list file cannot be read.
    """
    root = Path(source).expanduser()
    if not root.exists():
        raise InputError(root, "does not exist", "give a folder of scans, an image file or a list of inputs")
    root = root.resolve()
    skipped: list[tuple[str, str]] = []
    report(progress, 0, 0, "discover: listing files")
    if root.is_file() and root.name.lower().endswith(LIST_SUFFIXES):
        from medseg.batch.case_lists import entries_from_list

        entries = entries_from_list(root, skipped, progress)
    elif root.is_file() and _image_kind(root.name):
        entries = [_file_entry(root, root.name, _strip_suffix(root.name))]
    else:
        images, others = _walk(root, skipped, [Path(p) for p in exclude_paths]) if root.is_dir() else ([], [root])
        entries = []
        for path in images:
            rel = _rel(root, path)
            if (patterns and not _matches(rel, patterns)) or (exclude and _matches(rel, exclude)):
                skipped.append((rel, "files left out by --pattern/--exclude"))
            elif _is_label_map(path):
                skipped.append((rel, "label maps with a label table beside them"))
            else:
                entries.append(_file_entry(path, rel, _strip_suffix(rel)))
        dicom_root = root if root.is_dir() else root.parent
        for base, folder, series, files, problem in _dicom_cases(dicom_root, others, skipped, progress):
            rel = base
            if (patterns and not _matches(rel, patterns)) or (exclude and _matches(rel, exclude)):
                skipped.append((rel, "series left out by --pattern/--exclude"))
                continue
            entries.append({"key": f"{rel}#{series}" if series else rel, "wanted": base, "path": folder,
                            "series": series, "kind": "dicom", "files": files, "problem": problem})
    for entry in entries:
        if not entry.get("fixed"):
            entry["wanted"] = safe_case_id(entry["wanted"])
    _assign_ids(entries, dict(known_ids or {}))
    cases = [CaseInput(e["id"], e["path"], e["series"], e["kind"], e["key"], tuple(e["files"]), e["problem"])
             for e in entries]
    return Discovery(root, sorted(cases, key=lambda c: c.case_id), skipped)
