"""Header values as plain Python numbers and strings, quickly and without surprises.

Reading a header touches ~50 attributes per file; pydicom's full conversion of each (validation,
DSfloat objects) costs more than parsing the file. Numbers and codes are plain ASCII in DICOM,
so :func:`get` decodes them from the raw element bytes and leaves names, private and unusual
values to pydicom. Every accessor returns a default instead of raising on a malformed value:
a bad value is reported by whoever needs it (a missing position makes a slice unreadable),
never by a crash in the scan.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["get", "text", "number", "integer", "vector", "codes"]


def text(value) -> str:
    """A value as one string (multi-valued joined by backslash), stripped; "" for None."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def number(value, default: float | None = None) -> float | None:
    """The (first) value as a finite float, else ``default``."""
    try:
        if value is None or value == "":
            return default
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        result = float(value)
        return result if np.isfinite(result) else default
    except (TypeError, ValueError, IndexError):
        return default


def integer(value, default: int | None = None) -> int | None:
    """The (first) value rounded to an int, else ``default``."""
    value = number(value)
    return default if value is None else int(round(value))


def vector(value, n: int) -> np.ndarray | None:
    """Exactly ``n`` finite floats as an array, else None."""
    try:
        if value is None or len(value) != n:
            return None
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if np.all(np.isfinite(out)) else None


_FAIL = object()
_BINARY = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}
_TEXT = {"UI", "CS", "SH", "DT", "TM", "DA", "LO", "AS"}
_KEYWORDS: dict[str, tuple[int | None, str | None]] = {}


def _parse_raw(elem, vr: str):
    """Value of a raw (unconverted) element for the few VRs medseg needs, or ``_FAIL``.

    Reading a header touches ~50 attributes per file; pydicom's full conversion (validation,
    DSfloat objects) of each costs more than parsing the file. Numbers and codes are plain ASCII
    in DICOM, so they are decoded here directly; anything unexpected goes the pydicom way.
    """
    raw = elem.value
    if not isinstance(raw, bytes) or (elem.VR is not None and elem.VR != vr):
        return _FAIL
    try:
        if vr in _BINARY:
            code = _BINARY[vr]
            size = struct.calcsize(code)
            count = len(raw) // size
            order = "<" if elem.is_little_endian else ">"
            values = struct.unpack(order + code * count, raw[: count * size])
            return None if not values else (values[0] if count == 1 else list(values))
        text = raw.decode("ascii").strip(" \x00")
        if not text:
            return None
        if vr in ("DS", "IS"):
            numbers = [float(part) for part in text.split("\\")]
            if vr == "IS":
                numbers = [int(n) for n in numbers]
            return numbers[0] if len(numbers) == 1 else numbers
        if vr in _TEXT:
            parts = [part.strip() for part in text.split("\\")]
            return parts[0] if len(parts) == 1 else parts
    except (UnicodeDecodeError, ValueError, OverflowError):
        return _FAIL
    return _FAIL


def get(ds, keyword: str, default=None):
    """``ds.get(keyword)``, fast for plain numbers/codes, ``default`` for absent or unreadable values."""
    if ds is None:
        return default
    entry = _KEYWORDS.get(keyword)
    if entry is None:
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        tag = tag_for_keyword(keyword)
        entry = _KEYWORDS[keyword] = (tag, dictionary_VR(tag) if tag is not None else None)
    tag, vr = entry
    if tag is None:
        return default
    elem = ds.get_item(tag)
    if elem is None:
        return default
    from pydicom.dataelem import RawDataElement

    if isinstance(elem, RawDataElement) and vr in _BINARY.keys() | _TEXT | {"DS", "IS"}:
        value = _parse_raw(elem, vr)
        if value is not _FAIL:
            return default if value is None else value
    try:
        value = ds[tag].value
    except (ValueError, TypeError, OverflowError, KeyError):
        return default
    return default if value is None or value == "" else value


def codes(value) -> tuple[str, ...]:
    """A multi-valued code string (ImageType) as upper-case values; one value is a 1-tuple."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value.upper(),)
    return tuple(str(v).upper() for v in value)
