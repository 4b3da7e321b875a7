"""``run_case``: the work of one scan, the one function every front end calls.

The CLI (``medseg run``, ``segment``, ``lesions``), the batch runner (in-process or on Dask) and
the napari plugin all call :func:`run_case`; none of them assembles stages itself. One call
reads the input once, segments it, separates and measures lesions, and (with ``output``) writes
one complete case folder (:mod:`medseg.case`)::

    read -> load model -> model space -> network -> restore -> clean-up -> lesions -> report (case)

Defaults are policy and live here, not in a front end: the lesion clean-up size, the lesion
class found by name, what is written. Errors name the API option (``roi_size``), which each
front end renders its own way (:func:`medseg.errors.option`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError, option
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.volume import Volume, value_counts

__all__ = ["LesionOptions", "CaseResult", "run_case", "STAGES", "summary_lines", "stage_seconds"]

#: Stages in the order they run; ``CaseResult.timings`` has one entry each (seconds) plus ``total``.
STAGES = ("read", "load_model", "model_space", "network", "restore", "cleanup", "lesions", "report")


@dataclass(frozen=True)
class LesionOptions:
    """How lesions are separated from the labels (see :func:`medseg.lesions.find_instances`).

    Attributes
    ----------
    label : int or str, optional
        The lesion class, by value or name; default: the model's class whose name means a lesion
        (``"lesion"``, ``"tumor"``, ... :data:`medseg.labels.LESION_NAMES`).
    min_volume_mm3 : float
        Components smaller than this are dust (default 100 mm^3, a sphere of 5.8 mm: a network's
        isolated specks are not lesions a reader would measure).
    split_h_mm : float, optional
        Split touching lesions at necks this much narrower than the parts (1-3 mm typical);
        default: no splitting.
    connectivity : {6, 18, 26}
    order : {"volume", "position"}
        Id rule: largest first (default) or superior to inferior.
    """

    label: int | str | None = None
    min_volume_mm3: float = 100.0
    split_h_mm: float | None = None
    connectivity: int = 26
    order: str = "volume"


@dataclass
class CaseResult:
    """What :func:`run_case` returns.

    Attributes
    ----------
    image : Volume
        The input as read (HU for CT).
    labels : Volume
        Class labels on the input's grid, with ``label_set`` (value -> name).
    lesions : LesionInstances or None
        Lesion instances (ids 1..n) when the labels hold a lesion class and lesions were asked for.
    lesion_table : LesionTable or None
        One row per lesion: mL, RECIST axes, HU, organ.
    uncertainty : Volume or None
        Normalised entropy, with ``uncertainty=True``.
    provenance : dict
        What ``provenance.json`` of the case holds (schema ``medseg.provenance``).
    timings : dict
        Seconds per stage (:data:`STAGES`) and ``total``.
    warnings : list of str
        Reasons to distrust the result (input is not what the model expects, ...).
    path : Path or None
        The case folder, when ``output`` was given.
    """

    image: Volume
    labels: Volume
    lesions: Any = None
    lesion_table: Any = None
    uncertainty: Volume | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None

    def organ_volumes_ml(self) -> dict[str, float]:
        """Class name -> volume in mL of every class present (background and lesions excluded)."""
        counts = value_counts(self.labels.array)
        label_set = self.labels.label_set
        lesion_values = set(label_set.lesion_values()) if label_set is not None else set()
        voxel_ml = self.labels.voxel_volume_ml
        out = {}
        for value, n in enumerate(counts):
            if value == 0 or not n or value in lesion_values:
                continue
            name = label_set.name_of(value) if label_set is not None and value in label_set.values else str(value)
            out[name] = float(n * voxel_ml)
        return out

    def summary(self) -> dict[str, Any]:
        """Plain data for a cohort table: organ volumes, lesion count and burden, timings."""
        table = self.lesion_table
        return {
            "organ_volumes_ml": self.organ_volumes_ml(),
            "n_lesions": None if table is None else len(table),
            "lesion_burden_ml": None if table is None else float(table.total_volume_ml),
            "n_recist_measurable": None if table is None else table.n_recist_measurable,
            "timings_s": dict(self.timings),
            "warnings": list(self.warnings),
        }


def _lesion_value(label_set, wanted: int | str | None, model_name: str) -> int | None:
    """The lesion class value: asked for by value or name, else found by name; None if absent."""
    if wanted is None:
        values = label_set.lesion_values()
        if len(values) > 1:
            names = ", ".join(label_set.name_of(v) for v in values)
            raise InputError(option("lesions"), f"the model {model_name} has several lesion classes ({names})",
                             "choose one by its name or value in the lesion options")
        return values[0] if values else None
    if isinstance(wanted, str) and not wanted.strip().lstrip("-").isdigit():
        try:
            return label_set.value_of(wanted)
        except KeyError:
            raise InputError(option("lesion_label", wanted), f"is not a class of the model {model_name} "
                             f"({', '.join(label_set.names[1:])})", "give one of its class names or values") from None
    value = int(wanted)
    if value not in label_set.values or value == 0:
        raise InputError(option("lesion_label", value), f"is not a class value of the model {model_name} "
                         f"({', '.join(f'{lab.value}={lab.name}' for lab in label_set.foreground)})",
                         "give one of its class values or names")
    return value


def _input_record(volume: Volume) -> dict[str, Any]:
    from medseg.case import input_sha256

    src = volume.source
    return {"path": os.path.abspath(src.path) if src.path else "", "format": src.format or "memory",
            "sha256": input_sha256(volume), "series_uid": src.series_uid, "study_uid": src.study_uid,
            "frame_of_reference_uid": src.frame_of_reference_uid, "modality": volume.modality,
            "series_description": src.series_description, "shape": list(volume.shape),
            "spacing_mm": [round(float(s), 6) for s in volume.spacing], "orientation": volume.orientation,
            "affine_ras": [[float(v) for v in row] for row in volume.affine],
            "warnings": list(src.warnings)}


def run_case(
    source: str | os.PathLike | Volume,
    *,
    model: Any = "default",
    output: str | os.PathLike | None = None,
    series: str | int | None = None,
    device: str = "auto",
    backend: str = "auto",
    tta: bool = False,
    overlap: float | None = None,
    roi_size: Sequence[int] | None = None,
    precision: str = "auto",
    crop: bool | None = None,
    postprocess: bool = True,
    uncertainty: bool = False,
    lesions: LesionOptions | bool = True,
    plots: bool = True,
    save_image: bool = False,
    exports: Mapping[str, Any] | None = None,
    trust_bundle: bool = False,
    allow_replacing_corrections: bool = False,
    command: str = "",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> CaseResult:
    """Segment one scan, separate and measure its lesions, and write the case folder.

    Parameters
    ----------
    source : path-like or Volume
        A DICOM file/folder, NIfTI, NRRD or MHA (read once), or a volume already in memory.
    model : "default", path or SegmentationModel
        Anything :func:`medseg.models.resolve_model` takes. A loaded model is reused as is, and
        paths are cached per process, so a batch worker or a viewer loads a model once.
    output : path-like, optional
        The case folder to write (atomically, as one unit; see :mod:`medseg.case`). ``None``
        writes nothing.
    series : str or int, optional
        Which series when ``source`` holds several.
    device, backend, tta, overlap, roi_size, precision, crop, postprocess, uncertainty
        As :func:`medseg.inference.segment` (``backend``: ``"auto"``, ``"torch"``, ``"openvino"``
        or ``"onnxruntime"``; see docs/backends.md).
    lesions : LesionOptions or bool
        ``True`` (default): lesions with :class:`LesionOptions` defaults when the model has a
        lesion class (found by name); ``False``: no lesions; options to choose the class, the
        dust size or splitting. Naming a class the model lacks is an error.
    plots : bool
        Write the lesion size plot and montage into the case.
    save_image : bool
        Store the image in the case (``image.nii.gz``), e.g. for training from it later.
    exports : mapping name -> callable, optional
        Extra outputs written inside the case as part of the same atomic write:
        ``exports["seg.dcm"] = writer`` calls ``writer(case_result, path)`` for
        ``CASE/exports/seg.dcm`` (DICOM SEG, RTSTRUCT, viewer colour tables).
    trust_bundle : bool
        Let a MONAI bundle run its own code (see :func:`medseg.models.resolve_model`).
    allow_replacing_corrections : bool
        Let this run replace a case folder that holds a person's corrections.
    command : str
        The command line, for the provenance.
    progress, cancel
        See :mod:`medseg.progress`; every stage reports and checks for cancellation.

    Returns
    -------
    CaseResult

    Raises
    ------
    InputError, ModelError, MedsegError
        One line naming the file or option, what is wrong and what to do.
    CancelledError
        ``cancel`` was set; nothing was written.

    Examples
    --------
    >>> import medseg
    >>> result = medseg.run_case("sample_data/phantom/ct_dicom", lesions=medseg.LesionOptions(split_h_mm=1.0))
    >>> sorted(result.organ_volumes_ml())[:3], result.labels.same_grid(result.image)
    (['aorta', 'bone', 'kidney_left'], True)
    >>> len(result.lesion_table) > 0, result.lesion_table.rows[0].organ != ""
    (True, True)
    """
    from medseg.inference import segment
    from medseg.models import resolve_model

    t0 = time.perf_counter()
    timings = dict.fromkeys(STAGES, 0.0)
    if isinstance(lesions, bool):
        lesion_options = LesionOptions() if lesions else None
    elif isinstance(lesions, LesionOptions):
        lesion_options = lesions
    else:
        raise TypeError(f"lesions must be a bool or LesionOptions, not {type(lesions).__name__}")
    if output is not None:
        _check_output(Path(output), source)

    # read (once: segmentation, lesion HU and the montage share this volume)
    if isinstance(source, Volume):
        image = source
    else:
        from medseg.io import load_volume

        report(progress, 0, 1, f"read: {Path(os.fspath(source)).name}")
        image = load_volume(source, series, progress=progress, cancel=cancel)
    check_cancel(cancel, "read")
    input_record = _input_record(image)
    timings["read"] = time.perf_counter() - t0

    t_model = time.perf_counter()
    report(progress, 0, 1, "load model")
    loaded = resolve_model(model, trust_bundle=trust_bundle, lazy=True)
    timings["load_model"] = time.perf_counter() - t_model
    lesion_value = None
    if lesion_options is not None:
        lesion_value = _lesion_value(loaded.labels, lesion_options.label, loaded.name)
        if lesion_value is None and lesion_options.label is not None:  # pragma: no cover - raised above
            raise AssertionError
    result = segment(image, loaded, device=device, backend=backend, tta=tta, overlap=overlap, roi_size=roi_size,
                     precision=precision, crop=crop, uncertainty=uncertainty, postprocess=postprocess,
                     progress=progress, cancel=cancel)
    timings["load_model"] += result.timings.get("backend", 0.0)  # export/compile, or the torch network built
    timings["model_space"] = result.timings["preprocess"]
    timings["network"] = result.timings["network"]
    timings["restore"] = result.timings["restore"]
    timings["cleanup"] = result.timings["postprocess"]
    labels = result.labels
    warnings = list(result.provenance.get("warnings", []))
    notes: list[str] = list(result.provenance.get("notes", []))  # e.g. a back-end not used, and why

    instances = table = None
    t_lesions = time.perf_counter()
    if lesion_options is not None and lesion_value is None:
        notes.append(f"the model {loaded.name} has no lesion class: no lesion table")
    elif lesion_options is not None:
        from medseg.lesions import find_instances, lesion_table

        check_cancel(cancel, "lesions")
        instances = find_instances(labels, label=lesion_value, allow_absent_label=True,
                                   connectivity=lesion_options.connectivity,
                                   min_volume_mm3=lesion_options.min_volume_mm3,
                                   split_h_mm=lesion_options.split_h_mm, order=lesion_options.order,
                                   progress=progress, cancel=cancel)
        table = lesion_table(instances, image=image, organs=labels, progress=progress, cancel=cancel)
    timings["lesions"] = time.perf_counter() - t_lesions

    settings = {"device": device, "backend": backend, "tta": bool(tta), "overlap": result.provenance.get("overlap"),
                "roi_size": result.provenance.get("roi_size"), "precision": result.provenance.get("precision"),
                "crop": crop, "postprocess": bool(postprocess), "uncertainty": bool(uncertainty),
                "lesions": None if lesion_options is None else {**asdict(lesion_options), "label": lesion_value}}
    inference = {k: v for k, v in result.provenance.items() if k not in ("models", "warnings", "input")}
    provenance = {"command": command, "input": input_record, "source_image": input_record["path"],
                  "model": loaded.describe(), "settings": settings, "warnings": warnings, "notes": notes,
                  "inference": inference,
                  "lesions": None if instances is None else {**instances.settings(), "n_lesions": len(table),
                                                              "total_volume_ml": float(table.total_volume_ml)}}
    entropy = result.entropy
    case = CaseResult(image, labels, instances, table, entropy, provenance, timings, warnings)
    if output is not None:
        check_cancel(cancel, "report")
        t_report = time.perf_counter()
        report(progress, 0, 1, f"report: writing {output}")
        case.path = _write(case, Path(output), source, plots=plots, save_image=save_image, command=command,
                           allow_replacing_corrections=allow_replacing_corrections, t0=t0, exports=exports)
        timings["report"] = time.perf_counter() - t_report
        report(progress, 1, 1, "report: done")
    timings["total"] = time.perf_counter() - t0
    provenance["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return case


def _check_output(output: Path, source: Any) -> None:
    """Before any work: never write into or over the input."""
    from medseg.io import refuse_overwriting_inputs
    from medseg.io._atomic import resolved

    if isinstance(source, Volume):
        inputs = (source.source.path,) if source.source.path else ()
    else:
        inputs = (os.fspath(source),)
    out = resolved(output)
    for item in inputs:
        src = resolved(item)
        if out == src or (src.is_dir() and src in out.parents):
            raise InputError(output, f"lies inside the input {src}", "write the case outside the input folder")
        refuse_overwriting_inputs(output / "labels.nii.gz", inputs)


def _write(case: CaseResult, output: Path, source: Any, *, plots: bool, save_image: bool, command: str,
           allow_replacing_corrections: bool, t0: float, exports: Mapping[str, Any] | None) -> Path:
    from medseg.case import write_case

    provenance = dict(case.provenance)
    provenance["timings_s"] = {k: round(v, 3) for k, v in case.timings.items()}
    provenance["timings_s"]["total_before_report"] = round(time.perf_counter() - t0, 3)
    inputs = () if isinstance(source, Volume) else (os.fspath(source),)
    return write_case(output, labels=case.labels, provenance=provenance, kind="proposal",
                      lesions=case.lesions, lesion_table=case.lesion_table,
                      image=case.image if save_image else None, background=case.image,
                      uncertainty=case.uncertainty, plots=plots,
                      command=command, inputs=inputs, allow_replacing_corrections=allow_replacing_corrections,
                      exports={name: (lambda path, w=w: w(case, path)) for name, w in (exports or {}).items()})


def summary_lines(case: CaseResult, *, limit: int = 12) -> list[str]:
    """What a front end prints after a run: classes with volumes, lesions, where it was written."""
    labels = case.labels
    lines = []
    volumes = sorted(case.organ_volumes_ml().items(), key=lambda kv: -kv[1])
    n_classes = len(labels.label_set) - 1 if labels.label_set is not None else 0
    shape = "x".join(str(s) for s in labels.shape)
    where = f" -> {case.path}" if case.path else ""
    lines.append(f"segmented {shape} {labels.orientation} in {case.timings.get('total', 0.0):.1f} s: "
                 f"{len(volumes)} of {n_classes} classes found{where}")
    for name, ml in volumes[:limit]:
        lines.append(f"  {name:<28} {ml:10.1f} mL")
    if len(volumes) > limit:
        lines.append(f"  ... {len(volumes) - limit} more")
    table = case.lesion_table
    if table is not None:
        lines.append(f"lesions: {len(table)} ({table.total_volume_ml:.4g} mL in total, "
                     f"{table.n_recist_measurable} RECIST measurable)")
    return lines


def stage_seconds(timings: Mapping[str, float]) -> str:
    """``read 0.4 s, model_space 0.3 s, ...`` for logs."""
    return ", ".join(f"{k} {timings[k]:.2f} s" for k in (*STAGES, "total") if k in timings)
