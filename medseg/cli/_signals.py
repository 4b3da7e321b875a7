"""SIGTERM as an exception, so that ``finally`` blocks and temporary-file clean-up run.

In a module of its own (not ``medseg.cli.main``): run as ``python -m medseg.cli.main``, that
module is ``__main__``, and a class defined there would not be the one other modules catch.
"""

from __future__ import annotations

from medseg.progress import STOP_REQUESTED as REQUESTED

__all__ = ["Terminated", "on_sigterm", "raise_if_requested", "REQUESTED"]

# REQUESTED is set by the handler. An extension module that swallows the exception (SIGTERM
# during ``import openvino``, whose pybind11 initialisation drops it: seen at a batch's start)
# cannot make medseg forget that it was asked to stop; long commands call
# :func:`raise_if_requested` at their checkpoints.


class Terminated(BaseException):
    """SIGTERM (``timeout``, SLURM, ``docker stop``), turned into an exception so that every
    ``finally`` and temporary-file clean-up runs, as for Ctrl-C."""


def on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised in a subprocess test
    REQUESTED.set()
    raise Terminated()


def raise_if_requested() -> None:
    """Raise :class:`Terminated` if SIGTERM came, even if its first exception was swallowed."""
    if REQUESTED.is_set():
        raise Terminated()
