"""The work of one case in a batch, the same in-process and on a Dask worker.

:func:`process_case` is one :func:`medseg.pipeline.run_case` call writing ``OUTPUT_DIR/<case_id>/``
(atomic as a unit), measured (seconds per stage, peak memory) and turned into a plain-data
record the batch manifest stores. A problem with the case's input (a :class:`MedsegError`, a
permission, out of memory) is a *failed case* with its one-line reason, never an exception that
stops the batch.

Each case folder also carries ``exports/batch.json`` (written inside the same atomic write,
listed in ``case.json``): the input's sha256, the model and the options hash the case was made
with. A resumed batch trusts a case folder only when that record matches: the folder, not the
manifest, is the proof that a case is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.batch.discover import CaseInput
from medseg.case import now_utc
from medseg.errors import CancelledError, MedsegError
from medseg.progress import CancelToken, check_cancel

__all__ = [
    "BATCH_RECORD",
    "RUN_OPTIONS",
    "RunSettings",
    "internal_error_line",
    "options_hash",
    "peak_rss_mb",
    "process_case",
    "reset_peak_rss",
    "run_in_process",
]

#: The record of a case's batch identity, inside the case folder.
BATCH_RECORD = "exports/batch.json"
BATCH_RECORD_SCHEMA = "medseg.batch_case"
#: ``run_case`` keyword arguments a batch passes on (``model``, ``device``, ``series`` are separate).
RUN_OPTIONS = ("tta", "overlap", "roi_size", "precision", "crop", "postprocess", "uncertainty", "lesions",
               "plots", "save_image", "allow_replacing_corrections")
#: Options that do not change what a case holds, so they are left out of the options hash.
_NOT_HASHED = ("allow_replacing_corrections",)


@dataclass
class RunSettings:
    """How every case of a batch runs (plain data: sent to Dask workers as is).

    Attributes
    ----------
    model : str
        What :func:`medseg.models.resolve_model` takes (``"default"`` or an absolute path).
    model_key : dict
        ``name``, ``version`` and ``weights_sha256`` of the model: part of each case's identity.
    run_options : dict
        ``run_case`` keyword arguments (:data:`RUN_OPTIONS`).
    options_hash : str
        sha256 of the options that shape the results (:func:`options_hash`).
    device, trust_bundle, threads, command
        As ``run_case``; ``threads`` are torch threads per process running cases.
    """

    model: str
    model_key: dict[str, str]
    run_options: dict[str, Any] = field(default_factory=dict)
    options_hash: str = ""
    device: str = "auto"
    trust_bundle: bool = False
    threads: int | None = None
    command: str = ""


def canonical_options(run_options: dict[str, Any], model: Any = None) -> dict[str, Any]:
    """The options that decide a case's results, in one canonical form.

    ``lesions=True`` and ``LesionOptions()`` are the same; an overlap or window size left to the
    model is the model's own value, so giving the model's default explicitly changes nothing.
    """
    from medseg.pipeline import LesionOptions

    out: dict[str, Any] = {}
    for name, value in run_options.items():
        if name in _NOT_HASHED:
            continue
        if name == "lesions":
            value = asdict(LesionOptions()) if value is True else asdict(value) if isinstance(value, LesionOptions) \
                else bool(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    if model is not None:
        pre = model.preprocessing
        if out.get("overlap") is None:
            out["overlap"] = float(pre.overlap)
        if out.get("roi_size") is None:
            out["roi_size"] = [int(v) for v in pre.roi_size]
    out.setdefault("lesions", asdict(LesionOptions()))
    return out


def options_hash(canonical: dict[str, Any]) -> str:
    """sha256 of the canonical options as sorted JSON."""
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()


# --- memory ---------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux ``clear_refs`` 5), so the peak read after
    a case is that case's. False where the system cannot (the peak is then the process's)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MB (VmHWM), or ``None`` where unknown."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    except (ImportError, OSError):  # pragma: no cover - not Linux/macOS
        return None


# --- one case -------------------------------------------------------------------------------
def _os_error(exc: OSError) -> MedsegError:
    where = exc.filename if exc.filename is not None else "medseg"
    return MedsegError(where, exc.strerror or str(exc), "check the file, its permissions and the free disk space")


def _batch_record(case: CaseInput, settings: RunSettings, input_sha256: str):
    """The ``exports/batch.json`` writer (called by ``write_case`` inside the atomic write)."""
    from medseg.io import write_text_atomic

    def write(result, path: Path) -> None:
        actual = (result.provenance.get("input") or {}).get("sha256") or ""
        # For one file or a DICOM series the reader hashes exactly the bytes the batch hashed:
        # record what was actually read (an input replaced during the run shows up on resume).
        same_definition = case.kind == "dicom" or len(case.files) == 1
        document = {"schema": BATCH_RECORD_SCHEMA, "schema_version": 1, "case_id": case.case_id,
                    "source_key": case.source_key, "input_path": case.path, "series": case.series,
                    "input_sha256": actual if same_definition and actual else input_sha256,
                    "model": settings.model_key, "options_hash": settings.options_hash,
                    "summary": _plain(result.summary())}
        write_text_atomic(path, json.dumps(document, indent=2, sort_keys=True) + "\n")

    return write


def _plain(value: Any) -> Any:
    """JSON-ready plain data (numpy scalars and arrays become Python numbers and lists)."""

    def default(item: Any) -> Any:
        return item.tolist() if hasattr(item, "tolist") else str(item)

    return json.loads(json.dumps(value, default=default))


def process_case(case: CaseInput, settings: RunSettings, model: Any, output_dir: str | os.PathLike, *,
                 input_sha256: str = "", device: str | None = None, progress=None, cancel=None) -> dict[str, Any]:
    """Run one case into ``output_dir/<case_id>/`` and return its record (plain data).

    Parameters
    ----------
    case : CaseInput
    settings : RunSettings
    model : SegmentationModel or str
        The loaded model (loaded once per process by the caller).
    output_dir : path-like
    input_sha256 : str
        The input's hash as discovered (recorded in ``exports/batch.json``).
    device : str, optional
        Overrides ``settings.device`` (a worker's own GPU).

    Returns
    -------
    dict
        ``status`` (``"done"`` or ``"failed"``), ``error`` and ``error_parts`` (where, problem,
        hint) for a failure, ``timings`` (s per stage), ``seconds``, ``peak_rss_mb``, ``summary``,
        ``warnings``, ``case_json_sha256``, ``outputs``, ``input_sha256``, ``pid``, ``host``.

    Raises
    ------
    CancelledError
        ``cancel`` was set.
    Exception
        Anything that is not a problem of the case's input (a bug, a lost file system): the
        caller decides (in-process: a failed case; Dask: retried once on another worker).
    """
    from medseg.case import sha256_of
    from medseg.pipeline import run_case

    record: dict[str, Any] = {"case_id": case.case_id, "pid": os.getpid(), "host": socket.gethostname(),
                              "started_utc": now_utc(), "input_sha256": input_sha256, "timings": {},
                              "summary": None, "warnings": [], "outputs": [], "case_json_sha256": None}
    reset_peak_rss()
    t0 = time.perf_counter()
    output = Path(output_dir) / case.case_id
    try:
        if case.problem:
            raise MedsegError(case.path, case.problem, "fix or remove this input; the other cases are not affected")
        if settings.threads:
            import torch

            torch.set_num_threads(int(settings.threads))
        result = run_case(case.path, series=case.series, model=model, output=output,
                          device=device or settings.device, trust_bundle=settings.trust_bundle,
                          command=settings.command, exports={BATCH_RECORD.split("/", 1)[1]: _batch_record(
                              case, settings, input_sha256)},
                          progress=progress, cancel=cancel, **settings.run_options)
    except CancelledError:
        raise
    except MedsegError as exc:
        _failed(record, exc)
    except MemoryError:
        _failed(record, MedsegError(case.path, "ran out of memory in this case",
                                    "give each worker more memory (memory_limit) or run fewer at once"))
    except OSError as exc:
        _failed(record, _os_error(exc))
    else:
        record["status"] = "done"
        record["timings"] = {k: round(float(v), 4) for k, v in result.timings.items()}
        record["summary"] = _plain(result.summary())
        record["warnings"] = list(result.warnings)
        record["input_sha256"] = (result.provenance.get("input") or {}).get("sha256") or input_sha256
        manifest = json.loads((output / "case.json").read_text(encoding="utf-8"))
        record["outputs"] = sorted(manifest.get("files", {}))
        record["case_json_sha256"] = sha256_of(output / "case.json")
    record["seconds"] = round(time.perf_counter() - t0, 4)
    record["peak_rss_mb"] = peak_rss_mb()
    record["finished_utc"] = now_utc()
    return record


def _failed(record: dict[str, Any], exc: MedsegError) -> None:
    record["status"] = "failed"
    record["error"] = str(exc)
    record["error_parts"] = [exc.where, exc.problem, exc.hint]


def run_in_process(cases: list[CaseInput], settings: RunSettings, loaded, output: Path, hashes,
                cancel: CancelToken | None) -> Iterator[tuple[str, str | None, Any]]:
    """One case after another in this process, with the model loaded once."""
    if settings.threads:
        import torch

        torch.set_num_threads(int(settings.threads))
    for case in cases:
        check_cancel(cancel, "batch")
        yield "started", case.case_id, {"worker": "in-process", "host": socket.gethostname(), "pid": os.getpid(),
                                        "started_utc": now_utc()}
        try:
            record = process_case(case, settings, loaded, output, input_sha256=hashes.get(case.case_id, ("", ""))[1],
                                  cancel=cancel)
        except CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug, not the input: this case fails, the batch goes on
            record = {"status": "failed", "seconds": None, "finished_utc": now_utc(),
                      "error": internal_error_line(exc), "traceback": traceback.format_exc()}
        yield "finished", case.case_id, record


def internal_error_line(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return (f"internal error: {type(exc).__name__}: {first} (a medseg bug, not the input; the traceback is in the "
            "manifest's attempts table; please report it)")
