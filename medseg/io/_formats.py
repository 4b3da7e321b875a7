"""Recognise a file's format from its name, or from its bytes for extension-less DICOM."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "FORMAT_BY_SUFFIX",
    "SEG_SOP_CLASSES",
    "WRITABLE_SUFFIXES",
    "guess_format",
    "is_dicom_seg",
    "looks_like_dicom",
]

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


#: Segmentation Storage and Label Map Segmentation Storage (DICOM SEG, read by medseg.io._dicom_seg).
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


def is_dicom_seg(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM file of a Segmentation SOP class.

    The file meta is read (never compressed, so a deflated SEG is not inflated to ask); a file
    without file meta falls back to the data set's SOPClassUID.
    """
    if not looks_like_dicom(path):
        return False
    import pydicom
    from pydicom.filereader import read_file_meta_info

    try:
        sop = str(read_file_meta_info(path).get("MediaStorageSOPClassUID", "") or "")
        if not sop:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            sop = str(ds.get("SOPClassUID", "") or "")
    except Exception:  # noqa: BLE001 - damaged or unreadable: the image reader reports it
        return False
    return sop in SEG_SOP_CLASSES
