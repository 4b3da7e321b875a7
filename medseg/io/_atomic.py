"""Atomic output files and the never-overwrite-an-input rule.

A result appears under its final name only when it is complete: it is written to a temporary
file in the *same* folder (so the final ``os.replace`` is a rename on one file system, atomic
on POSIX) and renamed at the end. A crash or Ctrl-C leaves the old file, or nothing, never a
half-written one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from medseg.errors import InputError

__all__ = ["atomic_output", "refuse_overwriting_inputs", "split_suffix"]


def split_suffix(path: str | os.PathLike) -> tuple[str, str]:
    """Split a file name into stem and full suffix, keeping double suffixes like ``.nii.gz``."""
    name = Path(path).name
    lower = name.lower()
    for double in (".nii.gz", ".tar.gz", ".seg.nrrd"):
        if lower.endswith(double):
            return name[: -len(double)], name[-len(double):]
    stem, dot, ext = name.rpartition(".")
    return (stem, "." + ext) if dot and stem else (name, "")


def refuse_overwriting_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Raise :class:`InputError` if ``output`` is (or is inside the folder of) an input.

    Compares resolved paths, so ``./a.nii`` and ``/abs/a.nii`` or a symlink are caught too.
    """
    out = Path(output).resolve()
    for item in inputs:
        if not item:
            continue
        src = Path(item).resolve()
        if out == src or (out.exists() and src.exists() and os.path.samefile(out, src)):
            raise InputError(output, "is the input file; writing there would destroy the input",
                             "choose another output path")
        if src.is_dir() and src in out.parents and out.suffix:
            # Writing a file into a DICOM input folder would add a non-DICOM file to the series.
            raise InputError(output, f"lies inside the input folder {src}",
                             "write results outside the input folder")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps the full suffix (``.nii.gz``, ``.nrrd``) because writers choose
    the format and compression from it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "labels.json"
    >>> with atomic_output(target) as tmp:
    ...     _ = tmp.write_text("{}")
    >>> target.read_text()
    '{}'
    """
    final = Path(path)
    folder = final.parent if str(final.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = split_suffix(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.medseg-tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; results should get the permissions any new file gets here.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8) and return the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
