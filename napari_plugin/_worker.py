"""``run_case`` as a generator that napari's ``thread_worker`` drives: progress and cancel.

``run_case`` is one blocking call that reports through ``progress(done, total, message)`` and stops
at its next check when its :class:`~medseg.progress.CancelToken` is set. napari's progress bar
(``thread_worker(progress={"total": N})``) advances one step per ``yield``, and ``worker.quit()`` (what
the activity dock's cancel button calls) acts only at a ``yield``. So :func:`run_case_steps` runs
``run_case`` in a helper thread and turns its progress messages into :data:`TOTAL_STEPS` yields
weighted by stage; while it waits it polls ``should_stop()`` (``worker.abort_requested``) and sets
the token, so the activity dock's cancel stops the computation too, not just the progress bar.

No Qt here; the widget wraps this in ``napari.qt.threading.thread_worker``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from medseg.errors import MedsegError
from medseg.progress import CancelToken

__all__ = ["STAGE_WEIGHTS", "TOTAL_STEPS", "RunError", "RunProgress", "run_case_steps"]

#: Progress message prefix -> (stage name shown, share of the run in steps). 20 steps of 5 %: each
#: step is one queued signal and one progress-bar repaint in the GUI thread, so a burst of steps
#: (a stage that finishes at once) must stay short.
STAGE_WEIGHTS = {
    "read": ("reading the image", 1),
    "load model": ("loading the model", 1),
    "preprocess": ("resampling to model space", 2),
    "inference": ("running the network", 11),
    "lesions": ("separating lesions", 2),
    "lesion table": ("measuring lesions", 2),
    "report": ("writing the case", 1),
}
TOTAL_STEPS = sum(weight for _, weight in STAGE_WEIGHTS.values())
_STARTS = {}
_offset = 0
for _key, (_, _weight) in STAGE_WEIGHTS.items():
    _STARTS[_key] = _offset
    _offset += _weight


@dataclass(frozen=True)
class RunError:
    """A user's error (or the cancel) the run ended with, returned as a value: napari's worker
    re-raises a returned exception in the GUI thread, and this one is for a notification."""

    error: MedsegError


@dataclass(frozen=True)
class RunProgress:
    """What one yield reports: overall ``step`` of :data:`TOTAL_STEPS`, the stage, its message."""

    step: int
    stage: str
    message: str


def _step(done: int, total: int, message: str) -> tuple[int, str]:
    prefix = message.split(":", 1)[0].strip()
    if prefix not in STAGE_WEIGHTS:
        return -1, prefix
    stage, weight = STAGE_WEIGHTS[prefix]
    fraction = min(max(done / total, 0.0), 1.0) if total else 0.0
    return _STARTS[prefix] + int(weight * fraction), stage


def run_case_steps(run: Callable[..., Any], source: Any, *, cancel: CancelToken,
                   should_stop: Callable[[], bool] = lambda: False, poll_s: float = 0.05,
                   **options: Any) -> Generator[RunProgress, None, Any]:
    """Yield :class:`RunProgress` while ``run(source, progress=..., cancel=cancel, **options)`` runs.

    Parameters
    ----------
    run : callable
        :func:`medseg.pipeline.run_case` (a parameter so tests can count or slow calls).
    source : Volume or path
    cancel : CancelToken
        Set it to stop the run; set here too when ``should_stop()`` turns true.
    should_stop : callable
        Polled every ``poll_s`` seconds while no progress arrives.
    options
        Passed to ``run``.

    Returns
    -------
    What ``run`` returns (the generator's return value, napari's ``worker.returned``), or a
    :class:`RunError` holding the :class:`~medseg.errors.MedsegError` it raised
    (``CancelledError`` when cancelled): a user's error is a result to show, not an exception for
    napari's worker to re-raise in the GUI thread.

    Raises
    ------
    Any other exception ``run`` raised (a bug), after its thread has ended.
    """
    messages: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def progress(done: int, total: int, message: str = "") -> None:
        messages.put((done, total, message))

    def target() -> None:
        try:
            outcome["value"] = run(source, progress=progress, cancel=cancel, **options)
        except BaseException as error:  # noqa: BLE001  (handed to the generator, which re-raises it)
            outcome["error"] = error
        finally:
            messages.put(None)

    thread = threading.Thread(target=target, name="medseg run_case", daemon=True)
    thread.start()
    reported = 0
    stage = "starting"
    try:
        while True:
            try:
                item = messages.get(timeout=poll_s)
            except queue.Empty:
                if should_stop():
                    cancel.cancel()
                continue
            if item is None:
                break
            step, name = _step(*item)
            stage = name if step >= 0 else stage
            while reported < min(step, TOTAL_STEPS - 1):
                reported += 1
                yield RunProgress(reported, stage, item[2])
            if should_stop():
                cancel.cancel()
    finally:
        if thread.is_alive():  # the generator was closed early: stop the run, do not leave it working
            cancel.cancel()
            thread.join()
    if "error" in outcome:
        if isinstance(outcome["error"], MedsegError):
            return RunError(outcome["error"])
        raise outcome["error"]
    while reported < TOTAL_STEPS:
        reported += 1
        yield RunProgress(reported, "done", "done")
    return outcome.get("value")
