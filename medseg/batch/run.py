"""``run_batch``: many cases, resumable, one bad case never stops the rest; in-process or on Dask.

::

    checks -> lock OUTPUT_DIR -> discover cases -> hash inputs -> decide (resume) -> run -> record -> report

Without ``workers`` or ``scheduler`` the cases run one after another in this process (Dask is
not imported); with them, on a Dask cluster (:mod:`medseg.batch.dask_run`). Either way only
this process writes the manifest, from the events the executor yields:

``("note", None, text)``
    Something to tell the user (the cluster's dashboard address).
``("started", case_id, attempt)``
    An attempt began (worker, host, process id).
``("lost", case_id, info)``
    An attempt ended without a result (its worker died, or it raised and will be retried).
``("finished", case_id, record)``
    The case's final record (:func:`medseg.batch.work.process_case`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.batch.discover import CaseInput, discover_cases
from medseg.batch.fingerprint import hash_inputs
from medseg.batch.manifest import Manifest, wait_for_old_workers
from medseg.batch.preflight import (
    check_memory_limit,
    check_paths,
    lock_output,
    make_output,
    probe_scheduler,
)
from medseg.batch.resume import decide
from medseg.batch.work import (
    RUN_OPTIONS,
    RunSettings,
    canonical_options,
    options_hash,
    run_in_process,
)
from medseg.case import now_utc
from medseg.errors import InputError, MedsegError, option
from medseg.progress import CancelToken, ProgressCallback, hold_for_tests, report

__all__ = ["BatchEvent", "BatchResult", "CaseOutcome", "run_batch"]


@dataclass
class CaseOutcome:
    """How one case of the batch ended (``status``: done, failed, skipped, kept, pending)."""

    case_id: str
    status: str
    input: str
    reason: str = ""
    seconds: float | None = None
    attempts: int = 0


@dataclass
class BatchEvent:
    """What a front end hears while a batch runs: counts so far and what just happened."""

    kind: str
    case_id: str | None
    message: str
    counts: dict[str, int]


@dataclass
class BatchResult:
    """What :func:`run_batch` returns; ``exit_code`` is 0 when no case failed, else 1."""

    output_dir: Path
    manifest: Path
    cases: list[CaseOutcome]
    counts: dict[str, int]
    elapsed_s: float
    executor: str
    report: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def failed(self) -> list[CaseOutcome]:
        return [c for c in self.cases if c.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.stopped_early else 0

    def to_dict(self) -> dict[str, Any]:
        return {"output_dir": str(self.output_dir), "manifest": str(self.manifest), "executor": self.executor,
                "counts": dict(self.counts), "elapsed_s": round(self.elapsed_s, 3), "exit_code": self.exit_code,
                "stopped_early": self.stopped_early, "report": dict(self.report), "notes": list(self.notes),
                "cases": [asdict(c) for c in self.cases]}


def _settings(model: Any, device: str, trust_bundle: bool, threads: int | None, run_options: dict[str, Any],
              command: str) -> tuple[RunSettings, Any]:
    """Load the model once here (a bad model is one clear error before any case) and fix the
    identity every case is checked against."""
    from medseg.models import resolve_model

    unknown = set(run_options) - set(RUN_OPTIONS)
    if unknown:
        raise TypeError(f"run_options has unknown run_case options: {sorted(unknown)}")
    loaded = resolve_model(model, trust_bundle=trust_bundle)
    if isinstance(model, str) and model == "default":
        reference = model
    elif isinstance(model, (str, os.PathLike)):
        reference = str(Path(model).expanduser().resolve())  # what workers elsewhere load
    else:
        reference = loaded.path  # a model object: in this process it is used as is
    key = {"name": loaded.name, "version": loaded.version, "weights_sha256": loaded.weights_sha256 or loaded.path}
    canonical = canonical_options(run_options, loaded)
    settings = RunSettings(model=reference, model_key=key, run_options=dict(run_options),
                           options_hash=options_hash(canonical), device=device, trust_bundle=trust_bundle,
                           threads=threads, command=command)
    return settings, loaded


class _Counts(dict):
    def line(self) -> str:
        return (f"done {self['done']}, failed {self['failed']}, running {self['running']}"
                + (f", retried {self['retried']}" if self["retried"] else ""))


def run_batch(source: str | os.PathLike, output_dir: str | os.PathLike, *, model: Any = "default",
              device: str = "auto", trust_bundle: bool = False, threads: int | None = None,
              run_options: dict[str, Any] | None = None, workers: int | None = None,
              threads_per_worker: int | None = None, scheduler: Any = None, memory_limit: str | None = None,
              restart: bool = False, fail_fast: bool = False, patterns: Sequence[str] = (),
              exclude: Sequence[str] = (), command: str = "",
              error_style: Callable[[str, str | None], str] | None = None,
              on_event: Callable[[BatchEvent], None] | None = None, progress: ProgressCallback | None = None,
              cancel: CancelToken | None = None) -> BatchResult:
    """Run every case under ``source`` into ``output_dir/<case_id>/``, resuming by default.

    Parameters
    ----------
    source : path-like
        A folder tree of NIfTI/NRRD/MHA files and DICOM series, one image, or a CSV/text list
        (:func:`medseg.batch.discover.discover_cases`).
    output_dir : path-like
        Case folders, ``batch.sqlite`` (manifest), ``cohort.csv`` and ``cohort_*.png``.
    model, device, trust_bundle
        As :func:`medseg.pipeline.run_case`; the model is loaded once per process or worker.
    threads : int, optional
        torch threads when running in this process.
    run_options : dict, optional
        Further ``run_case`` options (:data:`medseg.batch.work.RUN_OPTIONS`): ``lesions``,
        ``overlap``, ``tta``, ``plots``, ... the same as ``medseg run`` takes.
    workers : int, optional
        Start a Dask ``LocalCluster`` of this many worker processes (one case at a time each).
    threads_per_worker : int, optional
        torch threads per worker (default: the worker's share of the cores).
    scheduler : str or distributed Client/cluster, optional
        Submit to an existing Dask cluster (``tcp://host:8786``, a ``SLURMCluster``, a ``Client``).
    memory_limit : str, optional
        Per worker of a LocalCluster (``"8GB"``; default: the machine's memory shared out).
    restart : bool
        Run every case again (default: skip cases whose folder is complete and matches).
    fail_fast : bool
        Stop at the first failed case (the rest stay pending for a later run).
    patterns, exclude : sequence of str
        Globs of inputs to take or leave (see ``discover_cases``).
    command : str
        The command line, for provenance and the manifest.
    error_style : callable, optional
        Renders option names in error lines (the CLI passes its flag style).
    on_event : callable, optional
        Gets a :class:`BatchEvent` for every start, retry and end of a case.
    progress, cancel
        See :mod:`medseg.progress` (``done`` counts finished cases of those to run).

    Returns
    -------
    BatchResult

    Raises
    ------
    InputError
        Nothing to run, an output folder inside the input, not writable or in use by another
        batch, an unreachable scheduler: before any case runs.
    """
    t_start = time.perf_counter()
    source, output = Path(source).expanduser(), Path(output_dir).expanduser()
    for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker), ("threads", threads)):
        if value is not None and int(value) < 1:
            raise InputError(option(name, value), "must be 1 or more", f"give a positive {option(name)}")
    if workers and scheduler is not None:
        raise InputError(option("scheduler", scheduler), f"cannot be given with {option('workers')}",
                         "start a local cluster or use an existing one, not both")
    # Everything that can be wrong with the command is found before anything is written.
    check_paths(source, output)
    if isinstance(scheduler, str):
        probe_scheduler(scheduler)  # seconds, not after the model has loaded
    if workers:
        check_memory_limit(memory_limit)
    settings, loaded = _settings(model, device, trust_bundle, threads, dict(run_options or {}), command)
    known = Manifest.read_known_ids(output)
    found = discover_cases(source, patterns=patterns, exclude=exclude, exclude_paths=[output], known_ids=known,
                           progress=progress)
    if not found.cases:
        skipped = "; skipped " + "; ".join(found.skipped_summary()) if found.skipped else ""
        raise InputError(source, f"holds no cases (no NIfTI/NRRD/MHA file and no DICOM image series){skipped}",
                         "point to the folder of scans, or give a CSV/text list of inputs")
    make_output(output)
    lock = lock_output(output, command)
    manifest = None
    try:
        from medseg.io._atomic import remove_stale_temporaries

        # Dask workers of a killed run may still be finishing a case.
        wait_for_old_workers(output, on_wait=lambda text: on_event and on_event(BatchEvent("note", None, text, {})))
        remove_stale_temporaries(output)  # what a killed run was building: never a case
        manifest = Manifest(output)
        if manifest.known_ids() != known:  # another run came in between: name the cases again
            found = discover_cases(source, patterns=patterns, exclude=exclude, exclude_paths=[output],
                                   known_ids=manifest.known_ids(), progress=progress)
        hashes = hash_inputs(found.cases, cached=manifest.cached_hash, progress=progress)
        manifest.store_hashes({sig: sha for sig, sha in hashes.values()})
        return _run(found, settings, loaded, manifest, output, hashes=hashes, workers=workers,
                    threads_per_worker=threads_per_worker, scheduler=scheduler, memory_limit=memory_limit,
                    restart=restart, fail_fast=fail_fast, error_style=error_style, on_event=on_event,
                    progress=progress, cancel=cancel, t_start=t_start)
    finally:
        if manifest is not None:
            manifest.close()
        lock.release()


def _run(found, settings: RunSettings, loaded, manifest: Manifest, output: Path, *, hashes, workers,
         threads_per_worker, scheduler, memory_limit, restart, fail_fast, error_style, on_event, progress, cancel,
         t_start) -> BatchResult:
    rows = manifest.cases()
    outcomes: dict[str, CaseOutcome] = {}
    to_run: list[CaseInput] = []
    counts = _Counts(total=len(found.cases), to_run=0, done=0, failed=0, running=0, retried=0, skipped=0, kept=0)
    replace = bool(settings.run_options.get("allow_replacing_corrections"))
    for case in found.cases:
        sha = hashes.get(case.case_id, ("", ""))[1]
        expected = {"input_sha256": sha, "model_key": settings.model_key, "options_hash": settings.options_hash}
        decision = decide(case, expected, rows.get(case.case_id), output, restart=restart, replace_corrections=replace)
        base = {"source_key": case.source_key, "input_path": case.path, "series": case.series,
                "input_kind": case.kind, "input_sha256": sha}
        if decision.action == "skip":
            counts["skipped" if decision.status == "done" else "kept"] += 1
            extra = _skip_record(case, decision, rows.get(case.case_id), settings, output)
            manifest.update_case(case.case_id, status=decision.status, **base, **extra)
            if decision.record is not None:
                manifest.adopt_interrupted(case.case_id, (output / case.case_id / "case.json").stat().st_mtime)
            outcomes[case.case_id] = CaseOutcome(case.case_id, "skipped" if decision.status == "done" else "kept",
                                                 case.path, decision.reason)
        else:
            to_run.append(case)
            manifest.update_case(case.case_id, status="pending", note=decision.reason, error=None, **base)
            outcomes[case.case_id] = CaseOutcome(case.case_id, "pending", case.path, decision.reason)
    counts["to_run"] = len(to_run)
    executor = ("in-process" if not workers and scheduler is None else
                f"dask LocalCluster ({workers} workers)" if workers else "dask scheduler")
    run_id = manifest.start_run(command=settings.command, executor=executor, model=settings.model_key,
                                options=canonical_options(settings.run_options, loaded),
                                options_hash=settings.options_hash, n_cases=len(found.cases))
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(found.counts().items()))
    notes = [(f"{len(found.cases)} cases found ({kinds}); {counts['skipped']} already done, {counts['kept']} kept, "
              f"{len(to_run)} to run")]
    notes += [f"skipped {line}" for line in found.skipped_summary()]

    def emit(kind: str, case_id: str | None, message: str) -> None:
        report(progress, counts["done"] + counts["failed"], counts["to_run"], f"batch: {counts.line()}")
        if on_event is not None:
            on_event(BatchEvent(kind, case_id, message, dict(counts)))

    for note in notes:
        emit("note", None, note)
    status, stopped = "finished", False
    if not to_run:  # nothing to do: no cluster to start, no model to load on workers
        events = iter(())
    elif executor == "in-process":
        events = run_in_process(to_run, settings, loaded, output, hashes, cancel)
    else:
        events = _dask_events(to_run, settings, output, hashes, workers=workers, threads_per_worker=threads_per_worker,
                              scheduler=scheduler, memory_limit=memory_limit, cancel=cancel)
    try:
        for kind, case_id, data in events:
            if kind == "note":
                notes.append(data)
                emit("note", None, data)
            elif kind == "started":
                manifest.attempt_started(case_id, run_id, worker=data["worker"], host=data.get("host", ""),
                                         pid=data.get("pid"), started_utc=data.get("started_utc") or now_utc())
                counts["running"] += 1
                emit("started", case_id, f"{case_id}: started on {data['worker']}")
            elif kind == "lost":
                manifest.attempt_ended(case_id, run_id, outcome=data["outcome"], error=data["reason"],
                                       worker=data.get("worker"))
                counts["running"] = max(0, counts["running"] - 1)
                counts["retried"] += 1
                emit("retry", case_id, f"{case_id}: {data['reason']}")
            elif kind == "finished":
                hold_for_tests("batch-record")
                outcome = _record(manifest, run_id, case_id, data, settings, error_style,
                                  why=outcomes[case_id].reason)
                outcomes[case_id] = outcome
                counts["running"] = max(0, counts["running"] - 1)
                counts[outcome.status] += 1
                emit("finished", case_id, f"{case_id}: {outcome.status}" + (
                    f" in {outcome.seconds:.1f} s" if outcome.status == "done" else f": {outcome.reason}"))
                if outcome.status == "failed" and fail_fast:
                    stopped = True
                    break
    except BaseException:
        status = "interrupted"
        raise
    finally:
        getattr(events, "close", lambda: None)()  # a generator's finally: the cluster is closed
        manifest.finish_run(run_id, "stopped" if stopped else status, counts)
    from medseg.batch.report import write_cohort_report

    paths = write_cohort_report(output, [manifest.case(c.case_id) for c in found.cases],
                                class_order=list(loaded.labels.names[1:]))
    result = BatchResult(output, manifest.path, [outcomes[c.case_id] for c in found.cases], dict(counts),
                         time.perf_counter() - t_start, executor, {k: str(v) for k, v in paths.items()}, notes,
                         stopped)
    return result


def _skip_record(case: CaseInput, decision, row: dict | None, settings: RunSettings, output: Path) -> dict[str, Any]:
    """What the manifest records for a case that does not run."""
    from medseg.case import read_case, sha256_of

    folder = output / case.case_id
    if decision.status == "kept":  # a person's corrections: the cohort gets the corrected numbers
        from medseg.batch.report import case_summary

        return {"note": decision.reason, "summary_json": case_summary(read_case(folder)), "timings_json": None}
    if row is not None and row.get("status") == "done":
        return {}
    # Complete and matching, but not recorded as done (a run killed in between): record it now.
    key = settings.model_key
    return {"summary_json": decision.record.get("summary"), "note": decision.reason,
            "case_json_sha256": sha256_of(folder / "case.json"), "model_name": key["name"],
            "model_version": key["version"], "weights_sha256": key["weights_sha256"],
            "options_hash": settings.options_hash, "finished_utc": now_utc()}


def _record(manifest: Manifest, run_id: int, case_id: str, record: dict[str, Any], settings: RunSettings,
            error_style, why: str = "") -> CaseOutcome:
    """Write a finished case into the manifest (the one place results are recorded)."""
    error = record.get("error")
    if record.get("error_parts") and error_style is not None:
        error = MedsegError(*record["error_parts"]).render(error_style)
    status = record["status"]
    manifest.attempt_ended(case_id, run_id, outcome=status, error=record.get("traceback") or error)
    manifest.update_case(case_id, status=status, run_id=run_id, finished_utc=record.get("finished_utc"),
                         seconds=record.get("seconds"), timings_json=record.get("timings"),
                         peak_rss_mb=record.get("peak_rss_mb"), outputs_json=record.get("outputs"),
                         case_json_sha256=record.get("case_json_sha256"), summary_json=record.get("summary"),
                         warnings_json=record.get("warnings"), error=error if status == "failed" else None,
                         input_sha256=record.get("input_sha256") or None, model_name=settings.model_key["name"],
                         model_version=settings.model_key["version"],
                         weights_sha256=settings.model_key["weights_sha256"], options_hash=settings.options_hash,
                         note=record.get("note"))
    row = manifest.case(case_id) or {}
    return CaseOutcome(case_id, status, row.get("input_path") or "", error if status == "failed" else why,
                       record.get("seconds"), int(row.get("attempts") or 1))


def _dask_events(*args, **kwargs):
    try:
        # Dask is imported only when asked for.
        from medseg.batch.dask_run import run_on_dask
    except ImportError as exc:
        where = option("workers") if kwargs.get("workers") else option("scheduler")
        raise InputError(where, f"needs Dask distributed, which is not installed ({exc})", "install it with pip "
                         "install 'medseg[dask]', or leave the option out to run in this process") from None
    return run_on_dask(*args, **kwargs)
