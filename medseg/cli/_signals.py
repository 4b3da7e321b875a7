"""SIGTERM as an exception, so that ``finally`` blocks and temporary-file clean-up run.

In a module of its own (not ``medseg.cli.main``): run as ``python -m medseg.cli.main``, that
module is ``__main__``, and a class defined there would not be the one other modules catch.
"""

from __future__ import annotations

__all__ = ["Terminated", "on_sigterm"]


class Terminated(BaseException):
    """SIGTERM (``timeout``, SLURM, ``docker stop``), turned into an exception so that every
    ``finally`` and temporary-file clean-up runs, as for Ctrl-C."""


def on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised in a subprocess test
    raise Terminated()
