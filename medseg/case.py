"""The case folder: the one on-disk form of a segmented or corrected scan.

``medseg run``, ``medseg segment``, batch, the napari plugin and training all read and write
this layout (documented in ``docs/case.md``)::

    CASE/
      case.json            manifest, written last: format, version number, kind, every file with
                           its size and sha256, and the versions kept in history/
      labels.nii.gz        class labels on the input's exact grid
      labels.json          value -> class name
      provenance.json      where it came from and how (schema "medseg.provenance", below)
      uncertainty.nii.gz   optional: normalised entropy of the class probabilities
      image.nii.gz         optional: a copy of the image (else provenance names ``source_image``)
      lesions/             optional: lesions.nii.gz (instance ids), lesions.csv, lesions.json,
                           lesion_sizes.png, lesion_montage.png
      exports/             optional: files for other tools (DICOM SEG, RTSTRUCT, colour tables)
      history/v1/ ...      earlier versions (a model's proposal under a person's correction)

**Atomic as a whole.** A case is built in a hidden sibling folder and swapped into place in one
step (:func:`medseg.io._atomic.atomic_folder`): a reader, or a run killed at any instant, sees the
earlier complete case or the new complete case, never a mix. ``case.json`` is the last file
written inside the new folder; a folder without it is not a case.

**Nothing lost.** A correction never replaces a proposal: the previous version moves to
``history/v<N>/`` inside the new case (hard links, no copy). A new model run refuses to replace a
case that holds corrections, and no case replaces a folder holding files medseg did not write.

This module imports no torch and no MONAI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medseg import __version__
from medseg.errors import InputError
from medseg.io._atomic import atomic_folder
from medseg.labels import LabelSet, read_label_table
from medseg.volume import Volume

__all__ = ["Case", "CASE_FILE", "CASE_FORMAT", "CASE_FORMAT_VERSION", "PROVENANCE_SCHEMA", "FILES",
           "read_case", "write_case", "write_lesions", "is_case", "sha256_of", "input_sha256", "now_utc"]

CASE_FILE = "case.json"
CASE_FORMAT = "medseg-case"
CASE_FORMAT_VERSION = 1
PROVENANCE_SCHEMA = "medseg.provenance"
PROVENANCE_SCHEMA_VERSION = 1

#: Fixed names of the parts of a case.
FILES = {"labels": "labels.nii.gz", "names": "labels.json", "provenance": "provenance.json",
         "uncertainty": "uncertainty.nii.gz", "image": "image.nii.gz", "lesions": "lesions/lesions.nii.gz",
         "lesion_csv": "lesions/lesions.csv", "lesion_json": "lesions/lesions.json",
         "lesion_sizes": "lesions/lesion_sizes.png", "lesion_montage": "lesions/lesion_montage.png"}
#: What a folder written by earlier medseg versions (``medseg segment``) holds: replaceable.
_LEGACY_NAMES = {"labels.nii.gz", "labels.json", "provenance.json", "uncertainty.nii.gz", "lesions"}
KINDS = ("proposal", "correction", "import")


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_of(path: str | os.PathLike, *, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def input_sha256(volume: Volume) -> str:
    """sha256 of the input's bytes: the file, or a DICOM series' files in slice order.

    ``""`` for an in-memory volume. Two runs on the same input give the same hash, whatever the
    folder is called; batch resumes on it.
    """
    source = volume.source
    if not source.path or not os.path.exists(source.path):
        return ""
    if os.path.isfile(source.path):
        return sha256_of(source.path)
    files = source.extra.get("files") or []
    digest = hashlib.sha256()
    for name in dict.fromkeys(files):  # a multi-frame file appears once per frame
        with open(os.path.join(source.path, name), "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest() if files else ""


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
            self._cache["lesion_document"] = None if path is None else _read_json(path)
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


def _read_json(path: Path) -> dict[str, Any]:
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
        return _read_json(manifest).get("format") == CASE_FORMAT
    return False


def _manifest_from_disk(root: Path) -> dict[str, Any]:
    """A manifest for a case folder assembled by hand (labels.nii.gz + labels.json [+ image,
    provenance.json]), the layout ``docs/training.md`` describes for corrected cases."""
    files = {}
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if file.is_file() and not rel.startswith(("history/", ".")):
            files[rel] = {"bytes": file.stat().st_size, "sha256": ""}
    provenance = _read_json(root / FILES["provenance"]) if (root / FILES["provenance"]).is_file() else {}
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
        provenance = _read_json(root / FILES["provenance"]) if (root / FILES["provenance"]).is_file() else {}
        return Case(root, manifest, provenance, read_label_table(root / FILES["names"]))
    if not manifest_path.is_file():
        what = "has labels but no case.json" if (root / FILES["labels"]).is_file() else "is not a medseg case"
        raise InputError(root, f"{what} (no {CASE_FILE}: not written by medseg, or its write did not finish)",
                         "run medseg again into this folder, or give the label file itself")
    manifest = _read_json(manifest_path)
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
    case = Case(root, manifest, _read_json(root / FILES["provenance"]), read_label_table(root / FILES["names"]))
    if verify:
        case.verify()
    return case


def _replaceable(kind: str, allow_replacing_corrections: bool):
    """Which existing folders a new case may replace (see :func:`write_case`)."""

    def check(folder: Path) -> str:
        names = {p.name for p in folder.iterdir()}
        if not names:
            return ""
        if CASE_FILE in names:
            try:
                manifest = _read_json(folder / CASE_FILE)
            except InputError:
                return "holds a damaged case.json"
            extra = names - {CASE_FILE, "history"} - {n.split("/")[0] for n in manifest.get("files", {})}
            if extra:
                return (f"holds files that are not part of its case ({', '.join(sorted(extra)[:4])}); move them out "
                        "first, they would be lost")
            corrected = manifest.get("kind") == "correction" or any(
                h.get("kind") == "correction" for h in manifest.get("history", []))
            if kind == "proposal" and corrected and not allow_replacing_corrections:
                return (f"holds a case corrected by a person (version {manifest.get('version')}); a new model run "
                        "would replace those corrections")
            return ""
        if names <= _LEGACY_NAMES:
            return ""  # what `medseg segment` wrote before cases had a manifest
        return (f"holds other files ({', '.join(sorted(names)[:4])}{', ...' if len(names) > 4 else ''}); medseg "
                "replaces its output folder as a whole")

    return check


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (no data copied; files of a published case are never modified in place)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_history(old: Path, new: Path) -> list[dict[str, Any]]:
    """The old case's files become ``history/v<N>/`` of the new one; its history is kept too."""
    manifest = _read_json(old / CASE_FILE)
    history = list(manifest.get("history", []))
    for entry in history:
        src = old / entry["folder"]
        for file in src.rglob("*"):
            if file.is_file():
                _link_or_copy(file, new / entry["folder"] / file.relative_to(src))
    folder = f"history/v{int(manifest.get('version', 1))}"
    for name in manifest.get("files", {}):
        _link_or_copy(old / name, new / folder / name)
    _link_or_copy(old / CASE_FILE, new / folder / CASE_FILE)
    history.append({"version": int(manifest.get("version", 1)), "kind": manifest.get("kind", "proposal"),
                    "created_utc": manifest.get("created_utc", ""), "folder": folder})
    return history


def write_case(path: str | os.PathLike, *, labels: Volume, provenance: Mapping[str, Any],
               kind: str = "proposal", lesions: Any = None, lesion_table: Any = None, image: Volume | None = None,
               uncertainty: Volume | None = None, plots: bool = True, command: str = "",
               inputs: tuple[str | os.PathLike, ...] = (), allow_replacing_corrections: bool = False,
               exports: Mapping[str, Any] | None = None) -> Path:
    """Write a case folder atomically and return its path.

    Parameters
    ----------
    path : path-like
        The case folder. New, empty, or holding a case: the new one replaces it as a whole (a
        ``"correction"`` or ``"import"`` keeps the previous version in ``history/``).
    labels : Volume
        Class labels with their ``label_set`` (value -> name), on the input's grid.
    provenance : mapping
        Plain data (schema ``medseg.provenance``); ``schema``, ``kind``, ``created_utc`` and
        ``medseg_version`` are filled in.
    kind : str
        ``"proposal"`` (a model's output), ``"correction"`` (a person changed it) or ``"import"``.
    lesions : LesionInstances or Volume, optional
        Lesion instance map (ids 1..n), on the same grid.
    lesion_table : LesionTable, optional
        Measurements of ``lesions`` (written as CSV and JSON; plots unless ``plots=False``).
    image : Volume, optional
        Stored as ``image.nii.gz`` (training needs the image; a DICOM source may move).
    uncertainty : Volume, optional
        Normalised entropy map.
    inputs : paths
        Files the case must not be written into or over (the input).
    allow_replacing_corrections : bool
        Let a ``"proposal"`` replace a case that holds a person's corrections (default: refuse).
    exports : mapping name -> callable, optional
        ``exports["seg.dcm"](path)`` writes ``CASE/exports/seg.dcm`` inside the same atomic write
        (listed in the manifest like every other file).

    Raises
    ------
    InputError
        The folder holds other files or corrections, or lies inside an input folder; a label map
        without names or off the grid.
    """
    from medseg.io import refuse_overwriting_inputs, save_volume, write_text_atomic

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if labels.label_set is None:
        raise InputError("labels", "have no class names (label_set)", "attach a LabelSet with Volume.with_labels")
    final = Path(path)
    for name in (CASE_FILE, *FILES.values()):
        refuse_overwriting_inputs(final / name, (labels.source.path, *inputs))
    lesion_map = getattr(lesions, "labels", lesions)
    for other, what in ((lesion_map, "lesion map"), (image, "image"), (uncertainty, "uncertainty map")):
        if other is not None and not other.same_grid(labels):
            raise InputError(what, f"is on another grid than the labels ({other.shape} vs {labels.shape})",
                             "give volumes on the labels' grid")
    with atomic_folder(final, replaceable=_replaceable(kind, allow_replacing_corrections)) as built:
        history = _carry_history(final, built) if kind != "proposal" and is_case(final) else []
        save_volume(labels, built / FILES["labels"], label_table=False)
        write_text_atomic(built / FILES["names"], json.dumps(labels.label_set.to_dict(), indent=2) + "\n")
        if uncertainty is not None:
            save_volume(uncertainty, built / FILES["uncertainty"])
        if image is not None:
            save_volume(image.with_labels(None), built / FILES["image"], label_table=False)
        if lesion_map is not None:
            write_lesions(built / "lesions", lesion_map, lesion_table, image, plots, command)
        for name, writer in (exports or {}).items():
            (built / "exports").mkdir(exist_ok=True)
            writer(built / "exports" / name)
        record = {"schema": PROVENANCE_SCHEMA, "schema_version": PROVENANCE_SCHEMA_VERSION, "kind": kind,
                  "created_utc": now_utc(), "medseg_version": __version__, **dict(provenance)}
        record["kind"] = kind
        write_text_atomic(built / FILES["provenance"], json.dumps(record, indent=2, default=str) + "\n")
        files = {}
        for file in sorted(built.rglob("*")):
            rel = file.relative_to(built).as_posix()
            if file.is_file() and not rel.startswith("history/"):
                files[rel] = {"bytes": file.stat().st_size, "sha256": sha256_of(file)}
        manifest = {"format": CASE_FORMAT, "format_version": CASE_FORMAT_VERSION,
                    "version": (max((h["version"] for h in history), default=0) + 1), "kind": kind,
                    "created_utc": record["created_utc"], "medseg_version": __version__,
                    "files": files, "history": history}
        write_text_atomic(built / CASE_FILE, json.dumps(manifest, indent=2) + "\n")
    return final


def write_lesions(folder: Path, lesion_map: Volume, table: Any, image: Volume | None, plots: bool,
                  command: str) -> None:
    """Write a lesion result into ``folder`` (which is being built: not atomic by itself).

    ``lesions.nii.gz`` (instance ids, uint16 when they fit), and with a table ``lesions.csv``,
    ``lesions.json`` and, with ``plots``, ``lesion_sizes.png`` and ``lesion_montage.png``.
    """
    import numpy as np

    from medseg.io import save_volume

    folder.mkdir(parents=True, exist_ok=True)
    array = lesion_map.array
    if array.dtype.itemsize > 2 and (array.size == 0 or int(array.max()) <= 65535):
        # cc3d answers in uint32 for large volumes; 16 bits hold the ids and halve the file.
        lesion_map = lesion_map.with_array(array.astype(np.uint16))
    save_volume(lesion_map.with_labels(None), folder / "lesions.nii.gz", label_table=False)
    if table is None:
        return
    from medseg.report import write_lesion_csv, write_lesion_json

    write_lesion_csv(table, folder / "lesions.csv")
    write_lesion_json(table, folder / "lesions.json", command=command)
    if plots:
        from medseg.report import plot_lesion_montage, plot_lesion_sizes

        plot_lesion_sizes(table, folder / "lesion_sizes.png")
        plot_lesion_montage(table, image, folder / "lesion_montage.png")
