"""napari writers and the case save: layers back to files on their exact source grid.

* :func:`write_labels`: one label layer to NIfTI / NRRD / MHA (names in the ``X.json`` sidecar),
  on the grid of the volume it was opened from or computed on.
* :func:`write_case_folder` / :func:`save_case`: organ labels (+ lesion instances, + image) as a
  medseg case folder, the form the CLI, batch and training read. Atomic as a whole
  (:func:`medseg.case.write_case`). A case that exists stays: the new one is a ``"correction"``
  and the previous version moves to ``history/``; a model run never saved before is written
  first as the ``"proposal"``, so the model's output is kept under the person's correction.
  Provenance says who, when, with which model, on which input (sha256), which lesions were
  reviewed.

Every write refuses to replace an input (the opened label file, the image, a DICOM folder);
the error is one notification and nothing is written.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError, MedsegError
from medseg.labels import LabelSet
from medseg.volume import Volume
from napari_plugin._layers import MEDSEG, LayerInfo, volume_from_layer
from napari_plugin._notify import notify_error, notify_info

__all__ = ["add_to_training_set", "correction_provenance", "save_case", "write_case_folder", "write_labels"]


def _info(layer: Any) -> LayerInfo | None:
    meta = layer[1].get("metadata", {}) if isinstance(layer, tuple) else layer.metadata
    info = (meta or {}).get(MEDSEG)
    return info if isinstance(info, LayerInfo) else None


def _contiguous(volume: Volume) -> Volume:
    return volume.with_array(np.ascontiguousarray(volume.array), label_set=volume.label_set)


def _named(volume: Volume) -> Volume:
    """A class map with names: its own, or "class <value>" for each value present."""
    if volume.label_set is not None:
        return volume
    values = np.unique(volume.array)
    return volume.with_labels(LabelSet({0: "background", **{int(v): f"class {int(v)}" for v in values if v}}))


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: a label layer to ``path`` (.nii.gz, .nii, .nrrd, .mha)."""
    try:
        volume = _contiguous(volume_from_layer((data, meta)))
        info = _info((data, meta))
        if info is not None and info.role == "labels":
            volume = _named(volume)
        from medseg.io import save_volume

        written = save_volume(volume, path, inputs=_inputs(volume))
    except MedsegError as error:
        notify_error(error)
        return []
    notify_info(f"medseg: wrote {written}")
    return [str(written)]


def _inputs(*volumes: Volume | None) -> tuple[str, ...]:
    return tuple(v.source.path for v in volumes if v is not None and v.source.path)


def write_case_folder(path: str, layer_data: list[tuple]) -> list[str]:
    """npe2 multi-layer writer: label, lesion and image layers to a case folder at ``path``."""
    by_role: dict[str, Any] = {}
    for data, meta, kind in layer_data:
        info = _info((data, meta))
        role = info.role if info is not None else ("image" if kind == "image" else "labels")
        by_role.setdefault(role, (data, meta))
    try:
        suffix = Path(path).suffix
        if suffix and not suffix[1:].isdigit() and not Path(path).is_dir():
            raise InputError(path, f"has a file extension ({suffix}); a medseg case is a folder",
                             "give a folder name without an extension, or save one label layer as .nii.gz")
        if "labels" not in by_role:
            raise InputError(path, "a case needs an organ/class label layer", "select the labels layer too")
        folder = save_case(path, labels=by_role["labels"], lesions=by_role.get("lesions"),
                           image=by_role.get("image"))
    except MedsegError as error:
        notify_error(error)
        return []
    return [str(folder)]


def _input_record(image: Volume | None, labels: Volume, base: dict[str, Any]) -> dict[str, Any]:
    from medseg.case import input_sha256

    record = dict(base.get("input") or {})
    source = image if image is not None else labels
    if not record.get("sha256"):
        record["sha256"] = input_sha256(source) if source.source.path else ""
    record.setdefault("path", os.path.abspath(source.source.path) if source.source.path else "")
    record.setdefault("series_uid", source.source.series_uid)
    record.setdefault("shape", list(labels.shape))
    record.setdefault("spacing_mm", [round(float(s), 6) for s in labels.spacing])
    record.setdefault("orientation", labels.orientation)
    record.setdefault("affine_ras", [[float(v) for v in row] for row in labels.affine])
    return record


def correction_provenance(base: dict[str, Any] | None, *, labels: Volume, image: Volume | None, author: str,
                          reviewed: set[int], n_lesions: int | None, kind: str,
                          renumbered: dict[int, int] | None = None) -> dict[str, Any]:
    """Provenance of a case saved from napari: the run's record plus who corrected what."""
    import napari

    from medseg import __version__
    from medseg.case import now_utc

    base = dict(base or {})
    record = {key: base[key] for key in ("source_image", "model", "settings", "inference", "lesions", "warnings")
              if key in base}
    record["command"] = "napari: medseg Save case"
    record["input"] = _input_record(image, labels, base)
    record.setdefault("source_image", record["input"].get("path", ""))
    record["correction" if kind == "correction" else "import"] = {
        "author": author, "saved_utc": now_utc(), "tool": f"medseg napari plugin {__version__} (napari "
        f"{napari.__version__})", "based_on_case": base.get("case_path", ""),
        "based_on_version": base.get("case_version"), "previous_command": base.get("command", "")}
    record["review"] = {"reviewed_lesions": sorted(int(i) for i in reviewed), "n_lesions": n_lesions}
    if renumbered:
        record["review"]["lesion_ids_renumbered_from"] = {str(k): v for k, v in renumbered.items()}
    return record


def _same_scan(folder: Path, labels: Volume) -> None:
    from medseg.case import read_case
    from napari_plugin._geometry import layer_geometry, same_world_grid

    existing = read_case(folder).labels
    if not same_world_grid(layer_geometry(existing.affine, existing.shape), layer_geometry(labels.affine, labels.shape)):
        raise InputError(folder, "holds a case of another scan (its labels lie on another grid)",
                         "save into a new folder, or into this scan's own case folder")


def _detached(volume: Volume | None, folder: Path) -> Volume | None:
    """``volume`` without its source path when that file lies in the case folder being written."""
    if volume is None or not volume.source.path:
        return volume
    source = Path(volume.source.path).resolve()
    if folder.resolve() in source.parents:
        from dataclasses import replace

        return replace(volume, source=volume.source.replace(path=""))
    return volume


def _changed_voxels(new: Volume | None, old: Volume | None) -> int | None:
    """Voxels that differ from what the layer started from (None when that is unknown)."""
    if new is None or old is None:
        return None if new is not None or old is not None else 0
    if not new.same_grid(old):
        old = old.reoriented(new.orientation)  # same voxels stored in another order
        if not new.same_grid(old):
            return int(new.array.size)
    return int(np.count_nonzero(np.asarray(new.array) != np.asarray(old.array)))


def _baseline(infos: list[LayerInfo], proposal: Any) -> tuple[Volume | None, Volume | None, bool]:
    """(labels, lesions, known) the layers started from: the unsaved model run, else the case on disk."""
    if proposal is not None:
        lesions = proposal.lesions.labels if proposal.lesions is not None else None
        return proposal.labels, lesions, True
    case_path = next((i.case_path for i in infos if i.case_path), "")
    from medseg.case import is_case, read_case

    if case_path and is_case(case_path):
        case = read_case(case_path)
        return case.labels, case.lesions, True
    return None, None, False


def save_case(folder: str | os.PathLike, *, labels: Any, lesions: Any = None, image: Any = None,
              author: str | None = None, store_image: bool | None = None, plots: bool = True) -> Path:
    """Save label (and lesion, image) layers as a case folder; returns the folder.

    Parameters
    ----------
    folder : path-like
        New, empty, or this scan's case folder (then the new version is a correction and the old
        one is kept in ``history/``).
    labels, lesions, image : napari layers or (data, meta) pairs
    author : str
        Who corrected; default: the login name.
    store_image : bool
        Store the image in the case (``image.nii.gz``); default: when the image is not a file
        on disk (e.g. computed), or was stored in the case it came from.
    plots : bool
        Write the lesion size plot and montage.

    Raises
    ------
    InputError
        Another scan's case, an input folder, a folder with other files, a layer without grid.
    """
    from medseg.case import is_case, read_case, write_case
    from medseg.lesions import instances_from_map, lesion_table

    folder = Path(folder)
    labels_info, lesions_info = _info(labels), _info(lesions) if lesions is not None else None
    # The case lies on the image's grid (the labels' when there is no image); label maps stored in
    # another voxel order (LAS labels of an LPS series) are reordered onto it, exactly.
    grid = image if image is not None else (labels if _info(labels) is not None else None)
    labels_volume = _named(_contiguous(volume_from_layer(labels, reference=image, grid=grid)))
    lesions_volume = (_contiguous(volume_from_layer(lesions, reference=image, grid=grid or labels))
                      if lesions is not None else None)
    image_volume = _contiguous(volume_from_layer(image)) if image is not None else None
    # Labels read from this case: their files are replaced as a whole, the old version kept in
    # history/ (write_case refuses to write over a label map's own source file otherwise).
    labels_volume, lesions_volume = (_detached(v, folder) for v in (labels_volume, lesions_volume))
    infos = [i for i in (labels_info, lesions_info) if i is not None]
    proposal = next((i.proposal for i in infos if i.proposal is not None), None)
    base = dict((labels_info.provenance if labels_info else None) or (proposal.provenance if proposal else None) or {})
    base.setdefault("case_path", labels_info.case_path if labels_info else "")
    old_labels, old_lesions, known = _baseline(infos, proposal)
    changed = {"labels": _changed_voxels(labels_volume, old_labels) if known else None,
               "lesions": _changed_voxels(lesions_volume, old_lesions) if known else None}
    edited = not known or any(changed.values())
    inputs = _inputs(labels_volume, image_volume)
    if store_image is None:
        stored_before = bool(base.get("case_path")) and (Path(base["case_path"]) / "image.nii.gz").is_file()
        store_image = image_volume is not None and (not image_volume.source.path or stored_before)
    existing = is_case(folder)
    reviewed = set(lesions_info.reviewed) if lesions_info else set()
    reviewed_before = {int(i) for i in (base.get("review") or {}).get("reviewed_lesions") or []}
    same_case = bool(base.get("case_path")) and existing and Path(base["case_path"]).resolve() == folder.resolve()
    session = next((i.session for i in infos if i.session is not None), None)
    if same_case and known and not edited and reviewed == reviewed_before and not (session and session.changes):
        notify_info(f"medseg: no changes since version {read_case(folder).version} of {folder}; nothing written")
        return folder
    if existing:
        _same_scan(folder, labels_volume)
    elif proposal is not None:
        # First save of a model run: its untouched proposal becomes version 1.
        write_case(folder, labels=proposal.labels, provenance=proposal.provenance, kind="proposal",
                   lesions=proposal.lesions, lesion_table=proposal.lesion_table,
                   image=proposal.image if store_image else None, plots=plots, inputs=inputs,
                   command="napari: medseg Segment")
        existing = True
        if not edited and not reviewed:
            _saved(infos, folder, read_case(folder).provenance)
            return folder
    kind = "correction" if existing else "import"
    table = None
    if lesions_volume is not None:
        table = lesion_table(instances_from_map(lesions_volume), image=image_volume, organs=labels_volume)
    provenance = correction_provenance(
        base, labels=labels_volume, image=image_volume, author=author or getpass.getuser(),
        reviewed=reviewed, kind=kind,
        n_lesions=None if table is None else len(table), renumbered=lesions_info.renumbered if lesions_info else None)
    provenance["correction" if kind == "correction" else "import"]["voxels_changed"] = changed
    session = next((i.session for i in infos if i.session is not None), None)
    if session is not None:
        _add_session(provenance, session, kind, table)
    write_case(folder, labels=labels_volume, provenance=provenance, kind=kind, lesions=lesions_volume,
               lesion_table=table, image=image_volume if store_image else None, plots=plots, inputs=inputs,
               command="napari: medseg Save case")
    _saved(infos, folder, read_case(folder).provenance)
    if session is not None:
        session.saved(str(folder), read_case(folder).version)
    if lesions_info is not None and table is not None:
        lesions_info.lesion_rows = list(table.rows)
    return folder


def _add_session(provenance: dict[str, Any], session: Any, kind: str, table: Any) -> None:
    """The correction session's log (every operation, undo and redo) and review marks (slices per
    axis, coverage) into the provenance of the version being saved."""
    key = "correction" if kind == "correction" else "import"
    provenance[key].update(session.core.provenance())
    present = [row.id for row in table.rows] if table is not None else None
    review = session.core.review.to_dict(present)
    provenance["review"].update({k: v for k, v in review.items() if k != "reviewed_lesions"})


def add_to_training_set(folder: str | os.PathLike, session: Any, viewer: Any, *, author: str | None = None) -> Path:
    """Write the scan's image + corrected labels (+ lesions) + provenance as a case in a training folder.

    ``medseg train FOLDER --from default`` (:func:`medseg.training.discover_cases`) reads such a
    folder of cases. The case is ``FOLDER/<name>`` (the case's or image's name; an existing case of
    this scan gets a new version, another scan's name gets a suffix), kind ``"correction"``, with the
    image stored (training needs it) and the session's operations in its provenance.

    Raises
    ------
    InputError
        No organ labels in the session, no image of this scan open, a folder inside an input.
    """
    from medseg.case import is_case, write_case
    from medseg.lesions import instances_from_map, lesion_table
    from napari_plugin._geometry import same_world_grid

    labels_layer = session.layers.get("labels")
    if labels_layer is None:
        raise InputError("add to training set", "the scan has no organ label layer", "open or compute its organ labels")
    info = _info(labels_layer)
    image_layer = next((layer for layer in viewer.layers if _info(layer) is not None and _info(layer).role == "image"
                        and same_world_grid(_info(layer).geometry, info.geometry)), None)
    if image_layer is None:
        raise InputError("add to training set", f"no image of {labels_layer.name}'s scan is open (training needs it)",
                         "open the image the labels were made on")
    image = _contiguous(volume_from_layer(image_layer))
    labels = _named(_contiguous(volume_from_layer(labels_layer, grid=image_layer)))
    lesions_layer = session.layers.get("lesions")
    lesions = _contiguous(volume_from_layer(lesions_layer, grid=image_layer)) if lesions_layer is not None else None
    name = Path(info.case_path).name if info.case_path else image_layer.name
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "case"
    target = Path(folder) / name
    suffix = 1
    while target.exists() and not (is_case(target) and _same_grid_case(target, labels)):
        suffix += 1
        target = Path(folder) / f"{name}-{suffix}"
    table = lesion_table(instances_from_map(lesions), image=image, organs=labels) if lesions is not None else None
    provenance = correction_provenance(dict(info.provenance or {}, case_path=info.case_path), labels=labels, image=image,
                                       author=author or getpass.getuser(), reviewed=set(session.core.review.lesions),
                                       n_lesions=None if table is None else len(table), kind="correction")
    _add_session(provenance, session, "correction", table)
    provenance["correction"]["training_set"] = {"folder": str(Path(folder).resolve()), "from_case": info.case_path}
    provenance["command"] = "napari: medseg Add to training set"
    write_case(target, labels=labels, provenance=provenance, kind="correction", lesions=lesions, lesion_table=table,
               image=image, plots=False, inputs=_inputs(labels, image), command="napari: medseg Add to training set")
    return target


def _same_grid_case(folder: Path, labels: Volume) -> bool:
    try:
        _same_scan(folder, labels)
    except InputError:
        return False
    return True


def _saved(infos: list[LayerInfo], folder: Path, provenance: dict[str, Any]) -> None:
    from medseg.case import read_case

    version = read_case(folder).version
    for info in infos:
        info.case_path = str(folder)
        info.edits = 0
        info.proposal = None
        info.provenance = {**provenance, "case_path": str(folder), "case_version": version}
