"""Reading a case folder back (see :mod:`medseg.case` for the layout)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.case._format import CASE_FILE, CASE_FORMAT, CASE_FORMAT_VERSION, FILES, sha256_of
from medseg.errors import InputError
from medseg.labels import LabelSet, read_label_table
from medseg.volume import Volume

__all__ = ["Case", "read_case", "is_case", "read_json"]


@dataclass
class Case:
    """A case folder read back (see the module docstring for the layout).

    Volumes are read on first use and kept: ``case.labels`` (with its ``label_set``),
    ``case.lesions`` (instance ids, or ``None``), ``case.image`` (``image.nii.gz``, else the
    ``source_image`` the provenance names, else ``None``).
    """

    path: Path
    manifest: dict[str, Any]
    provenance: dict[str, Any]
    label_set: LabelSet
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> int:
        return int(self.manifest.get("version", 1))

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", "proposal"))

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("history", []))

    def file(self, part: str) -> Path | None:
        """Path of a part (``"labels"``, ``"lesions"``, ...) when the case holds it."""
        name = FILES.get(part, part)
        return self.path / name if name in self.manifest.get("files", {}) else None

    @property
    def labels(self) -> Volume:
        if "labels" not in self._cache:
            from medseg.io import load_volume

            volume = load_volume(self.path / FILES["labels"])
            self._cache["labels"] = volume.with_labels(self.label_set)
        return self._cache["labels"]

    @property
    def lesions(self) -> Volume | None:
        if "lesions" not in self._cache:
            from medseg.io import load_volume

            path = self.file("lesions")
            self._cache["lesions"] = None if path is None else load_volume(path).with_labels(None)
        return self._cache["lesions"]

    @property
    def lesion_document(self) -> dict[str, Any] | None:
        """``lesions/lesions.json`` (schema ``medseg.lesion_table``), or ``None``."""
        if "lesion_document" not in self._cache:
            path = self.file("lesion_json")
            self._cache["lesion_document"] = None if path is None else read_json(path)
        return self._cache["lesion_document"]

    @property
    def lesion_rows(self) -> list[dict[str, Any]]:
        document = self.lesion_document
        return list(document.get("lesions", [])) if document else []

    @property
    def image_path(self) -> Path | None:
        if self.file("image") is not None:
            return self.path / FILES["image"]
        source = self.provenance.get("source_image")
        if source:
            candidate = Path(str(source))
            candidate = candidate if candidate.is_absolute() else self.path / candidate
            if candidate.exists():
                return candidate
        return None

    @property
    def image(self) -> Volume | None:
        if "image" not in self._cache:
            from medseg.io import load_volume

            path = self.image_path
            series = (self.provenance.get("input") or {}).get("series_uid") or None
            if path is None:
                self._cache["image"] = None
            elif path.is_dir():
                self._cache["image"] = load_volume(path, series)
            else:
                self._cache["image"] = load_volume(path)
        return self._cache["image"]

    def verify(self) -> None:
        """Check every file against the sha256 in ``case.json``; raises InputError on a mismatch."""
        for name, meta in self.manifest.get("files", {}).items():
            digest = sha256_of(self.path / name)
            if digest != meta.get("sha256"):
                raise InputError(self.path / name, "differs from the checksum in case.json (changed or damaged "
                                 "after the case was written)", "write the case again")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot be read as JSON ({exc})", "write the case again") from exc
    if not isinstance(data, dict):
        raise InputError(path, "is not a JSON object", "write the case again")
    return data


def is_case(path: str | os.PathLike) -> bool:
    """True when ``path`` is a complete case folder (its ``case.json`` names the medseg format)."""
    manifest = Path(path) / CASE_FILE
    if not manifest.is_file():
        return False
    with contextlib.suppress(InputError):
        return read_json(manifest).get("format") == CASE_FORMAT
    return False


def _manifest_from_disk(root: Path) -> dict[str, Any]:
    """A manifest for a case folder assembled by hand (labels.nii.gz + labels.json [+ image,
    provenance.json]), the layout ``docs/training.md`` describes for corrected cases."""
    files = {}
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if file.is_file() and not rel.startswith(("history/", ".")):
            files[rel] = {"bytes": file.stat().st_size, "sha256": ""}
    provenance = read_json(root / FILES["provenance"]) if (root / FILES["provenance"]).is_file() else {}
    return {"format": CASE_FORMAT, "format_version": CASE_FORMAT_VERSION, "version": 1,
            "kind": provenance.get("kind", "correction"), "files": files, "history": [], "assembled": True}


def read_case(path: str | os.PathLike, *, verify: bool = False, require_manifest: bool = True) -> Case:
    """Read a case folder (labels and names, provenance, manifest; volumes load on first use).

    A folder without ``case.json`` is an incomplete write or not a case; a case whose listed files
    are missing or have another size is damaged. Both raise :class:`InputError`. ``verify=True``
    also checks every file's sha256. ``require_manifest=False`` also reads a folder assembled by
    hand (``labels.nii.gz`` + ``labels.json``, optional ``image.nii.gz`` and ``provenance.json``),
    as training accepts.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(root, "does not exist" if not root.exists() else "is not a folder",
                         "give a case folder written by medseg run, segment or the napari plugin")
    manifest_path = root / CASE_FILE
    if not manifest_path.is_file() and not require_manifest:
        for part in ("labels", "names"):
            if not (root / FILES[part]).is_file():
                raise InputError(root, f"is not a case: it has no {FILES[part]}",
                                 "save the labels with their names (labels.nii.gz + labels.json)")
        manifest = _manifest_from_disk(root)
        provenance = read_json(root / FILES["provenance"]) if (root / FILES["provenance"]).is_file() else {}
        return Case(root, manifest, provenance, read_label_table(root / FILES["names"]))
    if not manifest_path.is_file():
        what = "has labels but no case.json" if (root / FILES["labels"]).is_file() else "is not a medseg case"
        raise InputError(root, f"{what} (no {CASE_FILE}: not written by medseg, or its write did not finish)",
                         "run medseg again into this folder, or give the label file itself")
    manifest = read_json(manifest_path)
    if manifest.get("format") != CASE_FORMAT:
        raise InputError(manifest_path, f"is not a medseg case manifest (format {manifest.get('format')!r})",
                         "give a case folder written by medseg")
    if int(manifest.get("format_version", 0)) > CASE_FORMAT_VERSION:
        raise InputError(manifest_path, f"was written by a newer medseg (case format "
                         f"{manifest.get('format_version')}, this medseg reads {CASE_FORMAT_VERSION})",
                         "update medseg")
    for name, meta in manifest.get("files", {}).items():
        file = root / name
        if not file.is_file():
            raise InputError(file, "is missing from the case", "the case is damaged; write it again")
        if file.stat().st_size != meta.get("bytes"):
            raise InputError(file, f"has {file.stat().st_size} bytes, case.json says {meta.get('bytes')}",
                             "the case is damaged; write it again")
    if FILES["labels"] not in manifest.get("files", {}):
        raise InputError(root, "is a case without labels", "write the case again")
    case = Case(root, manifest, read_json(root / FILES["provenance"]), read_label_table(root / FILES["names"]))
    if verify:
        case.verify()
    return case
