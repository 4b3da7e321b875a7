"""Content hashes of a batch's inputs, reused while the files are unchanged.

A case's input hash is the sha256 of its files' bytes in order: for one file its sha256, for a
DICOM series exactly :func:`medseg.case.input_sha256` of the volume read from it (files in slice
order), so the manifest, ``exports/batch.json`` and the case's provenance name the same number.
Reading a cohort's scans again on every resume would cost minutes, so a hash is kept per
*signature* of the files (path, size, mtime, ctime, inode: ctime changes on any write or chmod)
and reused while the signature is unchanged.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence

from medseg.batch.discover import CaseInput
from medseg.progress import ProgressCallback, report

__all__ = ["files_signature", "hash_inputs", "input_files_sha256"]


def files_signature(files: Iterable[str]) -> str | None:
    """sha256 of the files' identities (path, size, mtime, ctime, inode); ``None`` if one is gone.

    Equal signatures mean unchanged files (ctime changes on any write or chmod), so their
    content hash can be reused without reading them again.
    """
    digest = hashlib.sha256()
    for name in files:
        try:
            st = os.stat(name)
        except OSError:
            return None
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
    return digest.hexdigest()


def input_files_sha256(files: Sequence[str], *, chunk: int = 1 << 22) -> str:
    """sha256 of the files' bytes in order: for one file its sha256, for a DICOM series exactly
    :func:`medseg.case.input_sha256` of the volume read from it."""
    digest = hashlib.sha256()
    for name in dict.fromkeys(files):
        with open(name, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def hash_inputs(cases: Sequence[CaseInput], *, cached: Callable[[str], str | None],
                progress: ProgressCallback | None = None, threads: int = 4) -> dict[str, tuple[str, str]]:
    """case_id -> (signature, sha256) for every case with files; ``cached(signature)`` gives a
    hash already known. Hashing runs in threads (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, tuple[str, str]] = {}
    todo = []
    for case in cases:
        if not case.files or case.problem:
            continue
        signature = files_signature(case.files)
        if signature is None:
            continue
        known = cached(signature)
        if known:
            out[case.case_id] = (signature, known)
        else:
            todo.append((case, signature))
    if todo:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            futures = [(case, signature, pool.submit(input_files_sha256, case.files)) for case, signature in todo]
            for done, (case, signature, future) in enumerate(futures, 1):
                report(progress, done, len(futures), f"hash: {case.case_id}")
                try:
                    out[case.case_id] = (signature, future.result())
                except OSError:
                    continue  # unreadable now: the run reports it as the case's error
    return out
