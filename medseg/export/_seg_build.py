"""Build a DICOM SEG data set: highdicom for the header, :mod:`medseg.export._seg_frames` for the frames.

highdicom's ``Segmentation`` builds and checks the whole header: patient and study copied from
the source, references to every source image, segment descriptions and codes, dimension
organisation, the shared functional groups from the grid. It is given the labels' grid as a
``highdicom.Volume`` of a single slice (slice k = 0, the affine of the whole grid), so it pairs
that slice with its source image by position and makes one frame of each kind, which serves as the
template for the rest; the remaining header values that depend on all slices are set here the way
highdicom sets them (``SpacingBetweenSlices`` from every plane position, ``DimensionOrganizationType``
"3D" for a single channel over regularly spaced slices, ``SegmentsOverlap``, ``NumberOfFrames``).

That fast path needs a series of single-frame source images, one per slice of the grid (the
common case, and the one ``read_source`` checks slice by slice). Anything else (an enhanced
multi-frame source, a series read with gaps) is built by highdicom alone from the whole array.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.export._seg_frames import (
    FramePlan,
    encode_per_frame,
    labelmap_pixels,
    pack_binary,
    plan_frames,
)
from medseg.export._seg_segments import (
    SegmentPlan,
    segment_array,
    segment_maps,
    segment_presence,
)
from medseg.io._dicom_seg import quiet_pydicom

__all__ = ["BuiltSeg", "build_seg"]

_RLE = "1.2.840.10008.1.2.5"
_TO_IJK = np.array([[0.0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])  # (slice, row, column) -> (i, j, k)


@dataclass
class BuiltSeg:
    """A SEG ready to write.

    ``dataset`` is highdicom's Segmentation: the whole SEG, or (``per_frame`` set) its header, whose
    PerFrameFunctionalGroupsSequence value is ``per_frame`` (encoded bytes) and whose pixel data is
    ``pixels`` (the native PixelData value as a uint8/uint16 array, or ``frames``, the encoded
    frames of an encapsulated transfer syntax). :func:`medseg.export._seg_write.write_seg` writes both.
    """

    dataset: Any
    per_frame: bytes | None = None
    pixels: np.ndarray | None = None
    frames: list[bytes] | None = None


def build_seg(src, plan: SegmentPlan, labels, lesions, segmentation_type: str, descriptions: list,
              options: dict[str, Any], *, fast: bool = True) -> BuiltSeg:
    """The SEG of ``plan`` on ``src``'s grid; ``options`` go to highdicom's Segmentation.

    ``fast=False`` lets highdicom build every frame (the reference the fast path is tested against).
    """
    grid = src.grid
    slices = _slice_datasets(src) if fast else None
    if slices is not None:
        built = _build_fast(src, slices, plan, labels, lesions, segmentation_type, descriptions, options)
        if built is not None:
            return built
    import highdicom as hd

    array = segment_array(plan, labels, lesions)
    channels = {"SegmentNumber": [s.number for s in plan.segments]} if array.ndim == 4 else None
    volume = hd.Volume(array, grid.affine_lps @ _TO_IJK, "PATIENT",
                       frame_of_reference_uid=grid.source.frame_of_reference_uid or None, channels=channels)
    with quiet_pydicom():
        return BuiltSeg(hd.seg.Segmentation(src.datasets, volume, segmentation_type, descriptions, **options))


def _slice_datasets(src) -> list | None:
    """The single-frame source image of each slice k, or None when the series is not one image per slice."""
    uids = list(src.grid.source.sop_instance_uids)
    if len(src.datasets) != src.grid.shape[2] or len(set(uids)) != len(uids) or not all(uids):
        return None
    by_uid = {str(ds.SOPInstanceUID): ds for ds in src.datasets}
    if len(by_uid) != len(uids) or any(int(ds.get("NumberOfFrames", 1) or 1) != 1 for ds in src.datasets):
        return None
    if not all(ds.get("FrameOfReferenceUID") for ds in src.datasets):
        return None
    try:
        return [by_uid[uid] for uid in uids]
    except KeyError:
        return None


def _build_fast(src, slices: list, plan: SegmentPlan, labels, lesions, segmentation_type: str,
                descriptions: list, options: dict[str, Any]) -> BuiltSeg | None:
    import highdicom as hd
    from highdicom.spatial import (
        VOLUME_INDEX_CONVENTION,
        get_normal_vector,
        get_volume_positions,
    )
    from pydicom.valuerep import format_number_as_ds

    grid = src.grid
    affine = grid.affine_lps @ _TO_IJK
    n_i, n_j, n_k = grid.shape
    maps, sparse = segment_maps(plan, labels, lesions)
    numbers = [s.number for s in plan.segments]
    per_segment = segmentation_type != "LABELMAP"
    found = segment_presence(plan)
    geometry = hd.VolumeGeometry(affine, (n_k, n_j, n_i), "PATIENT",
                                 frame_of_reference_uid=grid.source.frame_of_reference_uid or None)
    plane_values = np.array([p[0].ImagePositionPatient for p in geometry.get_plane_positions()], dtype=np.float64)
    orientation = geometry.get_plane_orientation()[0].ImageOrientationPatient
    distances = plane_values @ get_normal_vector(orientation, index_convention=VOLUME_INDEX_CONVENTION)
    order = np.argsort(distances, kind="stable")
    frames = plan_frames(found, order, numbers, per_segment=per_segment)
    packing = None
    if per_segment and options.get("transfer_syntax_uid") != _RLE:
        # numpy packs the bits without the GIL while highdicom builds the header in Python.
        packing = ThreadPoolExecutor(1, thread_name_prefix="medseg-seg-pack")
        packed = packing.submit(pack_binary, maps, frames, sparse)

    # highdicom's header and template frames: the same call on the first slice only.
    one_slice = hd.Volume(np.zeros((1, n_j, n_i), maps.dtype), affine, "PATIENT",
                          frame_of_reference_uid=grid.source.frame_of_reference_uid or None)
    try:
        with quiet_pydicom():
            # An empty slice: highdicom keeps its frames (omit_empty_frames=False says so without a warning).
            seg = hd.seg.Segmentation(src.datasets, one_slice, segmentation_type, descriptions,
                                      **{**options, "omit_empty_frames": False})
            charset = seg.get("SpecificCharacterSet", "ISO_IR 6")
            per_frame = encode_per_frame(seg.PerFrameFunctionalGroupsSequence[0], frames, slices, charset)
        pixels = packed.result() if packing is not None else None
    finally:
        if packing is not None:
            packing.shutdown(wait=True)
    if per_frame is None:
        return None
    shared = seg.SharedFunctionalGroupsSequence[0]
    spacing, _ = get_volume_positions(image_positions=plane_values, image_orientation=orientation)
    if spacing is not None and "PixelMeasuresSequence" in shared:
        shared.PixelMeasuresSequence[0].SpacingBetweenSlices = format_number_as_ds(spacing)
    if not per_segment or len(numbers) == 1:
        _set_3d(seg, plane_values, frames, orientation)
    seg.SegmentsOverlap = "YES" if plan.overlap else "NO"
    del seg.PerFrameFunctionalGroupsSequence, seg.PixelData
    seg.NumberOfFrames = len(frames)
    if seg.file_meta.TransferSyntaxUID.is_encapsulated:
        if per_segment:
            return None  # compressed BINARY frames (JPEG 2000): highdicom encodes them
        from highdicom.frame import encode_frame

        planes = labelmap_pixels(maps, frames).reshape(len(frames), n_j, n_i)
        encoded = [encode_frame(plane, transfer_syntax_uid=seg.file_meta.TransferSyntaxUID,
                                bits_allocated=seg.BitsAllocated, bits_stored=seg.BitsStored,
                                photometric_interpretation=seg.PhotometricInterpretation,
                                pixel_representation=seg.PixelRepresentation) for plane in planes]
        return BuiltSeg(seg, per_frame, frames=encoded)
    return BuiltSeg(seg, per_frame, pixels if per_segment else labelmap_pixels(maps, frames))


def _set_3d(seg, plane_values: np.ndarray, frames: FramePlan, orientation) -> None:
    """DimensionOrganizationType "3D" as highdicom decides it: a single channel over more than one
    slice, regularly spaced in the order of the array (slices without a frame left out)."""
    from highdicom.spatial import get_volume_positions

    if len(frames.included) <= 1:
        return
    kept = plane_values[np.sort(frames.included)]
    spacing, _ = get_volume_positions(image_positions=kept, image_orientation=orientation, sort=False)
    if spacing is not None and spacing > 0.0:
        seg.DimensionOrganizationType = "3D"
