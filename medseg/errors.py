"""Errors that reach a user as one clear line.

Every problem a user can cause (a bad file, a wrong option, a model that does not fit) is
raised as :class:`MedsegError`, whose message names *where* (the file or option), *what* is
wrong and *what to do*. The CLI prints ``str(error)`` on one line and exits non-zero; a
traceback is shown only with ``--debug``. Programming errors are left as ordinary exceptions.
"""

from __future__ import annotations

import os

__all__ = ["MedsegError", "InputError", "ModelError", "CancelledError"]


class MedsegError(Exception):
    """A problem the user can fix, phrased as ``where: what is wrong. what to do``.

    Parameters
    ----------
    where : str or os.PathLike
        The file, folder, option or object the problem is in.
    problem : str
        What is wrong, in domain words ("missing slice at z = -42.0 mm").
    hint : str, optional
        What the user can do about it ("pass --allow-gaps to read it anyway").
    """

    exit_code = 2

    def __init__(self, where: str | os.PathLike, problem: str, hint: str = "") -> None:
        # One line, always: library messages (nibabel, pydicom) may carry newlines.
        self.where = " ".join(os.fspath(where).split())
        self.problem = " ".join(problem.split()).rstrip(".")
        hint = " ".join(hint.split())
        self.hint = hint[:1].upper() + hint[1:]
        message = f"{self.where}: {self.problem}"
        if self.hint:
            message += f". {self.hint}"
        super().__init__(message)


class InputError(MedsegError):
    """An input file or folder cannot be read as asked."""


class ModelError(MedsegError):
    """A model folder, weights file or MONAI bundle cannot be used."""


class CancelledError(MedsegError):
    """Long work was cancelled through a :class:`medseg.progress.CancelToken`."""

    exit_code = 130

    def __init__(self, where: str = "medseg", problem: str = "cancelled", hint: str = "") -> None:
        super().__init__(where, problem, hint)
