"""A DICOM SEG's frame table and pixels, read directly: what highdicom's ``segread`` spends seconds on.

Why not highdicom here: ``segread`` turns every item of the PerFrameFunctionalGroupsSequence into
pydicom Datasets and indexes them in an SQLite table, and ``get_pixels_by_source_instance`` then
unpacks frames one at a time; on the 512x512x300 benchmark SEG (4 887 BINARY frames) that was
4.6-5.7 s of a read. Importing needs three values per frame (the source image it was derived
from, its position, its segment) and the pixels, so this reader:

* parses the header with pydicom (``read_dataset`` up to the per-frame functional groups: segment
  descriptions, references, shared groups), inflating a deflated data set first;
* walks the PerFrameFunctionalGroupsSequence itself, reading only ReferencedSOPInstanceUID and
  ReferencedFrameNumber (DerivationImageSequence > SourceImageSequence), ImagePositionPatient
  (PlanePositionSequence) and ReferencedSegmentNumber (SegmentIdentificationSequence), in implicit
  or explicit VR, with defined or undefined lengths;
* paints label maps straight from the native pixel data: each BINARY frame is unpacked
  (``np.unpackbits``) and OR-ed, times its segment number, into its slice, two threads at a time
  (even and odd slices), and overlapping segments show as fewer voxels set than bits painted;
  LABELMAP frames are the map (through a look-up table of the segments asked for).

It reads BINARY and LABELMAP SEGs with native (uncompressed) pixel data in Implicit or Explicit
VR Little Endian or Deflated Explicit VR Little Endian, whose frames each name one source image;
:func:`read_frames` returns ``None`` for anything else (FRACTIONAL, encapsulated pixel data, a
frame derived from several images) and :func:`medseg.io._dicom_seg.read_seg` uses highdicom.
``tests/test_dicom_seg_fast.py`` checks both give the same maps on every SEG the tests hold.
"""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import InputError

__all__ = ["SegFrames", "frame_painter", "read_frames"]

_IMPLICIT, _EXPLICIT, _DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PER_FRAME, _PIXEL_DATA = 0x52009230, 0x7FE00010
_DERIVATION_IMAGE, _SOURCE_IMAGE = 0x00089124, 0x00082112
_REFERENCED_SOP_INSTANCE, _REFERENCED_FRAME = 0x00081155, 0x00081160
_PLANE_POSITION, _IMAGE_POSITION = 0x00209113, 0x00200032
_SEGMENT_IDENTIFICATION, _REFERENCED_SEGMENT = 0x0062000A, 0x0062000B


class _Unsupported(Exception):
    """Something this reader does not handle: highdicom reads the SEG instead."""


@dataclass
class SegFrames:
    """What :func:`read_frames` read.

    ``dataset`` is the header (pydicom; everything before the per-frame functional groups); per
    frame: ``sources`` (ReferencedSOPInstanceUID), ``frame_numbers`` (ReferencedFrameNumber or
    None), ``positions`` (ImagePositionPatient in mm, LPS, or None) and ``segments``
    (ReferencedSegmentNumber; 0 for LABELMAP); ``pixels`` is the native PixelData value.
    """

    dataset: object
    sources: list[str]
    frame_numbers: list[int | None]
    positions: list[np.ndarray | None]
    segments: np.ndarray
    pixels: np.ndarray

    @property
    def items(self) -> list[tuple[str, int | None, np.ndarray | None]]:
        """(source UID, source frame number, position) per frame."""
        return list(zip(self.sources, self.frame_numbers, self.positions))


def _header(buf: bytes, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value start, value length) of the element or item header at ``pos``."""
    group, element = struct.unpack_from("<HH", buf, pos)
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        return tag, None, pos + 8, struct.unpack_from("<I", buf, pos + 4)[0]
    vr = buf[pos + 4:pos + 6]
    if vr in _LONG_VRS:
        return tag, vr, pos + 12, struct.unpack_from("<I", buf, pos + 8)[0]
    return tag, vr, pos + 8, struct.unpack_from("<H", buf, pos + 6)[0]


def _items(buf: bytes, start: int, length: int, implicit: bool) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of each item of a sequence value, and where the sequence ends."""
    items, pos = [], start
    end = None if length == _UNDEFINED else start + length
    while end is None or pos < end:
        tag, _, value, item_length = _header(buf, pos, implicit)
        if tag == _SEQUENCE_END:
            return items, value
        if tag != _ITEM:
            raise _Unsupported(f"sequence holds tag {tag:08X} where an item belongs")
        item_end = _dataset_end(buf, value, implicit) if item_length == _UNDEFINED else value + item_length
        items.append((value, item_end))
        pos = item_end + 8 if item_length == _UNDEFINED else item_end
    return items, pos


def _dataset_end(buf: bytes, pos: int, implicit: bool) -> int:
    """Where an item of undefined length ends (its item delimiter)."""
    while True:
        tag, _, value, length = _header(buf, pos, implicit)
        if tag == _ITEM_END:
            return pos
        pos = _items(buf, value, length, implicit)[1] if length == _UNDEFINED else value + length


def _elements(buf: bytes, start: int, end: int, implicit: bool):
    """(tag, value start, value length) of each element of the data set in ``buf[start:end]``."""
    pos = start
    while pos < end:
        tag, _, value, length = _header(buf, pos, implicit)
        yield tag, value, length
        pos = _items(buf, value, length, implicit)[1] if length == _UNDEFINED else value + length


def _only_item(buf: bytes, value: int, length: int, implicit: bool) -> tuple[int, int]:
    items = _items(buf, value, length, implicit)[0]
    if len(items) != 1:
        raise _Unsupported(f"{len(items)} items where one was expected")
    return items[0]


def _text(buf: bytes, value: int, length: int) -> str:
    return buf[value:value + length].rstrip(b"\0 ").decode("ascii")


def _frame(buf: bytes, start: int, end: int, implicit: bool) -> tuple[str, int | None, np.ndarray | None, int]:
    """(source UID, source frame number, position, segment number) of one per-frame item."""
    uid, frame, position, segment = "", None, None, 0
    for tag, value, length in _elements(buf, start, end, implicit):
        if tag == _DERIVATION_IMAGE:
            item = _only_item(buf, value, length, implicit)
            for inner, inner_value, inner_length in _elements(buf, *item, implicit):
                if inner == _SOURCE_IMAGE:
                    source = _only_item(buf, inner_value, inner_length, implicit)
                    for leaf, leaf_value, leaf_length in _elements(buf, *source, implicit):
                        if leaf == _REFERENCED_SOP_INSTANCE:
                            uid = _text(buf, leaf_value, leaf_length)
                        elif leaf == _REFERENCED_FRAME:
                            text = _text(buf, leaf_value, leaf_length)
                            if "\\" in text:
                                raise _Unsupported("a frame derived from several source frames")
                            frame = int(text)
        elif tag == _PLANE_POSITION:
            item = _only_item(buf, value, length, implicit)
            for leaf, leaf_value, leaf_length in _elements(buf, *item, implicit):
                if leaf == _IMAGE_POSITION:
                    position = np.array([float(v) for v in _text(buf, leaf_value, leaf_length).split("\\")])
        elif tag == _SEGMENT_IDENTIFICATION:
            item = _only_item(buf, value, length, implicit)
            for leaf, leaf_value, leaf_length in _elements(buf, *item, implicit):
                if leaf == _REFERENCED_SEGMENT and leaf_length == 2:
                    segment = struct.unpack_from("<H", buf, leaf_value)[0]
    if not uid:
        raise _Unsupported("a frame names no source image")
    return uid, frame, position, segment


def _body(path: Path) -> tuple[bytes, bool] | None:
    """The data set's bytes after the file meta (inflated), and whether they are implicit VR."""
    syntax = ""
    with open(path, "rb") as handle:
        if handle.read(132)[128:] != b"DICM":
            return None
        while True:  # file meta: group 2, explicit VR little endian
            head = handle.read(8)
            if len(head) < 8 or head[:2] != b"\x02\x00":
                handle.seek(-len(head), 1)
                break
            if head[4:6] in _LONG_VRS:
                head += handle.read(4)
            tag, _, _, length = _header(head, 0, False)
            value = handle.read(length)
            if tag == 0x00020010:
                syntax = _text(value, 0, length)
        body = handle.read()
    if syntax == _DEFLATED:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body), False
    if syntax not in (_IMPLICIT, _EXPLICIT):
        return None
    return body, syntax == _IMPLICIT


def read_frames(path: str | Path) -> SegFrames | None:
    """The SEG's header, frame table and native pixels, or ``None`` when highdicom must read it."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    found = _body(Path(path))
    if found is None:
        return None
    body, implicit = found
    fp = DicomBytesIO(body)
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    dataset = read_dataset(fp, implicit, True, stop_when=lambda tag, vr, length: tag >= _PER_FRAME)
    kind = str(dataset.get("SegmentationType", ""))
    if kind not in ("BINARY", "LABELMAP") or "SegmentSequence" not in dataset:
        return None
    sources, frame_numbers, positions, segments, pixels = [], [], [], [], None
    try:
        for tag, value, length in _elements(body, fp.tell(), len(body), implicit):
            if tag == _PER_FRAME:
                for start, end in _items(body, value, length, implicit)[0]:
                    uid, frame, position, segment = _frame(body, start, end, implicit)
                    sources.append(uid)
                    frame_numbers.append(frame)
                    positions.append(position)
                    segments.append(segment)
            elif tag == _PIXEL_DATA:
                if length == _UNDEFINED:
                    return None  # encapsulated (compressed) frames
                pixels = np.frombuffer(body, np.uint8, count=min(length, max(len(body) - value, 0)), offset=value)
                break
    except (_Unsupported, struct.error, ValueError, UnicodeDecodeError):
        return None
    if pixels is None or not sources or len(sources) != int(dataset.get("NumberOfFrames", 1) or 1):
        return None
    if kind == "BINARY" and not all(segments):
        shared = _shared_segment(dataset)
        if shared is None:
            return None
        segments = [s or shared for s in segments]
    bits = int(dataset.get("BitsAllocated", 0))
    frame_bits = int(dataset.Rows) * int(dataset.Columns) * (1 if kind == "BINARY" else bits)
    if (kind == "BINARY" and bits != 1) or (kind == "LABELMAP" and bits not in (8, 16)):
        return None
    needed = -(-frame_bits * len(sources) // 8)
    if pixels.size < needed:
        raise InputError(path, f"cannot be read as a DICOM SEG: its pixel data holds {pixels.size} of the {needed} "
                         f"bytes its {len(sources)} frames need (the file is cut short or damaged)",
                         "copy or export the SEG again")
    return SegFrames(dataset, sources, frame_numbers, positions, np.asarray(segments, np.int64), pixels)


def _shared_segment(dataset) -> int | None:
    shared = (dataset.get("SharedFunctionalGroupsSequence") or [None])[0]
    if shared is None or "SegmentIdentificationSequence" not in shared:
        return None
    return int(shared.SegmentIdentificationSequence[0].ReferencedSegmentNumber)


def frame_painter(frames: SegFrames, k_of_frame: np.ndarray, n_k: int):
    """``fetch(numbers, combine)`` as medseg's importer asks highdicom for it, from ``frames``.

    ``k_of_frame`` gives the slice of each frame (-1: not on the grid, left out). ``combine``:
    a (k, row, column) map of segment numbers, ``RuntimeError`` when two of them share a voxel;
    otherwise one segment as a (k, row, column, 1) 0/1 map. With it come the voxels of each
    segment (BINARY: counted from the frames' bits) or None.
    """
    ds = frames.dataset
    rows, columns = int(ds.Rows), int(ds.Columns)
    labelmap = str(ds.SegmentationType) == "LABELMAP"
    pixels_per_frame = rows * columns
    n_frames = len(frames.sources)

    def fetch(numbers: list[int], combine: bool) -> tuple[np.ndarray, dict[int, int] | None]:
        top = max(numbers) if combine else 1
        dtype = np.uint8 if top <= 255 else np.uint16
        out = np.zeros((n_k, pixels_per_frame), dtype)
        found = None
        if labelmap:
            stored = np.frombuffer(frames.pixels, "<u2" if int(ds.BitsAllocated) == 16 else np.uint8,
                                   count=n_frames * pixels_per_frame).reshape(n_frames, pixels_per_frame)
            lut = np.zeros(1 << (8 * stored.itemsize), dtype)
            lut[numbers] = numbers if combine else 1
            for f in np.flatnonzero(k_of_frame >= 0).tolist():
                np.take(lut, stored[f], out=out[k_of_frame[f]])
        else:
            chosen = np.flatnonzero(np.isin(frames.segments, numbers) & (k_of_frame >= 0))
            values = frames.segments if combine else np.ones(n_frames, np.int64)
            painted = _paint_binary(out, frames.pixels, chosen, k_of_frame, values, pixels_per_frame)
            if combine and int(painted.sum()) != np.count_nonzero(out):
                raise RuntimeError("segments overlap")  # as highdicom raises when combining
            per_segment = np.bincount(frames.segments[chosen], weights=painted, minlength=max(numbers) + 1)
            found = {n: int(per_segment[n]) for n in numbers}
        out = out.reshape(n_k, rows, columns)
        return (out, found) if combine else (out[..., None], found)

    return fetch


def _paint_binary(out: np.ndarray, pixels: np.ndarray, chosen: np.ndarray, k_of_frame: np.ndarray,
                  values: np.ndarray, pixels_per_frame: int) -> np.ndarray:
    """Paint BINARY frames ``chosen`` into ``out`` (k, pixel) with ``values``; the voxels set in each."""
    if pixels_per_frame % 8:  # frames share bytes: unpack the whole bit stream (small frames)
        n_frames = (pixels.size * 8) // pixels_per_frame
        bits = np.unpackbits(pixels, count=n_frames * pixels_per_frame, bitorder="little")
        bits = bits.reshape(n_frames, pixels_per_frame).astype(bool)
        for f in chosen.tolist():
            out[k_of_frame[f]][bits[f]] = values[f]
        return bits[chosen].sum(axis=1)
    per_frame = pixels_per_frame // 8
    stored = pixels[:(pixels.size // per_frame) * per_frame].reshape(-1, per_frame)
    painted = np.zeros(chosen.size, np.int64)
    value_of = values.astype(out.dtype)

    def paint(indices: list[int]) -> None:
        # np.unpackbits (SIMD) gives a frame's voxels as 0/1; times the segment's value, OR-ed into
        # its slice: several frames may share a slice, and voxels of two segments would show as a
        # count of painted voxels above the map's nonzero voxels (the caller checks).
        scaled = np.empty(pixels_per_frame, out.dtype)
        for index in indices:
            f = int(chosen[index])
            bits = np.unpackbits(stored[f], bitorder="little")
            painted[index] = np.count_nonzero(bits)
            row = out[k_of_frame[f]]
            if painted[index] * 256 > pixels_per_frame:  # the whole slice
                np.multiply(bits, value_of[f], out=scaled)
                row |= scaled
            else:  # a few voxels (a small lesion): only those, so untouched memory stays unwritten
                where = np.flatnonzero(bits.view(bool))  # numpy's fast path is for booleans
                row[where] |= value_of[f]

    # Two threads (numpy runs these without the GIL), one for even slices and one for odd: no
    # slice is painted by both.
    even = np.flatnonzero(k_of_frame[chosen] % 2 == 0).tolist()
    odd = np.flatnonzero(k_of_frame[chosen] % 2 == 1).tolist()
    with ThreadPoolExecutor(1, thread_name_prefix="medseg-seg-paint") as pool:
        other = pool.submit(paint, odd)
        paint(even)
        other.result()
    return painted
