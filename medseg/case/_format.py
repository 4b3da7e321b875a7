"""The case format: file names, schema versions, checksums (shared by the reader and writer)."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone

from medseg.volume import Volume

__all__ = ["CASE_FILE", "CASE_FORMAT", "CASE_FORMAT_VERSION", "PROVENANCE_SCHEMA", "PROVENANCE_SCHEMA_VERSION",
           "FILES", "KINDS", "now_utc", "sha256_of", "input_sha256"]

CASE_FILE = "case.json"
CASE_FORMAT = "medseg-case"
CASE_FORMAT_VERSION = 1
PROVENANCE_SCHEMA = "medseg.provenance"
PROVENANCE_SCHEMA_VERSION = 1

#: Fixed names of the parts of a case.
FILES = {"labels": "labels.nii.gz", "names": "labels.json", "provenance": "provenance.json",
         "uncertainty": "uncertainty.nii.gz", "image": "image.nii.gz", "lesions": "lesions/lesions.nii.gz",
         "lesion_csv": "lesions/lesions.csv", "lesion_json": "lesions/lesions.json",
         "lesion_sizes": "lesions/lesion_sizes.png", "lesion_montage": "lesions/lesion_montage.png"}
KINDS = ("proposal", "correction", "import")


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_of(path: str | os.PathLike, *, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def input_sha256(volume: Volume) -> str:
    """sha256 of the input's bytes: the file, or a DICOM series' files in slice order.

    ``""`` for an in-memory volume. Two runs on the same input give the same hash, whatever the
    folder is called; batch resumes on it.
    """
    source = volume.source
    if not source.path or not os.path.exists(source.path):
        return ""
    if os.path.isfile(source.path):
        return sha256_of(source.path)
    files = source.extra.get("files") or []
    digest = hashlib.sha256()
    for name in dict.fromkeys(files):  # a multi-frame file appears once per frame
        with open(os.path.join(source.path, name), "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest() if files else ""
