"""Decode the pixels of a planned volume into one preallocated array, slice by slice.

pydicom (with the pylibjpeg plugins) decodes every transfer syntax and masks/sign-extends by
BitsStored/HighBit; this module only places each decoded 2D image at its ``k``, applies
RescaleSlope/RescaleIntercept on the way, and never holds more than the output plus a few slices.

The output is allocated in Fortran order, shape ``(columns, rows, slices)``: a DICOM slice
(rows, columns) in C order is then ``out[:, :, k].T`` *and* one contiguous block of memory, so
placing it is a plain copy (the layout nibabel uses for NIfTI data too).
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np

from medseg.errors import InputError
from medseg.io._dicom_frames import Frame
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report

__all__ = ["plan_dtype", "decode_volume"]

_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                    "1.2.840.10008.1.2.1.99", ""}
_DEFLATED = "1.2.840.10008.1.2.1.99"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_INT16 = np.iinfo(np.int16)


class _Overflow(Exception):
    """A decoded value fell outside the range the int16 plan assumed; read again as float32."""


def _stored_range(frame: Frame) -> tuple[float, float]:
    bits = max(1, min(frame.meta.bits_stored or 16, 32))
    if frame.meta.pixel_representation == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0 ** bits - 1


def plan_dtype(frames: list[Frame]) -> tuple[np.dtype, bool]:
    """Output dtype, and whether each slice's values must be checked against it while placed.

    float32 when a slope or intercept is fractional (exact for stored values up to 24 bits);
    int16 otherwise. When BitsStored alone guarantees that every stored value maps into int16
    (a CT stored as 12 bits x 1 - 1024), nothing is checked: pydicom masks native pixel data to
    BitsStored. Otherwise (a GE CT stored as 16 signed bits - 1024, or a compressed syntax whose
    decoder may not mask) every slice's actual range is checked, and a value outside int16 makes
    the whole volume read again as float32.
    """
    lows, highs, compressed = [], [], False
    for f in frames:
        if not (float(f.slope).is_integer() and float(f.intercept).is_integer()):
            return np.dtype(np.float32), False
        lo, hi = _stored_range(f)
        compressed |= f.meta.transfer_syntax not in _NATIVE_SYNTAXES
        a, b = lo * f.slope + f.intercept, hi * f.slope + f.intercept
        lows.append(min(a, b))
        highs.append(max(a, b))
    fits = min(lows) >= _INT16.min and max(highs) <= _INT16.max
    return np.dtype(np.int16), compressed or not fits


def _store(target: np.ndarray, pixels: np.ndarray, frame: Frame, verify: bool) -> None:
    """Write ``pixels`` (rows, columns) rescaled into ``target`` (columns, rows)."""
    source = pixels.T
    if target.dtype == np.int16:
        slope, intercept = int(frame.slope), int(frame.intercept)
        highest = None
        if verify:
            lowest, highest = float(pixels.min()), float(pixels.max())
            ends = (lowest * slope + intercept, highest * slope + intercept)
            if min(ends) < _INT16.min or max(ends) > _INT16.max:
                raise _Overflow
        fits_as_is = pixels.dtype.itemsize == 1 or pixels.dtype == np.int16 or (
            pixels.dtype == np.uint16 and (highest <= _INT16.max if highest is not None
                                           else frame.meta.bits_stored <= 15))
        if slope == 1 and fits_as_is:
            # Stored values fit int16 as they are and the result is known to fit: copy, then
            # add in place (two fast passes instead of a buffered int32 round trip).
            np.copyto(target, source, casting="unsafe")
            if intercept:
                target += intercept
        elif slope == 1:
            np.add(source, intercept, out=target, dtype=np.int32, casting="unsafe")
        else:
            scaled = np.multiply(source, slope, dtype=np.int32)
            np.add(scaled, intercept, out=target, dtype=np.int32, casting="unsafe")
        return
    # Float output: compute in float64 (exact for any stored value) and round once to float32.
    scaled = np.multiply(source, float(frame.slope), dtype=np.float64)
    scaled += float(frame.intercept)
    target[...] = scaled


def _native_ok(meta) -> bool:
    """Whether the pixels can be read straight from the file (uncompressed, plain layout)."""
    return (meta.pixel_offset is not None and meta.transfer_syntax in _NATIVE_SYNTAXES
            and meta.transfer_syntax != _DEFLATED and meta.bits_allocated in (8, 16, 32)
            and meta.samples_per_pixel == 1 and 0 < meta.bits_stored <= meta.bits_allocated
            and meta.high_bit == meta.bits_stored - 1)


def _read_native(fh, meta, frame_index: int) -> np.ndarray:
    """One stored frame (rows, columns) read from its offset, masked/sign-extended like pydicom.

    The unused high bits of each word may hold garbage (dcm_qa_12bit): unsigned values are
    masked to BitsStored, signed ones sign-extended from HighBit, exactly as pydicom does.
    """
    bits = meta.bits_allocated
    order = ">" if meta.transfer_syntax == _BIG_ENDIAN else "<"
    dtype = np.dtype(f"{order}{'i' if meta.pixel_representation == 1 else 'u'}{bits // 8}")
    count = meta.rows * meta.cols
    fh.seek(meta.pixel_offset + frame_index * count * dtype.itemsize)
    pixels = np.fromfile(fh, dtype=dtype, count=count)
    if pixels.size != count:
        raise InputError(meta.path, f"pixel data ends early ({pixels.size} of {count} values in frame "
                         f"{frame_index + 1})", "the file is truncated; re-export the series")
    if not dtype.isnative:
        pixels = pixels.byteswap().view(dtype.newbyteorder("="))
    unused = bits - meta.bits_stored
    if unused:
        if meta.pixel_representation == 1:
            pixels <<= unused
            pixels >>= unused  # arithmetic shift: copies the sign bit (HighBit) down
        else:
            pixels &= (1 << meta.bits_stored) - 1
    return pixels.reshape(meta.rows, meta.cols)


def _decode_file(path: str, placements: list[tuple[Frame, int]], out: np.ndarray, verify: bool) -> None:
    from pydicom.pixels import iter_pixels, pixel_array

    first = placements[0][0]
    meta = first.meta
    if _native_ok(meta):
        with open(path, "rb") as fh:
            if first.layout == "multiframe":
                for frame, k in placements:
                    _place(path, frame, k, _read_native(fh, meta, frame.index_in_file), out, verify)
                return
            pixels = _read_native(fh, meta, 0)
    else:
        source = path
        if meta.transfer_syntax == _DEFLATED:
            # pydicom's pixel functions read a path as stored; a deflated data set must be
            # inflated by a full dcmread first.
            import pydicom

            source = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if first.layout == "multiframe":
                wanted = sorted(placements, key=lambda p: p[0].index_in_file)
                indices = [frame.index_in_file for frame, _ in wanted]
                for (frame, k), pixels in zip(wanted, iter_pixels(source, indices=indices)):
                    _place(path, frame, k, pixels, out, verify)
                return
            pixels = pixel_array(source)
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    for frame, k in placements:
        if frame.layout == "mosaic":
            r, c = divmod(frame.index_in_file, frame.mosaic_tiles_per_row)
            tile = pixels[r * frame.rows:(r + 1) * frame.rows, c * frame.cols:(c + 1) * frame.cols]
            _place(path, frame, k, tile, out, verify)
        else:
            _place(path, frame, k, pixels, out, verify)


def _place(path: str, frame: Frame, k: int, pixels: np.ndarray, out: np.ndarray, verify: bool) -> None:
    if pixels.shape != (frame.rows, frame.cols):
        raise InputError(path, f"pixel data has shape {pixels.shape} but the header says "
                         f"{frame.rows} rows x {frame.cols} columns", "the file is damaged; re-export it")
    _store(out[:, :, k], pixels, frame, verify)


def _decode_errors(path: str, exc: Exception) -> InputError:
    return InputError(path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})",
                      "the file is damaged or uses a codec without a decoder; re-export the series "
                      "uncompressed, or remove this file")


def decode_volume(frames: list[Frame], grid_k: list[int], n_slices: int, *,
                  progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                  where: str = "DICOM") -> np.ndarray:
    """Decode ``frames`` into an array of shape (columns, rows, n_slices), HU/scanner units.

    Slots of ``range(n_slices)`` that no frame fills (gaps) get the minimum of the read data.
    """
    dtype, verify = plan_dtype(frames)
    try:
        return _decode(frames, grid_k, n_slices, dtype, verify, progress, cancel, where)
    except _Overflow:
        return _decode(frames, grid_k, n_slices, np.dtype(np.float32), False, progress, cancel, where)


def _decode(frames, grid_k, n_slices, dtype, verify, progress, cancel, where) -> np.ndarray:
    f0 = frames[0]
    out = np.empty((f0.cols, f0.rows, n_slices), dtype=dtype, order="F")
    by_file: dict[str, list[tuple[Frame, int]]] = defaultdict(list)
    for frame, k in zip(frames, grid_k):
        by_file[frame.path].append((frame, k))
    jobs = sorted(by_file.items(), key=lambda item: min(k for _, k in item[1]))
    total = len(jobs)
    report(progress, 0, total, "reading DICOM pixels")

    def run(job):
        path, placements = job
        try:
            _decode_file(path, placements, out, verify)
        except (InputError, _Overflow):
            raise
        except Exception as exc:  # pydicom and its decoders raise many types for damaged data
            raise _decode_errors(path, exc) from exc

    # One file after the other: pydicom's header parsing and the pylibjpeg decoders hold the GIL
    # (measured: 2 threads decode J2K no faster than 1, CPU time == wall time), so a thread
    # pool would only add overhead.
    for done, job in enumerate(jobs, 1):
        check_cancel(cancel, where)
        run(job)
        report(progress, done, total, "reading DICOM pixels")
    filled = sorted(set(grid_k))
    if len(filled) < n_slices:
        missing = sorted(set(range(n_slices)) - set(filled))
        lowest = min(out[:, :, k].min() for k in filled)
        out[:, :, missing] = lowest
    return out
