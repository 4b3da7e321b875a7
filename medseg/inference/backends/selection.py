"""Choosing the back-end for one call: what the user asked for, what is installed, what the cache
knows, and what still has to be checked or measured on the first windows.

:func:`select` returns a :class:`Selection`: the candidate forwards, which one is active, which
still need their agreement check against torch (done by the predictor on the first real window)
and whether ``auto`` still has to time them (on the next windows). Everything it learns
(verdicts, the measured choice) goes back into the cache, so the next call on this machine
starts straight with the chosen back-end, without building the torch network where the export
is cached.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import MedsegError, ModelError, option
from medseg.inference.backends import onnxruntime_backend, openvino_backend
from medseg.inference.backends.agreement import Agreement
from medseg.inference.backends.cache import BackendCache, Entry, recipe_key
from medseg.inference.backends.exports import (
    ExportFailed,
    export_entry,
    identity,
    not_exportable,
    package_version,
    torch_network,
)
from medseg.inference.backends.torch_backend import TorchForward, TorchNetwork

__all__ = ["BACKENDS", "EXPORTED", "Candidate", "Selection", "select"]

#: What every front end offers.
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
#: The CPU back-ends that run an export, fastest first as measured here (docs/backends.md); the
#: order only breaks ties, ``auto`` measures.
EXPORTED = {openvino_backend.NAME: openvino_backend, onnxruntime_backend.NAME: onnxruntime_backend}
#: ``auto`` exports, checks and times back-ends for a model only in a call with at least this
#: many windows: the first use costs about as much as 10-50 windows of torch (export 1-8 s,
#: every back-end run three times on one batch), which a smaller call would not win back. A choice
#: already measured on this machine is used whatever the size.
MIN_WINDOWS_TO_MEASURE = 8


@dataclass
class Candidate:
    """One way to run the networks: a forward per model of the ensemble."""

    name: str  # "torch", "torch:channels_last", "openvino", "onnxruntime"
    backend: str
    forwards: list
    entries: list[Entry | None] = field(default_factory=list)
    checked: bool = True  # agreement with torch known (torch itself: always)

    @property
    def is_torch(self) -> bool:
        return self.backend == "torch"


class Selection:
    """The candidates of one call and what is known about them (see the module docstring).

    ``mode``: ``"fixed"`` (one candidate), ``"trial"`` (torch's two memory layouts, each timed on
    one batch of real windows, as the predictor always did) or ``"calibrate"`` (``auto`` without a
    cached choice: every candidate warmed up and timed on the same real windows).
    """

    def __init__(self, *, requested: str, precision: str, roi, device, where: str, cache: BackendCache) -> None:
        self.requested, self.precision, self.roi, self.device = requested, precision, tuple(roi), device
        self.where, self.cache = where, cache
        self.candidates: list[Candidate] = []
        self.reference: Candidate | None = None
        self.mode = "fixed"
        self.how = ""
        self.notes: list[str] = []
        self.agreement: dict[str, list[dict]] = {}
        self.seconds_per_window: dict[str, float] = {}
        self.calibration_seconds = 0.0
        self.exports: dict[str, list[dict]] = {}
        self.decision_key: str | None = None
        self.compared_versions: dict[str, str | None] = {}
        self._active: Candidate | None = None
        self._torch_nets: list[TorchNetwork] | None = None
        self._models: list = []
        self._window_memory: list[int | None] = []

    # --- state ---------------------------------------------------------------------------------------
    @property
    def active(self) -> Candidate:
        return self._active or self.candidates[0]

    @property
    def unchecked(self) -> list[Candidate]:
        return [c for c in self.candidates if not c.checked]

    @property
    def explicit(self) -> bool:
        return self.requested != "auto"

    def window_memory_bytes(self) -> int | None:
        """Activation bytes per window of all models, from their verdicts (None when unknown)."""
        if not self._window_memory or any(v is None for v in self._window_memory):
            return None
        return int(sum(self._window_memory))

    def torch_candidates(self, *, layouts: bool) -> list[Candidate]:
        """Torch forwards (contiguous, and channels-last when ``layouts``), networks built on need."""
        if self._torch_nets is None:
            self._torch_nets = [TorchNetwork(torch_network(m), self.device) for m in self._models]
        out = [Candidate("torch", "torch", [TorchForward(n, precision=self.precision) for n in self._torch_nets])]
        if layouts:
            out.append(Candidate("torch:channels_last", "torch",
                                 [TorchForward(n, precision=self.precision, channels_last=True)
                                  for n in self._torch_nets]))
        return out

    def reference_candidate(self) -> Candidate:
        """Torch in float32: what every back-end is checked against (whatever precision runs)."""
        if self.precision == "fp32":
            return self.torch_candidates(layouts=False)[0]
        self.torch_candidates(layouts=False)  # builds the networks
        return Candidate("torch:fp32", "torch", [TorchForward(n, precision="fp32") for n in self._torch_nets])

    # --- what the predictor reports --------------------------------------------------------------------
    def judge(self, candidate: Candidate, results: list[Agreement], window_memory: list[int | None]) -> bool:
        """Record the agreement of ``candidate`` (one result per model); refuse it if any failed."""
        self.agreement[candidate.name] = [r.to_dict() for r in results]
        for entry, result, memory in zip(candidate.entries, results, window_memory):
            verdict = {**result.to_dict(), "window": list(self.roi), "window_memory_bytes": memory,
                       "checked": time.strftime("%Y-%m-%d %H:%M"), "medseg": _medseg_version()}
            if entry is not None:
                self.cache.save_verdict(entry, self.precision, verdict)
        if any(v is not None for v in window_memory):
            self._window_memory = list(window_memory)
        failed = [r for r in results if not r.passed]
        candidate.checked = True
        if failed:
            self.refuse(candidate, f"{failed[0].reason} on a window of this volume")
            return False
        return True

    def refuse(self, candidate: Candidate, reason: str) -> None:
        """Stop using ``candidate``: an error when the user asked for it, else one note."""
        names = ", ".join(m.name for m in self._models)
        if self.explicit and candidate.backend == self.requested:
            raise ModelError(self.where, f"{candidate.backend} is refused for the model {names}: {reason}",
                             f"use {option('backend', 'torch')} or {option('backend', 'auto')}")
        self.notes.append(f"{candidate.backend} not used for the model {names}: {reason}")
        self.candidates.remove(candidate)
        if self._active is candidate:
            self._active = None
        _close(candidate)
        if not self.candidates:  # it was the only one (a choice cached before): torch takes over
            self.candidates = self.torch_candidates(layouts=True)
            self.mode = "trial"
            self.how = f"torch: {candidate.backend} was refused"

    def choose(self, name: str, seconds_per_window: dict[str, float], *, calibration_seconds: float,
               remember: bool = True) -> None:
        """The predictor timed the candidates: keep ``name`` (the fastest); with ``remember``, for
        this machine too (``auto``'s calibration; torch's layout trial is cheap and redone)."""
        self.seconds_per_window.update({k: round(v, 4) for k, v in seconds_per_window.items()})
        self.calibration_seconds = round(calibration_seconds, 3)
        chosen = next(c for c in self.candidates if c.name == name)
        self._active = chosen
        for other in [c for c in self.candidates if c is not chosen]:
            _close(other)
        self.candidates = [chosen]
        self.mode = "fixed"
        if not remember:
            return
        self.how = "measured fastest on the first windows of this call"
        if self.decision_key is not None:
            self.cache.save_decision(self.decision_key, {
                "chosen": name, "seconds_per_window": self.seconds_per_window,
                "versions": self.compared_versions, "models": [m.name for m in self._models],
                "window": list(self.roi), "precision": self.precision, "machine": machine_id(),
                "threads": _threads(), "when": time.strftime("%Y-%m-%d %H:%M")})

    def close(self) -> None:
        for candidate in self.candidates:
            _close(candidate)
        if self._torch_nets is not None:
            for net in self._torch_nets:
                net.release()

    def describe(self) -> dict[str, Any]:
        """Plain data for provenance."""
        active = self.active
        return {"requested": self.requested, "used": active.backend, "variant": active.name,
                "how": self.how, "precision": self.precision, "seconds_per_window": self.seconds_per_window,
                "calibration_seconds": self.calibration_seconds, "agreement": self.agreement,
                "exports": self.exports, "notes": list(self.notes), "cache": str(self.cache.folder),
                "versions": {"torch": package_version("torch"),
                             **{n: mod.version() for n, mod in EXPORTED.items() if n == active.backend}}}


def select(models: list, *, backend: str = "auto", device, precision: str, roi, where: str,
           windows: int | None = None, cache: BackendCache | None = None) -> Selection:
    """Decide how the networks of ``models`` run for this call (see the module docstring).

    ``windows`` (the number of sliding windows of this call) lets ``auto`` skip a first use that
    would not pay off (:data:`MIN_WINDOWS_TO_MEASURE`).

    Raises
    ------
    MedsegError
        ``backend`` is not a back-end, is not installed, or cannot run on ``device`` / in
        ``precision``.
    ModelError
        An explicitly asked back-end cannot export this model or was refused for it.
    """
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise MedsegError(option("backend", backend), "is not a back-end", f"use {', '.join(BACKENDS)}")
    sel = Selection(requested=name, precision=precision, roi=roi, device=device, where=where,
                    cache=cache or BackendCache())
    sel._models = list(models)
    if device.type != "cpu":
        if name in EXPORTED:
            raise MedsegError(option("backend", name), f"runs on the CPU, but the device is {device}",
                              f"use {option('backend', 'torch')} or {option('backend', 'auto')} on a GPU")
        # A TensorRT candidate would be built here for CUDA; it is not (docs/backends.md).
        return _torch_only(sel, "CUDA keeps torch" if device.type == "cuda" else f"{device.type} keeps torch")
    if name == "torch":
        return _torch_only(sel, "asked for")
    reasons = [r for r in (not_exportable(m, explicit=name != "auto") for m in models) if r]
    if name == "auto":
        if reasons:
            return _torch_only(sel, reasons[0])
        return _auto(sel, windows)
    module = EXPORTED[name]
    if module.version() is None:
        raise MedsegError(option("backend", name), f"{name} is not installed",
                          f"pip install 'medseg[{module.EXTRA}]', or use {option('backend', 'auto')}")
    if reasons:
        raise ModelError(where, f"cannot run with {name}: {reasons[0]}", f"use {option('backend', 'torch')}")
    if not module.supports(precision):
        raise MedsegError(option("precision", precision), f"{name} runs float32 only",
                          f"use {option('precision', 'fp32')}, or {option('backend', 'openvino')} for bf16")
    try:
        candidate = _exported(sel, module)
    except ExportFailed as exc:
        raise ModelError(where, f"cannot be exported for {name} ({exc})",
                         f"use {option('backend', 'torch')} or {option('backend', 'auto')}") from exc
    if candidate is None:
        raise AssertionError("refuse() raises for an explicit back-end")  # pragma: no cover
    sel.candidates = [candidate]
    sel.how = "asked for"
    if not candidate.checked:
        sel.reference = sel.reference_candidate()
    return sel


def _torch_only(sel: Selection, how: str) -> Selection:
    sel.candidates = sel.torch_candidates(layouts=True)
    sel.mode = "trial"
    sel.how = how
    return sel


def _auto(sel: Selection, windows: int | None) -> Selection:
    usable = {n: m for n, m in EXPORTED.items() if m.supports(sel.precision)}
    installed = {n: m for n, m in usable.items() if package_version(n) is not None}
    sel.compared_versions = {"torch": package_version("torch"), **{n: package_version(n) for n in installed}}
    sel.decision_key = recipe_key({"models": [identity(m) for m in sel._models], "window": list(sel.roi),
                                   "precision": sel.precision, "machine": machine_id(), "threads": _threads(),
                                   "torch": package_version("torch")})
    decision = sel.cache.decision(sel.decision_key)
    if decision is not None and _still_valid(decision, installed):
        chosen = str(decision["chosen"])
        candidate = None
        if chosen.startswith("torch"):
            candidate = next(c for c in sel.torch_candidates(layouts=True) if c.name == chosen)
        elif chosen in installed and installed[chosen].version() is not None:
            try:
                candidate = _exported(sel, installed[chosen])
            except ExportFailed as exc:
                sel.notes.append(f"{chosen} not used for the model {_names(sel)}: export failed ({exc})")
        if candidate is not None:
            sel.candidates = [candidate]
            sel.seconds_per_window = dict(decision.get("seconds_per_window", {}))
            sel.how = f"measured fastest on this machine ({decision.get('when', '')}; cached)"
            if not candidate.checked:
                sel.reference = sel.reference_candidate()
            return sel
    if windows is not None and windows < MIN_WINDOWS_TO_MEASURE:
        return _torch_only(sel, f"{windows} window(s): too few to pay for exporting and timing back-ends "
                                f"(done on a call with {MIN_WINDOWS_TO_MEASURE} or more)")
    importable = {n: m for n, m in installed.items() if m.version() is not None}
    candidates, failed = [], {}
    for name, module in importable.items():
        try:
            candidate = _exported(sel, module)
        except ExportFailed as exc:
            failed[name] = str(exc)
            continue
        if candidate is not None:
            candidates.append(candidate)
    if failed:  # one note, however many back-ends the same failed export cost
        reasons = list(dict.fromkeys(failed.values()))
        why = reasons[0] if len(reasons) == 1 else "; ".join(f"{n}: {r}" for n, r in failed.items())
        sel.notes.append(f"{' and '.join(failed)} not used for the model {_names(sel)}: export failed ({why})")
    if not candidates:
        how = "no CPU back-end installed (pip install 'medseg[openvino]')" if not importable else \
            "no exported back-end usable for this model"
        return _torch_only(sel, how)
    sel.candidates = sel.torch_candidates(layouts=True) + candidates
    sel.reference = sel.reference_candidate()
    sel.mode = "calibrate"
    sel.how = "measuring on the first windows"
    return sel


def _exported(sel: Selection, module) -> Candidate | None:
    """The candidate for ``module`` with every model's export (cached or made now); None when a
    cached verdict refuses it (auto: with a note)."""
    entries, made = [], []
    for model in sel._models:
        began = time.perf_counter()
        entry, made_now = export_entry(sel.cache, module, model, sel.roi, onnx_backend=onnxruntime_backend)
        entries.append(entry)
        made.append({"model": model.name, "cached": not made_now, "persistent": entry.persistent,
                     "seconds": round(time.perf_counter() - began, 3), "entry": entry.path.name})
    sel.exports[module.NAME] = made
    if sel.cache.repaired:
        sel.notes.append(f"damaged cache entries were rebuilt: {'; '.join(sel.cache.repaired)}")
        sel.cache.repaired.clear()
    verdicts = [sel.cache.verdict(e, sel.precision) for e in entries]
    checked = all(v is not None for v in verdicts)
    failed = [v for v in verdicts if v is not None and not v.get("passed")]
    if failed:
        # Refused before, with these versions: say so, and do not even load it.
        sel.candidates.append(Candidate(module.NAME, module.NAME, [], entries))
        sel.refuse(sel.candidates[-1], f"{failed[0].get('reason', 'it disagreed with torch')} (checked "
                                       f"{failed[0].get('checked', '')}; `medseg cache clear` checks again)")
        return None
    make = openvino_backend.OpenVinoForward if module is openvino_backend else onnxruntime_backend.OnnxRuntimeForward
    try:
        forwards = [make(e.file(module.MODEL_FILE), threads=_threads(), precision=sel.precision) for e in entries]
    except Exception as exc:  # the runtime cannot load or compile its own export (its own error types)
        raise ExportFailed(f"{module.NAME} cannot load the export: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:200]}") from exc
    if checked:
        sel.agreement[module.NAME] = [{**v, "cached": True} for v in verdicts]
        sel._window_memory = [v.get("window_memory_bytes") for v in verdicts]
    return Candidate(module.NAME, module.NAME, forwards, entries, checked=checked)


def _still_valid(decision: dict, installed: dict) -> bool:
    """A cached choice holds while the back-ends it compared are installed in the same versions."""
    for name, version in (decision.get("versions") or {}).items():
        if name in EXPORTED and package_version(name) != version:
            return False
    return set(installed) <= set(decision.get("versions") or {}) | {"torch"}


def _close(candidate: Candidate) -> None:
    for forward in candidate.forwards:
        if not candidate.is_torch:
            forward.close()


def _names(sel: Selection) -> str:
    return ", ".join(m.name for m in sel._models)


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _medseg_version() -> str:
    from medseg import __version__

    return __version__


def machine_id() -> str:
    """CPU model and instruction-set flags (what decides which back-end is fastest), hashed."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.processor(), platform.machine()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = " ".join(sorted(value.split()))
                if flags and model:
                    break
    except OSError:
        pass
    return f"{model} [{recipe_key({'flags': flags, 'cpus': os.cpu_count()})[:8]}]"
