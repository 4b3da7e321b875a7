"""One DICOM header -> the 2D frames it holds, each with its own geometry and rescale.

A classic file holds one frame; an enhanced (multi-frame) object holds ``NumberOfFrames``
frames whose geometry, rescale, echo and image type live in the per-frame / shared functional
groups; a Siemens mosaic holds ``NumberOfImagesInMosaic`` tiles of one 2D image, whose positions
come from the CSA header (nibabel's reader, reused). Everything downstream (grouping, sorting,
pixel placement) works on :class:`Frame` records only, so the three layouts share one code path.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from medseg.io._dicom_values import codes as _codes
from medseg.io._dicom_values import get as _get
from medseg.io._dicom_values import integer as _int
from medseg.io._dicom_values import number as _float
from medseg.io._dicom_values import text as _text
from medseg.io._dicom_values import vector as _vector

__all__ = ["Frame", "FileMeta", "frames_from_header", "ENHANCED_IMAGE_CLASSES"]

#: SOP classes whose geometry lives in functional groups (enhanced CT/MR/PET/XA and legacy-converted).
ENHANCED_IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET",
}


@dataclass(frozen=True)
class FileMeta:
    """What one file says about its series as a whole (shared by all frames of the file)."""

    path: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    patient_id: str
    patient_name: str
    patient_position: str
    series_description: str
    series_number: int | None
    manufacturer: str
    transfer_syntax: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    samples_per_pixel: int
    photometric: str
    gantry_tilt_deg: float
    philips_scale_slope: float | None
    #: Problems with this file's header that do not stop reading (empty UIDs taken from meta...).
    notes: tuple[str, ...] = ()
    rows: int = 0                   # of the stored image (a whole mosaic, not one tile)
    cols: int = 0
    n_frames: int = 1
    high_bit: int | None = None
    #: File offset (bytes) of uncompressed pixel data, found while scanning; None if compressed.
    pixel_offset: int | None = None


@dataclass(eq=False)
class Frame:
    """One 2D image: where it lies, how to scale it, and which file/frame/tile it comes from."""

    meta: FileMeta
    layout: str                       # "single", "multiframe" or "mosaic"
    index_in_file: int                # 0-based frame (multi-frame) or tile (mosaic) number
    rows: int
    cols: int
    ipp: np.ndarray | None            # LPS mm of the centre of the first pixel
    iop: np.ndarray | None            # (6,) row then column direction cosines
    pixel_spacing: tuple[float, float] | None   # (between rows, between columns) mm
    slice_spacing_hint: float | None  # SpacingBetweenSlices or SliceThickness (mm)
    slope: float
    intercept: float
    image_type: tuple[str, ...]
    echo_number: int | None
    echo_time: float | None
    stack_id: str
    temporal: tuple = ()              # sort key among frames at one position
    instance_number: int | None = None
    mosaic_tiles_per_row: int = 0
    units: str = ""
    extra: dict = field(default_factory=dict)
    #: Why this frame's pixels cannot be read (truncated file), or "" when they can. A damaged
    #: frame still counts for geometry, so its slice shows up as missing instead of vanishing.
    damaged: str = ""

    @property
    def path(self) -> str:
        return self.meta.path


def _file_meta(ds, path: str, pixel_offset: int | None = None) -> FileMeta:
    notes = []
    fm = getattr(ds, "file_meta", None)
    sop_uid = _text(_get(ds, "SOPInstanceUID"))
    sop_class = _text(_get(ds, "SOPClassUID"))
    if not sop_uid and fm is not None and _text(fm.get("MediaStorageSOPInstanceUID")):
        sop_uid = _text(fm.get("MediaStorageSOPInstanceUID"))
        notes.append("SOPInstanceUID is empty in the data set; taken from the file meta (0002,0003)")
    if not sop_class and fm is not None and _text(fm.get("MediaStorageSOPClassUID")):
        sop_class = _text(fm.get("MediaStorageSOPClassUID"))
    series_uid = _text(_get(ds, "SeriesInstanceUID"))
    if not series_uid:
        notes.append("SeriesInstanceUID is empty; files were grouped by folder and series number")
    philips_ss = None
    if "Philips" in _text(_get(ds, "Manufacturer")) and (0x2005, 0x100E) in ds:
        philips_ss = _float(ds[0x2005, 0x100E].value)
    transfer_syntax = _text(fm.get("TransferSyntaxUID")) if fm is not None else ""
    return FileMeta(
        path=path,
        series_uid=series_uid,
        study_uid=_text(_get(ds, "StudyInstanceUID")),
        frame_of_reference_uid=_text(_get(ds, "FrameOfReferenceUID")),
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        modality=_text(_get(ds, "Modality")),
        patient_id=_text(_get(ds, "PatientID")),
        patient_name=_text(_get(ds, "PatientName")),
        patient_position=_text(_get(ds, "PatientPosition")),
        series_description=_text(_get(ds, "SeriesDescription")),
        series_number=_int(_get(ds, "SeriesNumber")),
        manufacturer=_text(_get(ds, "Manufacturer")),
        transfer_syntax=transfer_syntax,
        bits_allocated=_int(_get(ds, "BitsAllocated"), 16),
        bits_stored=_int(_get(ds, "BitsStored"), _int(_get(ds, "BitsAllocated"), 16)),
        pixel_representation=_int(_get(ds, "PixelRepresentation"), 0),
        samples_per_pixel=_int(_get(ds, "SamplesPerPixel"), 1),
        photometric=_text(_get(ds, "PhotometricInterpretation")),
        gantry_tilt_deg=_float(_get(ds, "GantryDetectorTilt"), 0.0) or 0.0,
        philips_scale_slope=philips_ss,
        notes=tuple(notes),
        rows=_int(_get(ds, "Rows"), 0), cols=_int(_get(ds, "Columns"), 0),
        n_frames=_int(_get(ds, "NumberOfFrames"), 1) or 1,
        high_bit=_int(_get(ds, "HighBit")), pixel_offset=pixel_offset,
    )


def _temporal_key(ds, frame_content=None, frame_index: int = 0) -> tuple:
    """Order of frames that share one position (time points): explicit indices first, then times."""
    values = []
    if frame_content is not None:
        values.append(_float(_get(frame_content, "TemporalPositionIndex")))
    values += [
        _float(_get(ds, "TemporalPositionIdentifier")),
        _float(_get(ds, "AcquisitionNumber")),
        _float(_get(ds, "TriggerTime")),
    ]
    if frame_content is not None:
        values.append(_float(_text(_get(frame_content, "FrameAcquisitionDateTime")) or None))
    values += [
        _float(_text(_get(ds, "AcquisitionDateTime")) or _text(_get(ds, "AcquisitionTime")) or None),
        _float(_get(ds, "InstanceNumber")),
        float(frame_index),
    ]
    # None sorts before numbers; a (flag, value) pair keeps tuples comparable.
    return tuple((0, 0.0) if v is None else (1, v) for v in values)


def _classic_frame(ds, meta: FileMeta) -> Frame:
    spacing = _vector(_get(ds, "PixelSpacing"), 2)
    thickness = _float(_get(ds, "SpacingBetweenSlices")) or _float(_get(ds, "SliceThickness"))
    echo = _int(_get(ds, "EchoNumbers"))
    return Frame(
        meta=meta, layout="single", index_in_file=0,
        rows=_int(_get(ds, "Rows"), 0), cols=_int(_get(ds, "Columns"), 0),
        ipp=_vector(_get(ds, "ImagePositionPatient"), 3),
        iop=_vector(_get(ds, "ImageOrientationPatient"), 6),
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        slice_spacing_hint=thickness,
        slope=_float(_get(ds, "RescaleSlope"), 1.0) or 1.0,
        intercept=_float(_get(ds, "RescaleIntercept"), 0.0),
        image_type=_codes(_get(ds, "ImageType")),
        echo_number=echo, echo_time=_float(_get(ds, "EchoTime")), stack_id="",
        temporal=_temporal_key(ds), instance_number=_int(_get(ds, "InstanceNumber")),
        units=_text(_get(ds, "RescaleType")),
    )


def _mosaic_frames(ds, meta: FileMeta, base: Frame) -> list[Frame] | str:
    """Split a Siemens mosaic header into its tiles; a string explains why it cannot be."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel warns on import that its DICOM code is experimental
        from nibabel.nicom import csareader, dicomwrappers

    try:
        csa = csareader.get_csa_header(ds)
    except csareader.CSAError as exc:
        return f"Siemens mosaic whose CSA header cannot be read ({exc})"
    if csa is None or not csareader.is_mosaic(csa):
        return "Siemens MOSAIC image without the CSA header that says how many tiles it holds"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = dicomwrappers.MosaicWrapper(ds, csa)
        tile_rows, tile_cols, n_tiles = wrapper.image_shape
        corner = wrapper.image_position       # position of tile 0's first pixel (nibabel's fix)
        normal = wrapper.slice_normal          # from IOP, signed as the CSA SliceNormalVector
    if corner is None or normal is None or base.iop is None or base.pixel_spacing is None:
        return "Siemens mosaic without ImagePositionPatient/ImageOrientationPatient/PixelSpacing"
    spacing = base.slice_spacing_hint or 1.0
    frames = []
    for tile in range(int(n_tiles)):
        frames.append(Frame(
            meta=meta, layout="mosaic", index_in_file=tile, rows=int(tile_rows), cols=int(tile_cols),
            ipp=np.asarray(corner, dtype=np.float64) + tile * spacing * np.asarray(normal, dtype=np.float64),
            iop=base.iop, pixel_spacing=base.pixel_spacing, slice_spacing_hint=spacing,
            slope=base.slope, intercept=base.intercept, image_type=base.image_type,
            echo_number=base.echo_number, echo_time=base.echo_time, stack_id="",
            temporal=base.temporal, instance_number=base.instance_number,
            mosaic_tiles_per_row=int(wrapper.mosaic_size), units=base.units,
        ))
    return frames


def _item(per_frame, shared, keyword: str):
    """First item of functional-group sequence ``keyword``: per-frame wins over shared."""
    for group in (per_frame, shared):
        if group is not None and keyword in group:
            seq = group[keyword].value
            if seq is not None and len(seq):
                return seq[0]
    return None


def _multiframe_frames(ds, meta: FileMeta, base: Frame) -> list[Frame]:
    n_frames = _int(_get(ds, "NumberOfFrames"), 1) or 1
    per_frame = list(_get(ds, "PerFrameFunctionalGroupsSequence") or [])
    shared_seq = _get(ds, "SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    frames = []
    for index in range(n_frames):
        pf = per_frame[index] if index < len(per_frame) else None
        position = _item(pf, shared, "PlanePositionSequence")
        orientation = _item(pf, shared, "PlaneOrientationSequence")
        measures = _item(pf, shared, "PixelMeasuresSequence")
        transform = _item(pf, shared, "PixelValueTransformationSequence")
        content = _item(pf, shared, "FrameContentSequence")
        echo_item = _item(pf, shared, "MREchoSequence")
        frame_type = (_item(pf, shared, "MRImageFrameTypeSequence") or _item(pf, shared, "CTImageFrameTypeSequence")
                      or _item(pf, shared, "PETFrameTypeSequence"))
        ipp = _vector(_get(position, "ImagePositionPatient"), 3) if position is not None else None
        iop = _vector(_get(orientation, "ImageOrientationPatient"), 6) if orientation is not None else None
        spacing = _vector(_get(measures, "PixelSpacing"), 2) if measures is not None else None
        hint = None
        if measures is not None:
            hint = _float(_get(measures, "SpacingBetweenSlices")) or _float(_get(measures, "SliceThickness"))
        image_type = base.image_type
        if frame_type is not None and _get(frame_type, "FrameType"):
            image_type = _codes(_get(frame_type, "FrameType"))
        frames.append(Frame(
            meta=meta, layout="multiframe", index_in_file=index, rows=base.rows, cols=base.cols,
            ipp=ipp if ipp is not None else (base.ipp if n_frames == 1 else None),
            iop=iop if iop is not None else base.iop,
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else base.pixel_spacing,
            slice_spacing_hint=hint or base.slice_spacing_hint,
            slope=(_float(_get(transform, "RescaleSlope"), 1.0) or 1.0) if transform is not None else base.slope,
            intercept=_float(_get(transform, "RescaleIntercept"), 0.0) if transform is not None else base.intercept,
            image_type=image_type,
            echo_number=None if echo_item is not None else base.echo_number,
            echo_time=_float(_get(echo_item, "EffectiveEchoTime")) if echo_item is not None else base.echo_time,
            stack_id=_text(_get(content, "StackID")) if content is not None else "",
            temporal=_temporal_key(ds, content, index), instance_number=base.instance_number,
            units=_text(_get(transform, "RescaleType")) if transform is not None else base.units,
            extra={"in_stack_position": _int(_get(content, "InStackPositionNumber")) if content is not None else None},
        ))
    return frames


def frames_from_header(ds, path: str, *, pixel_offset: int | None = None) -> tuple[FileMeta, list[Frame] | str]:
    """The frames of one DICOM header read with ``stop_before_pixels``.

    ``pixel_offset`` is where uncompressed pixel data starts in the file, when the scan found it.
    Returns ``(meta, frames)``, or ``(meta, reason)`` when the file is DICOM but not an image
    medseg can read (no pixel data, colour, a mosaic without its CSA header...).
    """
    meta = _file_meta(ds, path, pixel_offset)
    rows, cols = _int(_get(ds, "Rows"), 0), _int(_get(ds, "Columns"), 0)
    if not rows or not cols:
        kind = meta.modality or "object"
        return meta, f"no pixel data (a {kind} object, not an image)"
    if meta.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.66"):
        return meta, "a DICOM SEG (segmentation), not an image; read it as a label map"
    if meta.samples_per_pixel != 1:
        return meta, (f"colour image ({meta.photometric}, {meta.samples_per_pixel} samples per pixel); "
                      "medseg reads grey-level CT/MR")
    base = _classic_frame(ds, meta)
    n_frames = _int(_get(ds, "NumberOfFrames"), 1) or 1
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds or n_frames > 1:
        return meta, _multiframe_frames(ds, meta, base)
    if "MOSAIC" in base.image_type:
        return meta, _mosaic_frames(ds, meta, base)
    return meta, [base]
