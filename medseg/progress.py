"""Progress reporting and cancellation for long work, independent of any front end.

Long functions in medseg (reading a large series, sliding-window inference, training, a batch)
take two optional keyword arguments:

``progress``
    A callable ``progress(done, total, message)``; ``done`` and ``total`` count steps of the
    current stage (``total`` may be 0 when unknown). The CLI turns it into a tqdm bar, napari
    into a ``thread_worker`` that yields progress, Dask into a log line.
``cancel``
    A :class:`CancelToken`; the work checks it between steps and raises
    :class:`medseg.errors.CancelledError`, so a GUI "Cancel" button stops work cleanly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

from medseg.errors import CancelledError

__all__ = ["ProgressCallback", "CancelToken", "report", "check_cancel", "tqdm_progress", "hold_for_tests",
           "STOP_REQUESTED"]

#: Set by a front end when the process is asked to stop (the CLI's SIGTERM handler): test holds
#: end early, and the front end's own checkpoints raise even if the first exception was swallowed.
STOP_REQUESTED = threading.Event()


class ProgressCallback(Protocol):
    def __call__(self, done: int, total: int, message: str) -> None: ...


class CancelToken:
    """A thread-safe flag that long work polls between steps.

    Examples
    --------
    >>> token = CancelToken()
    >>> token.cancel()
    >>> token.cancelled
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self, where: str = "medseg") -> None:
        if self._event.is_set():
            raise CancelledError(where, "cancelled by the user")


def report(progress: ProgressCallback | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if one was given (keeps call sites free of ``if progress:``)."""
    if progress is not None:
        progress(done, total, message)


def check_cancel(cancel: CancelToken | None, where: str = "medseg") -> None:
    """Raise :class:`CancelledError` if ``cancel`` was set."""
    if cancel is not None:
        cancel.raise_if_cancelled(where)


class tqdm_progress:
    """A progress callback that draws one tqdm bar per stage (a stage = a new message prefix).

    Used by the CLI; a context manager so the bar is closed on errors too.
    """

    def __init__(self, *, disable: bool = False) -> None:
        self._bar = None
        self._stage: str | None = None
        self._disable = disable

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm  # imported lazily: tqdm is only needed when a bar is drawn

        stage = message.split(":", 1)[0]
        if self._bar is None or stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total or None, desc=stage, unit="step", leave=False,
                             disable=self._disable, dynamic_ncols=True)
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Callable[[int, int, str], None]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hold_for_tests(point: str) -> None:
    """Pause at a named point when ``MEDSEG_TEST_HOLD`` names it, so a test can kill the process
    exactly there. Points: ``inference`` (after the first windows), ``case-write`` (a case half
    written in its temporary folder), ``publish`` (complete, not yet in place), ``published`` (in
    place), ``batch-record`` (a batch case written, not yet recorded in the manifest). Prints
    ``medseg-hold: POINT`` to stderr first. No effect otherwise (one dict lookup)."""
    if os.environ.get("MEDSEG_TEST_HOLD") != point:
        return
    import sys
    import time

    print(f"medseg-hold: {point}", file=sys.stderr, flush=True)
    # Short naps, not one long sleep: the kernel may hand SIGTERM to another thread (OpenVINO's
    # workers), and then only the main thread's next bytecode runs Python's handler.
    end = time.monotonic() + float(os.environ.get("MEDSEG_TEST_HOLD_SECONDS", "60"))
    while time.monotonic() < end and not STOP_REQUESTED.is_set():
        time.sleep(0.1)
