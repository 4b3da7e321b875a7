"""Atomic output files and folders, and the never-overwrite-an-input rule.

A result appears under its final name only when it is complete: it is written to a temporary
file in the *same* folder (so the final ``os.replace`` is a rename on one file system, atomic
on POSIX) and renamed at the end. A crash or Ctrl-C leaves the old file, or nothing, never a
half-written one.

A result *folder* (a case, a lesion table with its plots) is one unit: it is built in a hidden
sibling folder and swapped with the old one in one step (Linux ``renameat2(RENAME_EXCHANGE)``;
elsewhere two renames, with recovery of the old folder if the process dies between them). A
reader sees the old folder or the new one, never a mix, and nothing of an older run survives
beside a newer one.

Temporary names carry the writer's process id (``.NAME.medseg-tmp-<pid>-<random>``), so what a
killed process (SIGKILL, power loss) left behind is recognised and removed by the next write
into the same folder, while a live writer's files are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from medseg.errors import InputError
from medseg.progress import hold_for_tests

__all__ = ["atomic_output", "atomic_folder", "refuse_overwriting_inputs", "split_suffix", "write_text_atomic",
           "remove_stale_temporaries", "TEMP_MARK"]

#: Marks every temporary file or folder medseg creates: ``.NAME.medseg-tmp-<pid>-<random>``.
TEMP_MARK = ".medseg-tmp-"
_OLD_MARK = ".medseg-old-"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.medseg-(?:tmp|old)-(?P<pid>\d+)-[^/]*$")


def split_suffix(path: str | os.PathLike) -> tuple[str, str]:
    """Split a file name into stem and full suffix, keeping double suffixes like ``.nii.gz``."""
    name = Path(path).name
    lower = name.lower()
    for double in (".nii.gz", ".tar.gz", ".seg.nrrd"):
        if lower.endswith(double):
            return name[: -len(double)], name[-len(double):]
    stem, dot, ext = name.rpartition(".")
    return (stem, "." + ext) if dot and stem else (name, "")


def resolved(path: str | os.PathLike) -> Path:
    """``Path(path).resolve()``, with a symbolic-link loop reported as one clear error."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError("Symlink loop ...")
        raise InputError(path, "goes through a symbolic link that points back to itself",
                         "fix or remove the looping link") from exc


def refuse_overwriting_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Raise :class:`InputError` if ``output`` is (or is inside the folder of) an input.

    Compares resolved paths, so ``./a.nii`` and ``/abs/a.nii`` or a symlink are caught too.
    """
    out = resolved(output)
    for item in inputs:
        if not item:
            continue
        src = resolved(item)
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
    _make_folder(folder, final)
    stem, suffix = split_suffix(final)
    remove_stale_temporaries(folder)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}{TEMP_MARK}{os.getpid()}-", suffix=suffix, dir=folder)
    except OSError as exc:  # name the file the user asked for, not the temporary
        raise OSError(exc.errno, exc.strerror, str(final)) from exc
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


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporaries in ``folder`` left by medseg processes that no longer run.

    Also puts back a result folder whose swap was cut between its two renames (non-Linux
    fall-back): the old folder is renamed back when the final name is missing.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if not match or _alive(int(match.group("pid"))):
            continue
        path = Path(entry.path)
        final = path.with_name(match.group("name"))
        if _OLD_MARK in entry.name and not final.exists():
            with contextlib.suppress(OSError):
                os.rename(path, final)  # the old result comes back: nothing is lost
                continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP if hasattr(errno, "ENOTSUP") else errno.EINVAL):
        return False  # old kernel or a file system without exchange
    raise OSError(code, os.strerror(code), str(b))


def _fsync_tree(folder: Path) -> None:
    """Flush a built folder to disk before it becomes visible (a power cut must not publish
    names whose data never reached the disk)."""
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_PUBLISHED: list[Path] = []


def published() -> list[Path]:
    """Result folders this process has put in place (complete), for truthful exit messages."""
    return list(_PUBLISHED)


def publish_folder(built: Path, final: Path) -> None:
    """Put the finished folder ``built`` under ``final`` in one step; the old one is removed."""
    hold_for_tests("publish")
    _fsync_tree(built)
    if not final.exists() and not final.is_symlink():
        os.rename(built, final)
        _PUBLISHED.append(final)
        return
    if _exchange(built, final):
        _PUBLISHED.append(final)
        shutil.rmtree(built, ignore_errors=True)  # ``built`` now holds the old folder
        return
    old = final.with_name(f".{final.name}{_OLD_MARK}{os.getpid()}-{os.urandom(4).hex()}")
    os.rename(final, old)
    try:
        os.rename(built, final)
    except BaseException:
        os.rename(old, final)
        raise
    _PUBLISHED.append(final)
    shutil.rmtree(old, ignore_errors=True)



@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, replaceable: Callable[[Path], str] | None = None) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``path`` to build a result folder in; publish it at the end.

    Parameters
    ----------
    path : path-like
        The result folder. It may exist: it is then replaced as a whole when the block succeeds.
    replaceable : callable, optional
        ``replaceable(existing_folder)`` returns "" when an existing folder may be replaced, else
        why not (it holds files medseg did not write, or a person's corrections); the reason is
        raised as :class:`InputError` before any work. Default: only empty folders are replaced.

    A failure or interruption inside the block removes the temporary folder and leaves ``path``
    as it was.
    """
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise InputError(final, "is a file, not a folder", "give a folder for the results")
    parent = final.parent if str(final.parent) else Path(".")
    resolved(final)
    _make_folder(parent, final)
    remove_stale_temporaries(parent)
    if final.is_dir():
        why = (replaceable or _only_if_empty)(final)
        if why:
            raise InputError(final, why, "choose a new or empty output folder")
    try:
        built = Path(tempfile.mkdtemp(prefix=f".{final.name}{TEMP_MARK}{os.getpid()}-", dir=parent))
    except OSError as exc:  # name the folder the user asked for, not the temporary
        raise OSError(exc.errno, f"cannot be created ({exc.strerror})", str(final)) from exc
    try:
        yield built
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(built, 0o777 & ~umask)
        publish_folder(built, final)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    hold_for_tests("published")


def _make_folder(folder: Path, final: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise InputError(final, f"cannot be created: {folder} is a file", "choose another output path") from exc
    except OSError as exc:
        raise OSError(exc.errno, f"cannot be created ({exc.strerror})", str(final)) from exc


def _only_if_empty(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return "" if not names else f"holds other files ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
