"""Writing a case folder as one unit (see :mod:`medseg.case` for the layout and the rules)."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import wait
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg import __version__
from medseg.case._format import (CASE_FILE, CASE_FORMAT, CASE_FORMAT_VERSION, FILES, KINDS, PROVENANCE_SCHEMA,
                                 PROVENANCE_SCHEMA_VERSION, now_utc, sha256_of)
from medseg.case._read import is_case, read_json
from medseg.errors import InputError
from medseg.export.colour_tables import lesion_label_set, write_colour_tables
from medseg.io._atomic import atomic_folder
from medseg.progress import hold_for_tests
from medseg.volume import Volume

__all__ = ["write_case", "write_lesions"]

#: What a folder written by earlier medseg versions (``medseg segment``) holds: replaceable.
_LEGACY_NAMES = {"labels.nii.gz", "labels.json", "provenance.json", "uncertainty.nii.gz", "lesions", "labels.ctbl",
                 "labels.itksnap.txt"}


def _replaceable(kind: str, allow_replacing_corrections: bool):
    """Which existing folders a new case may replace (see :func:`write_case`)."""

    def check(folder: Path) -> str:
        names = {p.name for p in folder.iterdir()}
        if not names:
            return ""
        if CASE_FILE in names:
            try:
                manifest = read_json(folder / CASE_FILE)
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
    manifest = read_json(old / CASE_FILE)
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
               exports: Mapping[str, Any] | None = None, background: Volume | None = None) -> Path:
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
    background : Volume, optional
        The image the lesion montage is drawn on when it is not stored (default: ``image``).

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
    background = image if background is None else background
    for other, what in ((lesion_map, "lesion map"), (image, "image"), (uncertainty, "uncertainty map"),
                        (background, "plot background")):
        if other is not None and not other.same_grid(labels):
            raise InputError(what, f"is on another grid than the labels ({other.shape} vs {labels.shape})",
                             "give volumes on the labels' grid")
    with atomic_folder(final, replaceable=_replaceable(kind, allow_replacing_corrections)) as built:
        history = _carry_history(final, built) if kind != "proposal" and is_case(final) else []
        # The plots (matplotlib, ~1-2 s) are drawn in a thread while the label maps are compressed
        # (zlib releases the GIL): on a 512x512x300 case this takes ~1 s off the write.
        plotting = _start_plots(built / "lesions", lesion_table, background) \
            if plots and lesion_map is not None and lesion_table is not None else None
        try:
            save_volume(labels, built / FILES["labels"], label_table=False)
            hold_for_tests("case-write")
            write_text_atomic(built / FILES["names"], json.dumps(labels.label_set.to_dict(), indent=2) + "\n")
            # Names and colours where 3D Slicer and ITK-SNAP look for them (labels.ctbl, labels.itksnap.txt).
            write_colour_tables(labels.label_set, built / FILES["labels"])
            if uncertainty is not None:
                save_volume(uncertainty, built / FILES["uncertainty"])
            if image is not None:
                save_volume(image.with_labels(None), built / FILES["image"], label_table=False)
            if lesion_map is not None:
                write_lesions(built / "lesions", lesion_map, lesion_table, background, False, command)
        finally:
            if plotting is not None:  # never leave a thread writing into a folder being removed
                wait([plotting])
        if plotting is not None:
            plotting.result()  # re-raises what the plots raised; the folder is then not published
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


def _start_plots(folder: Path, table: Any, image: Volume | None):
    """Draw ``lesion_sizes.png`` and ``lesion_montage.png`` into ``folder`` in a thread; a future."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)

    def draw() -> None:
        from medseg.report import plot_lesion_montage, plot_lesion_sizes

        plot_lesion_sizes(table, folder / "lesion_sizes.png")
        plot_lesion_montage(table, image, folder / "lesion_montage.png")

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medseg-plots")
    future = pool.submit(draw)
    pool.shutdown(wait=False)  # the thread ends with ``draw``; the caller waits on the future
    return future


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
    write_colour_tables(lesion_label_set(r.id for r in table.rows), folder / "lesions.nii.gz")
    from medseg.report import write_lesion_csv, write_lesion_json

    write_lesion_csv(table, folder / "lesions.csv")
    write_lesion_json(table, folder / "lesions.json", command=command)
    if plots:
        from medseg.report import plot_lesion_montage, plot_lesion_sizes

        plot_lesion_sizes(table, folder / "lesion_sizes.png")
        plot_lesion_montage(table, image, folder / "lesion_montage.png")
