"""Checks before a batch starts, so a bad start is one clear line (exit 2) and nothing is written.

The input exists; the output folder is neither inside the input nor around it, can be created
and written, and is not in use by another batch (its lock); a ``--scheduler`` address answers.
"""

from __future__ import annotations

import socket
from pathlib import Path

from medseg.batch.manifest import LOCK_NAME, OutputLock
from medseg.errors import InputError, option

__all__ = ["check_memory_limit", "check_paths", "lock_output", "make_output", "probe_scheduler"]


def check_paths(source: Path, output: Path) -> None:
    """Before anything is written: input exists, output is neither inside it nor around it, writable."""
    if not source.exists():
        raise InputError(source, "does not exist", "give a folder of scans, an image file or a CSV/text list")
    src, out = source.resolve(), output.resolve()
    if src.is_dir() and (out == src or src in out.parents):
        raise InputError(output, f"lies inside the input folder {src}",
                         "give an output folder outside the input (the batch would find its results as inputs)")
    if out in src.parents:
        raise InputError(output, f"holds the input {src}", "give an output folder that does not contain the input")
    if output.exists() and not output.is_dir():
        raise InputError(output, "is a file, not a folder", "give a folder for the case folders")
    if (output / LOCK_NAME).is_file():
        OutputLock(output, probe=True)  # refused at once when another batch holds it


def make_output(output: Path) -> None:
    """Create the output folder (once the batch has something to run)."""
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(output, f"cannot be created ({exc.strerror})", "give an output folder you can write to") \
            from exc
    if not output.is_dir():
        raise InputError(output, "is a file, not a folder", "give a folder for the case folders")


def probe_scheduler(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, without importing Dask, when nothing listens at a ``tcp://host:port`` address."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls"):
        return  # other transports (ucx, inproc): the Dask client says what is wrong
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise InputError(option("scheduler", address), "is not a scheduler address",
                         "give one like tcp://10.0.0.5:8786 (printed by `dask scheduler` or your cluster)")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        what = (f"within {timeout_s:.0f} s" if isinstance(exc, TimeoutError) else
                f"({(exc.strerror or str(exc)).lower()})")
        raise InputError(option("scheduler", address), f"no Dask scheduler answered {what}", "start one (`dask "
                         "scheduler`, or a cluster from dask-jobqueue) or check the address and port") from None


def lock_output(output: Path, command: str) -> OutputLock:
    try:
        return OutputLock(output, command=command)
    except OSError as exc:
        raise InputError(output, f"is not writable ({exc.strerror})", "give an output folder you can write to") \
            from exc


def check_memory_limit(memory_limit: str | None) -> None:
    """A per-worker memory limit Dask can read (``8GB``, ``16 GiB``)."""
    if memory_limit is None or str(memory_limit) == "auto":
        return
    from dask.utils import parse_bytes

    try:
        parse_bytes(str(memory_limit))
    except ValueError as exc:
        raise InputError(option("memory_limit", memory_limit), f"is not a size ({exc})", "give one such as 8GB") \
            from None
