"""Cases from a list file instead of a folder tree: a CSV (column ``input``, optional ``case_id``
and ``series``) or a text file with one path per line.

A path relative to the list is relative to the list's folder. A folder entry holding several
DICOM series gives one case per series (``<id>_s<series number>``); an entry that does not exist
or holds no image is kept as a case with its problem, reported as failed when the batch runs.
"""

from __future__ import annotations

import csv
from pathlib import Path

from medseg.batch.discover import (
    _dicom_cases,
    _file_entry,
    _image_kind,
    _strip_suffix,
    safe_case_id,
)
from medseg.errors import InputError

__all__ = ["entries_from_list"]


def entries_from_list(list_file: Path, skipped: list[tuple[str, str]], progress) -> list[dict]:
    """Entries from a CSV (column ``input`` or ``path``; optional ``case_id``, ``series``) or a
    text file (one path per line, ``#`` comments). Relative paths are relative to the list."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(list_file, f"cannot be read ({exc})", "give a CSV or text list of inputs") from exc
    rows: list[dict[str, str]] = []
    if list_file.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if list_file.suffix.lower() == ".tsv" else ",")
        fields = {f.strip().lower(): f for f in reader.fieldnames or []}
        column = fields.get("input") or fields.get("path") or fields.get("image")
        if column is None:
            raise InputError(list_file, f"has no column named input, path or image (columns: "
                             f"{', '.join(reader.fieldnames or []) or 'none'})", "name the column of inputs 'input'")
        for row in reader:
            value = (row.get(column) or "").strip()
            if value:
                rows.append({"input": value, "case_id": (row.get(fields.get("case_id", "")) or "").strip(),
                             "series": (row.get(fields.get("series", "")) or "").strip()})
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                rows.append({"input": line, "case_id": "", "series": ""})
    given = [row["case_id"] for row in rows if row["case_id"]]
    twice = sorted({case_id for case_id in given if given.count(case_id) > 1})
    if twice:
        raise InputError(list_file, f"gives case_id {twice[0]!r} to more than one input", "make each case_id unique")
    entries = []
    for row in rows:
        path = Path(row["input"]).expanduser()
        path = path if path.is_absolute() else list_file.parent / path
        label = row["case_id"] or _strip_suffix(path.name.rstrip("/")) or path.parent.name
        if row["case_id"] and safe_case_id(row["case_id"]) != row["case_id"]:
            raise InputError(list_file, f"case_id {row['case_id']!r} is not a safe folder name",
                             "use letters, digits, '.', '_' and '-' only")
        key = f"{row['input']}#{row['series']}" if row["series"] else row["input"]
        if not path.exists():
            entries.append({"key": key, "wanted": label, "path": str(path), "series": row["series"] or None,
                            "kind": _image_kind(path.name) or "dicom", "files": (), "problem": "does not exist",
                            "fixed": bool(row["case_id"])})
            continue
        if path.is_file() and _image_kind(path.name):
            entries.append(_file_entry(path, key, label, bool(row["case_id"])))
            continue
        series_found = _dicom_cases(path.parent if path.is_file() else path, [path] if path.is_file() else
                                    sorted(p for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith(".")),
                                    skipped, progress)
        if row["series"]:
            series_found = [s for s in series_found if s[2] == row["series"] or row["series"] in s[0]] or [
                (label, str(path), row["series"], (), "")]
        if not series_found:
            entries.append({"key": key, "wanted": label, "path": str(path), "series": None, "kind": "dicom",
                            "files": (), "problem": "holds no image this batch can read (no NIfTI/NRRD/MHA file "
                            "name, no DICOM image series)", "fixed": bool(row["case_id"])})
        for base, folder, series, files, problem in series_found:
            suffix = base.split("/", 1)[1] if "/" in base and len(series_found) > 1 else ""
            entries.append({"key": f"{key}#{suffix}" if suffix else key,
                            "wanted": f"{label}_{suffix}" if suffix else label, "path": folder,
                            "series": series or (row["series"] or None), "kind": "dicom", "files": files,
                            "problem": problem, "fixed": bool(row["case_id"]) and not suffix})
    return entries
