"""The bulk of a DICOM SEG, encoded directly: which frames it holds, their pixels and per-frame groups.

Why not highdicom for this part: its Segmentation constructor tests every segment on every
slice (64 x 300 comparisons of 512x512 planes on the benchmark case) and builds one pydicom
Dataset per frame, which pydicom then encodes item by item (~40 000 nested items for 4 887
frames); together about 5 of the 7 seconds of a BINARY export (docs/dicom_seg.md). highdicom
still builds everything else (see :mod:`medseg.export._seg_build`), including one frame of its
own that serves as the template here:

* **Frames** are what highdicom writes, in its order: BINARY holds a frame for every segment on
  every slice where it has voxels, segment by segment, slices along the slice normal; LABELMAP a
  frame per slice with any voxel. ``DimensionIndexValues`` count segments in SegmentSequence
  order and positions among the slices that hold a frame (highdicom's ``omit_empty_frames``).
* **Per-frame functional groups** copy the template item element by element: the parts that
  differ between frames (source image reference and position per slice, segment number per
  segment) are built once per slice or segment with highdicom/pydicom objects and encoded by
  pydicom, and each frame joins those byte strings under an item header.
* **Pixels** come from the segment-number map in one pass over groups of 8 voxels (one packed
  byte): a group holding one segment is 0xFF in that segment's frame, a mixed group is set bit by
  bit. Lesion voxels that overlap class voxels come from their indices.

``tests/test_dicom_seg_fast.py`` checks the result byte for byte against highdicom's own
construction of the same SEG.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["FramePlan", "encode_per_frame", "labelmap_pixels", "pack_binary", "plan_frames"]

_ITEM = b"\xfe\xff\x00\xe0"
_DERIVATION_IMAGE = 0x00089124
_SOURCE_IMAGE = 0x00082112
_FRAME_CONTENT = 0x00209111
_PLANE_POSITION = 0x00209113
_SEGMENT_IDENTIFICATION = 0x0062000A
#: Pixel packing works a slice at a time: its temporaries (a few MB at 512x512) are then reused
#: by the allocator; blocks of 16 slices cost 0.35 s of page faults (kernel time) on the benchmark.
_SLICES_PER_BLOCK = 1


@dataclass
class FramePlan:
    """The frames of a SEG, in file order.

    ``numbers`` (segment number, 0 for LABELMAP frames), ``planes`` (k of the slice) and
    ``dimension`` (DimensionIndexValues, one row per frame); ``frame_of[k, number]`` is the frame
    index of that segment on that slice or -1; ``included`` the slices with a frame, in order.
    """

    numbers: np.ndarray
    planes: np.ndarray
    dimension: np.ndarray
    frame_of: np.ndarray
    included: np.ndarray

    def __len__(self) -> int:
        return len(self.planes)


def plan_frames(found: np.ndarray, order: np.ndarray, numbers: list[int], *, per_segment: bool) -> FramePlan:
    """Frames as highdicom orders them.

    Parameters
    ----------
    found : (n_k, top + 1) bool
        Segment number n has voxels on slice k.
    order : (n_k,) int
        Slices sorted along the slice normal (highdicom's plane order).
    numbers : list of int
        Segment numbers in SegmentSequence order.
    per_segment : bool
        BINARY (a frame per segment and slice) rather than LABELMAP (a frame per slice).
    """
    any_segment = found.any(axis=1)
    included = np.asarray([k for k in order if any_segment[k]], dtype=np.int64)
    rank = np.zeros(found.shape[0], np.int64)
    rank[included] = np.arange(1, len(included) + 1)
    frame_of = np.full(found.shape, -1, np.int64)
    if per_segment:
        rows = [(number, index, k) for index, number in enumerate(numbers, 1) for k in included if found[k, number]]
        seg_numbers = np.asarray([r[0] for r in rows], np.int64)
        planes = np.asarray([r[2] for r in rows], np.int64)
        dimension = np.asarray([(r[1], rank[r[2]]) for r in rows], np.int64).reshape(-1, 2)
        frame_of[planes, seg_numbers] = np.arange(len(rows))
    else:
        seg_numbers = np.zeros(len(included), np.int64)
        planes = included
        dimension = rank[included].reshape(-1, 1)
    return FramePlan(seg_numbers, planes, dimension, frame_of, included)


def pack_binary(maps: np.ndarray, frames: FramePlan, sparse: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """BINARY pixel data: frames of 1 bit per pixel (DICOM order: bit 0 is the first pixel), as uint8.

    ``maps`` is the (k, j, i) C-ordered segment-number map and ``sparse`` further (flat index,
    number) voxels of segments that overlap it. Returns a flat uint8 array holding the frames one
    after another, without padding between frames (PS3.5 8.1.1), as highdicom writes them.
    """
    n_k, rows, columns = maps.shape
    pixels = rows * columns
    if pixels % 8:
        return _pack_binary_bitwise(maps, frames, sparse)
    groups, n = pixels // 8, len(frames)
    out = np.zeros((n + 1) * groups, np.uint8)  # + a scratch frame that background and absent pixels go to
    frame_of = np.where(frames.frame_of < 0, n, frames.frame_of)
    width = frame_of.shape[1]
    start_of = (frame_of * groups).reshape(-1)  # [k * width + number] -> first byte of that frame
    for k0 in range(0, n_k, _SLICES_PER_BLOCK):
        block = maps[k0:k0 + _SLICES_PER_BLOCK].reshape(-1, 8)  # 8 consecutive pixels of one row
        first, uniform = _uniform_groups(block)
        whole = np.flatnonzero(uniform & (first != 0))
        out[start_of[(k0 + whole // groups) * width + first[whole]] + whole % groups] = 0xFF
        mixed = np.flatnonzero(~uniform)
        if not mixed.size:
            continue
        # Mixed groups bit by bit: target byte of pixel b of each group, then one OR per bit (a
        # group has one pixel per bit, so no frame byte repeats within a pass; only the scratch
        # frame's do, and it is dropped).
        target = np.ascontiguousarray(block[mixed].T).astype(np.intp)
        target += (k0 + mixed // groups) * width
        target = start_of[target]
        target += mixed % groups
        for bit in range(8):
            out[target[bit]] |= np.uint8(1 << bit)
    out = out[:n * groups]
    if sparse is not None and sparse[0].size:
        where, numbers = sparse
        k, pixel = np.divmod(where, pixels)
        key = frames.frame_of[k, numbers] * groups + pixel // 8
        unique, inverse = np.unique(key, return_inverse=True)
        # Several voxels of one group set distinct bits, so their sum is their OR.
        out[unique] |= np.bincount(inverse, weights=np.left_shift(1, pixel % 8)).astype(np.uint8)
    return out


def _uniform_groups(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first value, all 8 values equal) of each row of an (n, 8) block; a uint8 row is one 64-bit word."""
    if block.dtype == np.uint8 and block.flags.c_contiguous:
        words = block.reshape(-1).view(np.uint64)
        low = words & np.uint64(0xFF)
        return low.astype(np.uint8), words == low * np.uint64(0x0101010101010101)
    first = block[:, 0]
    return first, (block == first[:, None]).all(axis=1)


def _pack_binary_bitwise(maps: np.ndarray, frames: FramePlan, sparse) -> np.ndarray:
    """Frames whose pixel count is not a multiple of 8 share bytes: pack the whole bit stream."""
    pixels = maps.shape[1] * maps.shape[2]
    bits = np.zeros((len(frames), pixels), bool)
    for index, (number, k) in enumerate(zip(frames.numbers.tolist(), frames.planes.tolist())):
        bits[index] = maps[k].reshape(-1) == number
    if sparse is not None and sparse[0].size:
        k, pixel = np.divmod(sparse[0], pixels)
        bits[frames.frame_of[k, sparse[1]], pixel] = True
    return np.packbits(bits.reshape(-1), bitorder="little")


def labelmap_pixels(maps: np.ndarray, frames: FramePlan) -> np.ndarray:
    """LABELMAP pixel data: the segment-number map of each included slice (little-endian)."""
    dtype = maps.dtype.newbyteorder("<")
    included = frames.included
    if included.size and np.array_equal(included, np.arange(included[0], included[0] + included.size)):
        return np.ascontiguousarray(maps[included[0]:included[0] + included.size], dtype=dtype).reshape(-1)  # a view
    return np.ascontiguousarray(maps[included], dtype=dtype).reshape(-1)


def _encode(element, encodings) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, element, encodings)
    return fp.getvalue()


def _one_item_sequences(tag: int, items: list, encodings) -> list[bytes]:
    """Each item as the encoded element ``tag`` (SQ) holding just that item.

    pydicom encodes all items in one call (its cost is per call as much as per item); the
    encoded sequence is then cut at its item headers, each item getting its own element header.
    """
    from pydicom.dataelem import DataElement

    encoded = _encode(DataElement(tag, "SQ", items), encodings)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"SQ\0\0"
    out, at = [], 12  # tag, VR, reserved, length
    while at < len(encoded):
        if encoded[at:at + 4] != _ITEM:
            raise ValueError("unexpected encoding of a sequence")  # pragma: no cover - pydicom writes items so
        length = struct.unpack_from("<I", encoded, at + 4)[0]
        out.append(head + struct.pack("<I", length + 8) + encoded[at:at + 8 + length])
        at += 8 + length
    if len(out) != len(items):
        raise ValueError("unexpected encoding of a sequence")  # pragma: no cover
    return out


def _with(template, **values):
    """A new Dataset with ``template``'s other elements (shared, not copied) and ``values`` set.

    The elements set are new ones: pydicom's ``setattr`` changes an existing element in place,
    which would change the template and every Dataset sharing it.
    """
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataset import Dataset

    replaced = {tag_for_keyword(keyword) for keyword in values}
    item = Dataset()
    for element in template:
        if element.tag not in replaced:
            item.add(element)
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _single(element):
    """The only item of a sequence element, or None."""
    return element.value[0] if element.VR == "SQ" and len(element.value) == 1 else None


def encode_per_frame(template, frames: FramePlan, slices: list, encodings) -> bytes | None:
    """The value of PerFrameFunctionalGroupsSequence (Explicit VR Little Endian) for ``frames``.

    Parameters
    ----------
    template : pydicom Dataset
        highdicom's per-frame item of a frame of its own (any frame: what differs is replaced).
    slices : list of pydicom Dataset
        The single-frame source image of each slice k.
    encodings
        The SEG's character set (for pydicom's encoder).

    Returns ``None`` when the template holds something this encoder does not know how to vary
    (the caller then lets highdicom build the frames).
    """
    import highdicom as hd

    planes = sorted(set(frames.planes.tolist()))
    parts: list[tuple[str, object]] = []  # per element of the template, in tag order
    for element in sorted(template, key=lambda e: e.tag):
        tag, item = int(element.tag), _single(element)
        if item is None:
            return None
        if tag == _DERIVATION_IMAGE and _SOURCE_IMAGE in item and _single(item[_SOURCE_IMAGE]) is not None:
            source = _single(item[_SOURCE_IMAGE])
            derived = [_with(item, SourceImageSequence=[_with(source, ReferencedSOPClassUID=slices[k].SOPClassUID,
                                                              ReferencedSOPInstanceUID=slices[k].SOPInstanceUID)])
                       for k in planes]
            parts.append(("plane", dict(zip(planes, _one_item_sequences(tag, derived, encodings)))))
        elif tag == _PLANE_POSITION:  # as highdicom.utils.get_plane_positions_of_series makes them
            positions = [hd.PlanePositionSequence("PATIENT", slices[k].ImagePositionPatient)[0] for k in planes]
            parts.append(("plane", dict(zip(planes, _one_item_sequences(tag, positions, encodings)))))
        elif tag == _SEGMENT_IDENTIFICATION and len(item) == 1 and "ReferencedSegmentNumber" in item:
            numbers = sorted(set(frames.numbers.tolist()))
            identified = [_with(item, ReferencedSegmentNumber=n) for n in numbers]
            parts.append(("segment", dict(zip(numbers, _one_item_sequences(tag, identified, encodings)))))
        elif tag == _FRAME_CONTENT and len(item) == 1 and "DimensionIndexValues" in item:
            values = [int(v) for v in np.atleast_1d(item.DimensionIndexValues)]
            encoded, tail = _encode(element, encodings), struct.pack(f"<{len(values)}I", *values)
            if len(values) != frames.dimension.shape[1] or not encoded.endswith(tail):
                return None
            parts.append(("dimension", encoded[:-len(tail)]))  # the values are the last bytes
        else:
            return None  # an element highdicom may vary per frame that is not known here
    index_format = f"<{frames.dimension.shape[1]}I"
    out = []
    for number, k, dimension in zip(frames.numbers.tolist(), frames.planes.tolist(), frames.dimension.tolist()):
        body = b"".join(table[k] if kind == "plane" else table[number] if kind == "segment"
                        else table + struct.pack(index_format, *dimension) for kind, table in parts)
        out.append(_ITEM + struct.pack("<I", len(body)) + body)
    return b"".join(out)
