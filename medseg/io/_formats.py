"""Recognise a file's format from its name, or from its bytes for extension-less DICOM."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FORMAT_BY_SUFFIX", "guess_format", "looks_like_dicom", "WRITABLE_SUFFIXES"]

FORMAT_BY_SUFFIX = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
}

#: Formats ``save_volume`` writes (single-file formats only, so a write is one atomic rename).
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """True if the file has the DICM preamble, or starts like a preamble-less DICOM data set.

    Old scanners write files without the 128-byte preamble; they start with a group 0x0002 or
    0x0008 tag, which is what DCMTK and GDCM test for too.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] < b"\x20\x00" \
        and head[4:6].isalpha()


def guess_format(path: str | os.PathLike) -> str:
    """Return "nifti", "nrrd", "mha", "dicom", "dicom-folder" or "" (unknown)."""
    p = Path(path)
    if p.is_dir():
        return "dicom-folder"
    name = p.name.lower()
    for suffix, fmt in sorted(FORMAT_BY_SUFFIX.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    return "dicom" if looks_like_dicom(p) else ""
