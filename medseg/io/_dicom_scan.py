"""Find DICOM files under a path and read their headers (never their pixels) into frames.

Every file under the path is looked at once: files that are not DICOM (README.txt, NIfTI, JSON)
are skipped quietly and counted; DICOM files that cannot be parsed, cannot be opened, or whose
pixel data is cut short are skipped *with a warning that names them*, so a reader can report
exactly what was left out.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from medseg.io._dicom_frames import FileMeta, Frame, frames_from_header
from medseg.io._dicom_values import get as fast_get
from medseg.progress import ProgressCallback, report

__all__ = ["HeaderScan", "RejectedFile", "scan_headers", "find_files"]

#: Transfer syntaxes whose pixel data is stored as plain words (so its length can be checked).
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", ""}
_IMPLICIT_VR = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index of the files, not an image


@dataclass(frozen=True)
class RejectedFile:
    """A DICOM file that holds no readable image, with the reason (kept to list it as a series)."""

    meta: FileMeta
    reason: str


@dataclass
class HeaderScan:
    """Everything the headers under one path said."""

    root: Path
    frames: list[Frame] = field(default_factory=list)
    rejected: list[RejectedFile] = field(default_factory=list)
    #: File-level problems not attributable to one series (unparsable header, permission).
    file_warnings: list[str] = field(default_factory=list)
    #: Series UID -> problems of files that belong to it (truncated pixel data).
    series_warnings: dict[str, list[str]] = field(default_factory=dict)
    non_dicom: list[str] = field(default_factory=list)
    n_files: int = 0


def find_files(root: Path, warnings_out: list[str]) -> list[Path]:
    """All regular files under ``root`` (or ``root`` itself), hidden names skipped, sorted."""
    if root.is_file():
        return [root]

    def _on_error(exc: OSError) -> None:
        warnings_out.append(f"{exc.filename}: folder cannot be listed ({exc.strerror}); its files were skipped")

    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_on_error, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                found.append(Path(dirpath) / name)
    return found


def _is_dicom_start(head: bytes) -> tuple[bool, bool]:
    """(looks like DICOM, has the 128-byte preamble + "DICM")."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True, True
    # Files without preamble start with a group 0002 or 0008 tag and an explicit VR or length.
    loose = len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] < b"\x20\x00"
    return loose, False


def _expected_pixel_bytes(ds) -> int:
    rows, cols = fast_get(ds, "Rows", 0), fast_get(ds, "Columns", 0)
    frames = fast_get(ds, "NumberOfFrames", 1)
    samples, bits = fast_get(ds, "SamplesPerPixel", 1), fast_get(ds, "BitsAllocated", 16)
    total_bits = int(rows) * int(cols) * int(frames or 1) * int(samples) * int(bits)
    return (total_bits + 7) // 8


def _cut_header(ds) -> str:
    """Why a header that parsed without error is still cut short, or "".

    pydicom stops quietly at the end of a file: a file cut inside an element leaves that last
    element shorter than its declared length, and a file cut before the image attributes leaves
    an image SOP class without Rows.
    """
    from pydicom.dataelem import RawDataElement
    from pydicom.uid import UID

    tags = list(ds.keys())
    if tags:
        last = ds.get_item(tags[-1])
        if isinstance(last, RawDataElement) and last.length != 0xFFFFFFFF and last.value is not None \
                and len(last.value) < last.length:
            return f"element {last.tag} has {len(last.value)} of {last.length} bytes"
    meta = getattr(ds, "file_meta", None)
    sop_class = str(fast_get(ds, "SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    if sop_class and not fast_get(ds, "Rows") and UID(sop_class).name.endswith("Image Storage"):
        return f"a {UID(sop_class).name} object that ends before its image attributes"
    return ""


def _pixel_value_offset(head: bytes, tag_at: int, syntax: str) -> int | None:
    """File offset of the Pixel Data value, from the element header found at ``tag_at``."""
    big = syntax == _BIG_ENDIAN
    if len(head) < 8 or head[:4] != (b"\x7f\xe0\x00\x10" if big else b"\xe0\x7f\x10\x00"):
        return None
    if syntax == _IMPLICIT_VR:
        length, start = int.from_bytes(head[4:8], "little"), tag_at + 8
    elif len(head) >= 12 and head[4:6] in (b"OW", b"OB"):
        length, start = int.from_bytes(head[8:12], "big" if big else "little"), tag_at + 12
    else:
        return None
    return None if length == 0xFFFFFFFF else start


def _read_header(path: Path):
    """Parse one header; returns ``(dataset | None, problem-or-pixel-offset, is_dicom)``.

    The middle item is a problem text when the file is damaged, else the file offset of its
    uncompressed pixel data (or None).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        fh = open(path, "rb")
    except PermissionError:
        return None, f"{path}: cannot be read (permission denied); skipped", True
    except OSError as exc:
        return None, f"{path}: cannot be opened ({exc.strerror}); skipped", True
    with fh:
        head = fh.read(132)
        is_dicom, has_preamble = _is_dicom_start(head)
        if not is_dicom:
            return None, None, False
        fh.seek(0)
        try:
            with warnings.catch_warnings():
                # pydicom warns about every odd value in real files; problems that matter are
                # found and reported by the checks below instead.
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(fh, stop_before_pixels=True, force=not has_preamble)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError,
                IndexError, OverflowError, NotImplementedError) as exc:
            return None, f"{path}: corrupt DICOM header ({type(exc).__name__}: {exc}); skipped", True
        pixel_tag_at = fh.tell()
        size = os.fstat(fh.fileno()).st_size
        fh.seek(pixel_tag_at)
        element_header = fh.read(12)
    cut = _cut_header(ds)
    if cut:
        return None, f"{path}: truncated or damaged DICOM header ({cut}); skipped", True
    syntax = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "") or "")
    if not fast_get(ds, "Rows") or syntax not in _NATIVE_SYNTAXES:
        return ds, None, True
    offset = _pixel_value_offset(element_header, pixel_tag_at, syntax)
    try:
        expected = _expected_pixel_bytes(ds)
    except (TypeError, ValueError):
        expected = 0
    available = size - (offset if offset is not None else pixel_tag_at + 12)
    if expected and available < expected:
        return ds, (f"{path}: truncated file (pixel data has {max(available, 0)} of {expected} bytes); "
                    "skipped"), True
    return ds, offset, True


def scan_headers(root: Path, paths: list[Path] | None = None, *,
                 progress: ProgressCallback | None = None) -> HeaderScan:
    """Read the header of every DICOM file under ``root`` (or of ``paths``) into frames."""
    scan = HeaderScan(root=root)
    if paths is None:
        paths = find_files(root, scan.file_warnings)
    scan.n_files = len(paths)
    for number, path in enumerate(paths):
        report(progress, number, len(paths), "scanning DICOM headers")
        ds, found, is_dicom = _read_header(path)
        if not is_dicom:
            scan.non_dicom.append(str(path))
            continue
        if ds is None:
            scan.file_warnings.append(found)
            continue
        problem = found if isinstance(found, str) else None
        offset = found if isinstance(found, int) else None
        meta, frames = frames_from_header(ds, str(path), pixel_offset=offset)
        if problem is not None:
            # Header fine, pixels cut short: the file belongs to a known series; say so there,
            # and keep its frames (marked damaged) so their slice positions count as missing.
            scan.series_warnings.setdefault(meta.series_uid, []).append(problem)
            if isinstance(frames, list):
                for frame in frames:
                    frame.damaged = problem
                scan.frames.extend(frames)
            continue
        if isinstance(frames, str):
            if meta.sop_class_uid != _MEDIA_DIRECTORY:
                scan.rejected.append(RejectedFile(meta, frames))
            continue
        scan.frames.extend(frames)
    report(progress, len(paths), len(paths), "scanning DICOM headers")
    return scan
