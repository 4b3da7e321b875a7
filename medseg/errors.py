"""Errors that reach a user as one clear line.

Every problem a user can cause (a bad file, a wrong option, a model that does not fit) is
raised as :class:`MedsegError`, whose message names *where* (the file or option), *what* is
wrong and *what to do*. The CLI prints ``str(error)`` on one line and exits non-zero; a
traceback is shown only with ``--debug``. Programming errors are left as ordinary exceptions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

__all__ = ["MedsegError", "InputError", "ModelError", "CancelledError", "option", "api_name"]

#: How an option reference is marked inside a message until a front end renders it.
_OPTION = re.compile(r"\u27e6([A-Za-z_][A-Za-z0-9_]*)(?:=([^\u27e7]*))?\u27e7")


def option(name: str, value: object = None) -> str:
    """Refer to an API option (``roi_size``) inside an error message, optionally with a value.

    Policy lives in the API and wording in the front end: the core names its keyword argument,
    and each front end renders it its own way when it prints the error: the CLI as a flag
    (``--roi-size 64 64 64``), napari as a widget label ("Window size"). ``str(error)`` shows
    the API form (``roi_size=(64, 64, 64)``), which is what a Python user typed.

    Examples
    --------
    >>> err = MedsegError(option("roi_size", 0), "is not a window size", f"use {option('roi_size')} of 32 or more")
    >>> str(err)
    'roi_size=0: is not a window size. Use roi_size of 32 or more'
    >>> err.render(lambda name, value: "--" + name.replace("_", "-") + ("" if value is None else f" {value}"))
    '--roi-size 0: is not a window size. Use --roi-size of 32 or more'
    """
    if value is None:
        return f"\u27e6{name}\u27e7"
    text = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    return f"\u27e6{name}={text}\u27e7"


def api_name(name: str, value: str | None) -> str:
    """The Python rendering of an option reference: ``roi_size`` or ``roi_size=64 64 64``."""
    return name if value is None else f"{name}={value}"


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
        super().__init__(self.render())

    def render(self, style: Callable[[str, str | None], str] | None = None) -> str:
        """The one-line message with option references rendered by ``style(name, value)``
        (default: the API's own names, as ``str(error)`` shows them)."""
        style = style or api_name
        message = f"{self.where}: {self.problem}"
        if self.hint:
            message += f". {self.hint}"
        return _OPTION.sub(lambda m: style(m.group(1), m.group(2)), message)

    @property
    def options(self) -> tuple[str, ...]:
        """API names of the options this error refers to (e.g. ``("roi_size",)``)."""
        return tuple(dict.fromkeys(m.group(1) for m in _OPTION.finditer(f"{self.where} {self.problem} {self.hint}")))


class InputError(MedsegError):
    """An input file or folder cannot be read as asked."""


class ModelError(MedsegError):
    """A model folder, weights file or MONAI bundle cannot be used."""


class CancelledError(MedsegError):
    """Long work was cancelled through a :class:`medseg.progress.CancelToken`."""

    exit_code = 130

    def __init__(self, where: str = "medseg", problem: str = "cancelled", hint: str = "") -> None:
        super().__init__(where, problem, hint)
