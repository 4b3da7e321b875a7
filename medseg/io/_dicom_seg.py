"""DICOM SEG in: segments back to label maps on the source series' exact grid, with their names.

:func:`read_seg` reads any Segmentation object (BINARY, FRACTIONAL, LABELMAP; highdicom, dcmqi,
medseg or a PACS wrote it). With the source series it places every frame on the slice of the
source image it was derived from (in the series' own slice order), after checking that the SEG
refers to that series and that every frame lies where its source image lies, and returns maps on
the series' grid; without it, the SEG's own plane positions give the grid (the slab that holds
segments). Segment labels become class names.

BINARY and LABELMAP SEGs with uncompressed (or deflated) pixel data, where each frame names one
source image, are read by :mod:`medseg.io._dicom_seg_frames` (header by pydicom, the frame table
and pixels directly: ~1 s instead of ~5 s for a 4 887-frame SEG); everything else, and every
SEG read without its source series, by highdicom (``segread``, ``get_pixels_by_source_instance``).

One label map holds one class per voxel, so overlapping segments are refused with their names,
or (``split_overlapping=True``) spread over as few maps as hold them without overlap. A SEG
medseg wrote (organs and lesions, which overlap where a lesion lies in an organ) comes back as
what it was made from: the class map with its label values and names, and the lesion instance
map with its ids (see ``medseg.export.dicom_seg`` for how segments describe them).

:func:`read_series_header` reads a DICOM series' geometry and UIDs without decoding pixels.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import InputError, option
from medseg.io._dicom_seg_grid import (
    check_references,
    frame_items,
    highdicom_fetcher,
    own_grid,
    referenced_instances,
    slices_of,
)
from medseg.io._dicom_seg_segments import (
    MEDSEG_MARK,
    SegmentInfo,
    describe_segments,
    label_set_of,
)
from medseg.io._dicom_seg_series import (
    quiet_pydicom,
    read_series_header,
    series_plan,
    small_pages,
    sparse_nonzero,
    value_counts,
)
from medseg.io._formats import SEG_SOP_CLASSES, is_dicom_seg
from medseg.volume import Volume

__all__ = [
    "MEDSEG_MARK",
    "SEG_SOP_CLASSES",
    "SegImport",
    "SegmentInfo",
    "is_dicom_seg",
    "quiet_pydicom",
    "read_seg",
    "read_series_header",
    "series_plan",
    "value_counts",
]


@dataclass
class SegImport:
    """What :func:`read_seg` returns.

    Attributes
    ----------
    labels : Volume or None
        Class map (values as in the SEG: medseg's label values, else segment numbers) with its
        ``label_set``; ``None`` when the SEG holds only lesions.
    lesions : Volume or None
        Lesion instance map (ids as in the SEG) when the SEG holds medseg lesion segments.
    layers : list of Volume
        With ``split_overlapping``: further class maps for segments that overlap ``labels``.
    segments : list of SegmentInfo
    segmentation_type : str
        ``"BINARY"``, ``"FRACTIONAL"`` or ``"LABELMAP"``.
    referenced_series_uids : tuple of str
    warnings : list of str
    """

    labels: Volume | None
    lesions: Volume | None
    layers: list[Volume] = field(default_factory=list)
    segments: list[SegmentInfo] = field(default_factory=list)
    segmentation_type: str = ""
    referenced_series_uids: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)

    @property
    def maps(self) -> list[Volume]:
        """Every class map: ``labels`` then ``layers``."""
        return [m for m in (self.labels, *self.layers) if m is not None]


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file",
                         "give a DICOM SEG file (.dcm)")
    if not is_dicom_seg(path):
        raise InputError(path, "is not a DICOM Segmentation object (SEG)",
                         "give a DICOM SEG file; images are read with load_volume")


def _damaged(path: Path, exc: Exception) -> InputError:
    return InputError(path, f"cannot be read as a DICOM SEG ({type(exc).__name__}: {exc})",
                      "check the file; re-export it from the tool that wrote it")


def _highdicom(path: Path):
    import highdicom as hd

    try:
        return hd.seg.segread(path)
    except Exception as exc:  # highdicom and pydicom raise many types for damaged objects
        raise _damaged(path, exc) from exc


def _source_grid(dicom, series, allow_gaps: bool) -> tuple[Volume, str]:
    if isinstance(dicom, Volume):
        grid, where = dicom, dicom.source.path or "the source volume"
    else:
        grid, where = read_series_header(dicom, series, allow_gaps=allow_gaps, allow_2d=True), str(dicom)
    if grid.source.format != "dicom" or not any(grid.source.sop_instance_uids):
        raise InputError(where, "is not a DICOM series (a SEG refers to DICOM images by their UIDs)",
                         "give the DICOM series the SEG was made on")
    return grid, where


def _on_source(path: Path, dicom, series, allow_gaps: bool):
    """(SEG data set, grid, fetch) on the source series' grid: the SEG read directly where it can be
    (in a thread while the series' headers are read: inflating and reading the file need no GIL),
    else by highdicom."""
    from medseg.io._dicom_seg_frames import frame_painter, read_frames

    with ThreadPoolExecutor(1, thread_name_prefix="medseg-seg-read") as pool:
        reading = pool.submit(read_frames, path)
        grid, where = _source_grid(dicom, series, allow_gaps)
        try:
            frames = reading.result()
        except InputError:
            raise
        except Exception as exc:  # pydicom raises many types for damaged headers
            raise _damaged(path, exc) from exc
    if frames is not None:
        check_references(frames.dataset, grid, path, where)
        ks = slices_of(frames.dataset, frame_items(frames.dataset, frames.items), grid, path, where)
        keys = list(zip(ks[ks >= 0].tolist(), frames.segments[ks >= 0].tolist()))
        if len(set(keys)) == len(keys):  # one frame per segment and slice, as highdicom requires too
            return frames.dataset, grid, frame_painter(frames, ks, grid.shape[2])
    seg = _highdicom(path)
    check_references(seg, grid, path, where)
    slices_of(seg, frame_items(seg), grid, path, where)
    return seg, grid, highdicom_fetcher(seg, grid, path)


def _smallest_uint(maximum: int) -> np.dtype:
    return np.dtype(np.uint8 if maximum <= 255 else np.uint16 if maximum <= 65535 else np.uint32)


def _paint(fetch, segments: list[SegmentInfo], values: list[int], *, fractional: bool, threshold: float,
           split: bool, path: Path, counts: dict[int, int], sparse: bool = False) -> list[tuple[np.ndarray, list[int]]]:
    """Label maps in (k, j, i) order with ``values[n]`` for segment n, and the segments each holds.

    ``fetch(numbers, combine)`` returns (array, voxels per segment number or None).
    ``sparse``: few voxels are set (lesions), so only those are read after one scan for them.
    """
    dtype = _smallest_uint(max(values))
    numbers = [s.number for s in segments]
    if not fractional:
        try:
            combined, found = fetch(numbers, True)
        except RuntimeError:  # the segments overlap
            combined = None
        if combined is not None and sparse:
            where = sparse_nonzero(combined.reshape(-1))
            numbers_there = combined.reshape(-1)[where]
            if found is None:
                found = dict(enumerate(np.bincount(numbers_there, minlength=max(numbers) + 1).tolist()))
            counts.update({n: int(found.get(n, 0)) for n in numbers})
            lut = np.zeros(max(numbers) + 1, dtype)
            lut[numbers] = values
            out = combined if combined.dtype == dtype else np.zeros(combined.shape, dtype)
            out.reshape(-1)[where] = lut[numbers_there]  # in place when the type allows: no second map
            return [(out, list(range(len(segments))))]
        if combined is not None:
            if found is None:
                found = dict(enumerate(value_counts(combined).tolist()))
            counts.update({n: int(found.get(n, 0)) for n in numbers})
            if numbers == values and combined.dtype == dtype:
                return [(combined, list(range(len(segments))))]
            lut = np.zeros(max(max(numbers), int(combined.max(initial=0))) + 1, dtype)
            lut[numbers] = values
            return [(lut[combined], list(range(len(segments))))]
    layers: list[tuple[np.ndarray, list[int]]] = []
    for index, (segment, value) in enumerate(zip(segments, values)):
        stack = fetch([segment.number], False)[0][..., 0]
        mask = stack >= threshold if fractional else stack > 0
        counts[segment.number] = int(np.count_nonzero(mask))
        for layer, members in layers:
            if not np.any(layer[mask]):
                layer[mask] = value
                members.append(index)
                break
        else:
            if layers and not split:
                first, held = layers[0]
                under = first[mask]
                other = next(segments[i] for i in held if np.any(under == values[i]))
                shared = int(np.count_nonzero(under == values[segments.index(other)]))
                raise InputError(path, f"segments {other.number} {other.label!r} and {segment.number} "
                                 f"{segment.label!r} overlap ({shared} voxels): one label map cannot hold both",
                                 f"read them as separate label maps with {option('split_overlapping')}")
            layer = np.zeros(mask.shape, dtype)
            layer[mask] = value
            layers.append((layer, [index]))
    return layers


def _add_lesion_classes(layers, lesion_raw: np.ndarray, lesions: list[SegmentInfo]) -> None:
    """Give lesion voxels their class where no class segment holds them (medseg leaves the class
    segment out where the lesion instances hold its voxels). Works on the lesion voxels only."""
    claims = {s.lesion_id: s.value for s in lesions if s.value}
    if not claims:
        return
    lut = np.zeros(int(max(s.lesion_id for s in lesions)) + 1, _smallest_uint(max(claims.values())))
    for lesion_id, value in claims.items():
        lut[lesion_id] = value
    if not layers:
        layers.append((np.zeros(lesion_raw.shape, lut.dtype), []))
    base, members = layers[0]
    if base.dtype.itemsize < lut.dtype.itemsize:
        base = base.astype(lut.dtype)
    flat_base = base.reshape(-1)  # both C-contiguous (k, j, i): views
    where = sparse_nonzero(lesion_raw.reshape(-1))
    claimed = lut[lesion_raw.reshape(-1)[where]]
    free = (flat_base[where] == 0) & (claimed > 0)
    flat_base[where[free]] = claimed[free]
    layers[0] = (base, members)


def read_seg(path: str | os.PathLike, dicom: str | os.PathLike | Volume | None = None, *,
             series: str | int | None = None, split_overlapping: bool = False, fraction_threshold: float = 0.5,
             allow_gaps: bool = False) -> SegImport:
    """Read a DICOM SEG into label maps on the source series' grid.

    Parameters
    ----------
    path : path-like
        The SEG file.
    dicom : path-like or Volume, optional
        The source series the SEG was made on (a DICOM folder or file, or a volume read from it). Maps
        are then on its whole grid, and a SEG of another series is refused. Without it, maps are
        on the SEG's own grid (the slab its frames cover).
    series : str or int, optional
        Which series of ``dicom`` (as :func:`medseg.io.load_volume`).
    split_overlapping : bool
        Put segments that overlap into further maps (``SegImport.layers``) instead of refusing.
    fraction_threshold : float
        FRACTIONAL segments: a voxel belongs to the segment when its fraction is at least this.
    allow_gaps : bool
        Read a source series with missing slices (as :func:`medseg.io.load_volume`).

    Returns
    -------
    SegImport

    Raises
    ------
    InputError
        Not a SEG, a SEG of another series or not on its grid, overlapping segments without
        ``split_overlapping``, a source that is not a DICOM series.

    Examples
    --------
    >>> result = read_seg("seg.dcm", "ct_dicom/")                   # doctest: +SKIP
    >>> result.labels.label_set.names, result.labels.same_grid(load_volume("ct_dicom/"))  # doctest: +SKIP
    (('background', 'liver', 'spleen'), True)
    """
    path = Path(path)
    _check_file(path)
    warnings: list[str] = []
    with quiet_pydicom(), small_pages():
        if dicom is None:
            seg = _highdicom(path)
            grid, fetch = own_grid(seg, path)
            warnings.append(f"{path.name}: read on the SEG's own grid (the {'x'.join(map(str, grid.shape))} slab its "
                            "frames cover); give the source series to get maps on its whole grid")
        else:
            seg, grid, fetch = _on_source(path, dicom, series, allow_gaps)
        segments = describe_segments(seg)
        if not segments:
            raise InputError(path, "holds no segments", "export the segmentation again")
        stype = str(seg.SegmentationType)
        fractional = stype == "FRACTIONAL"
        if fractional:
            warnings.append(f"{path.name}: FRACTIONAL segments were read as the voxels with fraction >= "
                            f"{fraction_threshold:g}")
        counts: dict[int, int] = {}
        classes = [s for s in segments if s.kind == "class"]
        lesions = [s for s in segments if s.kind == "lesion"]
        values = [s.value if s.value is not None else s.number for s in classes]
        layers = _paint(fetch, classes, values, fractional=fractional, threshold=fraction_threshold,
                        split=split_overlapping, path=path, counts=counts) if classes else []
        lesion_map = None
        if lesions:
            ids = [s.lesion_id for s in lesions]
            (lesion_raw, _), = _paint(fetch, lesions, ids, fractional=fractional, threshold=fraction_threshold,
                                      split=False, path=path, counts=counts, sparse=True)
            _add_lesion_classes(layers, lesion_raw, lesions)
            lesion_map = grid.with_array(lesion_raw.transpose(2, 1, 0), modality="SEG")
        referenced = tuple(sorted({series_uid for series_uid, _ in referenced_instances(seg)}))
    lesion_classes = {s.value: s.class_name or "lesion" for s in lesions if s.value}
    maps = []
    for index, (array, members) in enumerate(layers):
        label_set = label_set_of([classes[i] for i in members], [values[i] for i in members],
                                 lesion_classes if index == 0 else None)
        maps.append(grid.with_array(array.transpose(2, 1, 0), modality="SEG", label_set=label_set))
    if len(maps) > 1:
        warnings.append(f"{path.name}: overlapping segments were split over {len(maps)} label maps")
    infos = [dataclasses.replace(s, voxels=counts.get(s.number, 0)) for s in segments]
    return SegImport(maps[0] if maps else None, lesion_map, maps[1:], infos, stype, referenced, warnings)
