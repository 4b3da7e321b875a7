"""DICOM series headers for SEG export and import, and pydicom settings for SEG-sized data sets.

:func:`read_series_header` reads a series' grid and UIDs without decoding pixels (the choice of
series, slice order and geometry of :func:`medseg.io.load_volume`); :func:`series_plan` also
returns the reader's parsed headers, which the exporter reuses instead of parsing files twice.
"""

from __future__ import annotations

import contextlib
import os
import warnings as _warnings
from pathlib import Path

import numpy as np

from medseg.volume import Volume, value_counts  # value_counts re-exported for the SEG reader

__all__ = ["quiet_pydicom", "read_series_header", "series_plan", "small_pages", "sparse_nonzero", "value_counts"]




def sparse_nonzero(flat: np.ndarray) -> np.ndarray:
    """``np.flatnonzero`` of a mostly-zero 1-D array, a 64-bit word at a time.

    numpy's nonzero is fast on booleans only: ``flatnonzero(words != 0)`` over 64-bit words, then
    the values of the few nonzero words, takes a tenth of ``flatnonzero(flat)`` on a lesion map.
    """
    per = 8 // flat.itemsize if flat.itemsize <= 8 else 0
    if not per or flat.size % per or not flat.flags.c_contiguous:
        return np.flatnonzero(flat != 0)
    words = np.flatnonzero(flat.view(np.uint64) != 0)
    candidates = (words[:, None] * per + np.arange(per)).reshape(-1)
    return candidates[flat[candidates] != 0]


@contextlib.contextmanager
def small_pages():
    """numpy's large arrays without its transparent-huge-page advice while the block runs.

    numpy asks Linux for 2 MB pages on arrays of 4 MB and more (``madvise``); where the kernel
    compacts memory synchronously for such requests (``transparent_hugepage/defrag`` = madvise,
    the default of many distributions) and memory is fragmented, first touching a fresh 160 MB
    array cost 0.3 s of kernel time on the benchmark machine, against 0.05 s with ordinary pages.
    A SEG export or import touches a few such arrays once each, so ordinary pages are the faster
    choice there. The setting is numpy's process-wide one (``NUMPY_MADVISE_HUGEPAGE``), restored
    afterwards; it changes only how memory is paged in, never a value.
    """
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    # Private but stable since numpy 1.20; absent -> nothing is changed.
    setter = getattr(multiarray, "_set_madvise_hugepage", None)
    before = setter(False) if setter is not None else None
    try:
        yield
    finally:
        if setter is not None:
            setter(before)


@contextlib.contextmanager
def quiet_pydicom():
    """Skip pydicom's re-validation of every value it reads and writes, and silence library notes.

    highdicom validates what it builds, and a SEG's thousands of per-frame items make pydicom's
    own checks about a third of reading and writing time. Notes about the *source's* values
    ("Anonymous" is a one-part person name) are not the user's business here and would break
    the one-line rule. The setting is process-wide while the block runs.
    """
    import pydicom

    settings = pydicom.config.settings
    before = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = before


def read_series_header(path: str | os.PathLike, series: str | int | None = None, *, allow_gaps: bool = False,
                       allow_2d: bool = False) -> Volume:
    """A DICOM series' grid and UIDs, without decoding its pixels.

    The same choice of series, slice order, geometry and :class:`~medseg.volume.SourceInfo` as
    :func:`medseg.io.load_volume`; the array is a read-only view of zeros of the series' shape.
    """
    return series_plan(path, series, allow_gaps=allow_gaps, allow_2d=allow_2d)[0]


def series_plan(path: str | os.PathLike, series: str | int | None = None, *, allow_gaps: bool = False,
                allow_2d: bool = False):
    """(header-only Volume, the reader's VolumePlan with every slice's parsed header)."""
    from medseg.io import _dicom

    path = Path(path)
    # load_volume's choice of series (medseg.io._dicom.read_dicom), without the decode.
    plan, chosen, scan = _dicom.choose_series(path, series, allow_gaps=allow_gaps, allow_2d=allow_2d)
    shape = (plan.frames[0].cols, plan.frames[0].rows, plan.geometry.n_slices)
    zeros = np.broadcast_to(np.zeros((), np.int16), shape)
    volume = Volume(zeros, plan.geometry.affine, plan.frames[0].meta.modality, _dicom._source(plan, chosen, scan))
    return volume, plan
