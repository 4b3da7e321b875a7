"""The DICOM dataset of an RT Structure Set: the modules around the ROIs, and each ROI's items.

Split from :mod:`medseg.export.rtstruct` (which plans the ROIs and their contours); pydicom only.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import TYPE_CHECKING

import numpy as np

from medseg.export.contours import SliceGeometry
from medseg.volume import Volume

if TYPE_CHECKING:
    from medseg.export.rtstruct import RTStructExport

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_RTSTRUCT = RTSTRUCT_SOP_CLASS
_STUDY_COMPONENT = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management: what RT Referenced Study items name
_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


def _ds_text(values: np.ndarray) -> bytes:
    """Decimal strings for ContourData: micrometre precision, at most 16 characters each, so a
    vertex read back is within 5e-7 mm of where it was (and a slice position such as -126.69
    comes back as the very same number)."""
    values = np.round(values, 6) + 0.0  # + 0.0: no "-0"
    text = "\\".join(f"{v:.6f}".rstrip("0").rstrip(".") for v in values.tolist()).encode()
    return text + b" " if len(text) % 2 else text


def _header(image: Volume):
    import pydicom

    src = image.source
    folder = src.path if os.path.isdir(src.path) else os.path.dirname(src.path)
    first = next((f for f in src.extra.get("files") or [] if f), "")
    return pydicom.dcmread(os.path.join(folder, first), stop_before_pixels=True)


def _rgb(colour: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colour)  # type: ignore[return-value]


def _dataset(image: Volume, label: str, result: RTStructExport):
    """The RTSTRUCT's modules other than the ROIs: patient and study from the CT, RT series,
    frame of reference, equipment, structure set references, approval, SOP common."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    from medseg import __version__

    header = _header(image)
    src = image.source
    now = _dt.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = _RTSTRUCT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = _IMPLICIT_VR_LITTLE_ENDIAN
    ds.file_meta.ImplementationClassUID = str(generate_uid(entropy_srcs=["medseg", "implementation class"]))
    ds.file_meta.ImplementationVersionName = f"MEDSEG_{__version__}"[:16]
    if header.get("SpecificCharacterSet"):
        ds.SpecificCharacterSet = header.SpecificCharacterSet
    ds.SOPClassUID = _RTSTRUCT
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription"):
        setattr(ds, keyword, header.get(keyword, "") or "")
    ds.StudyInstanceUID = src.study_uid or str(header.get("StudyInstanceUID", "") or "")
    if not ds.StudyInstanceUID:
        ds.StudyInstanceUID = generate_uid()
        result.warnings.append("the CT series has no StudyInstanceUID; the structure set was given a new study UID "
                               "(an archive files it as another study)")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    number = str(src.series_number or "").strip()
    ds.SeriesNumber = int(number) + 1000 if number.isdigit() else 1000
    ds.SeriesDescription = "medseg contours"
    ds.SeriesDate, ds.SeriesTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = src.frame_of_reference_uid or str(header.get("FrameOfReferenceUID", "") or "")
    if not ds.FrameOfReferenceUID:
        ds.FrameOfReferenceUID = generate_uid()
        result.warnings.append("the CT series has no FrameOfReferenceUID; the structure set was given a new one")
    ds.PositionReferenceIndicator = header.get("PositionReferenceIndicator", "") or ""
    ds.Manufacturer = "medseg"
    ds.ManufacturerModelName = "medseg"
    ds.SoftwareVersions = f"medseg {__version__}"
    ds.StructureSetLabel = (label or "medseg")[:16]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    frame = Dataset()
    frame.FrameOfReferenceUID = ds.FrameOfReferenceUID
    if src.series_uid:
        images = []
        for uid in dict.fromkeys(src.sop_instance_uids):  # a multi-frame image is listed once
            if uid:
                ref = Dataset()
                ref.ReferencedSOPClassUID = src.sop_class_uid
                ref.ReferencedSOPInstanceUID = uid
                images.append(ref)
        series = Dataset()
        series.SeriesInstanceUID = src.series_uid
        series.ContourImageSequence = Sequence(images)
        study = Dataset()
        study.ReferencedSOPClassUID = _STUDY_COMPONENT
        study.ReferencedSOPInstanceUID = ds.StudyInstanceUID
        study.RTReferencedSeriesSequence = Sequence([series])
        frame.RTReferencedStudySequence = Sequence([study])
    else:
        result.warnings.append("the CT series has no SeriesInstanceUID; the structure set references its images "
                               "from each contour and its frame of reference only")
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _roi(number: int, name: str, text: str, frame_uid: str, algorithm: str, description: str):
    from pydicom.dataset import Dataset

    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = frame_uid
    roi.ROIName = name[:64]
    roi.ROIDescription = text[:64]
    roi.ROIGenerationAlgorithm = algorithm
    if description:
        roi.ROIGenerationDescription = description[:64]
    return roi


def _observation(number: int, kind: str, class_name: str):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from medseg.export.codes import codes_for

    item = Dataset()
    item.ObservationNumber = number
    item.ReferencedROINumber = number
    item.RTROIInterpretedType = kind
    item.ROIInterpreter = ""
    codes = codes_for(class_name)
    if codes.known and codes.modifier is None:
        # What the ROI is, as SNOMED CT (the codes DICOM SEG uses), for systems that map ROIs by
        # code rather than by name. Sided structures are left to their name: this sequence has no
        # place for the laterality modifier.
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = codes.type
        item.RTROIIdentificationCodeSequence = Sequence([code])
    return item


def _roi_contour(number: int, colour: tuple[int, int, int], contours: list, geometry: SliceGeometry,
                 frames: list[int], result: RTStructExport):
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.tag import Tag

    items, n_points = [], 0
    for index, contour in enumerate(contours, start=1):
        uid = geometry.sop_instance_uids[contour.k] if contour.k < len(geometry.sop_instance_uids) else ""
        if not uid:
            result.warnings.append(f"ROI {number}: a contour on slice k={contour.k}, which has no image (a gap in "
                                   "the series), was left out")
            continue
        points = geometry.to_patient(contour.k, contour.points_ij)
        distance = float(np.max(np.abs((points - geometry.origins_lps[contour.k]) @ geometry.normal)))
        result.max_plane_distance_mm = max(result.max_plane_distance_mm, distance)
        item = Dataset()
        ref = Dataset()
        ref.ReferencedSOPClassUID = geometry.sop_class_uid
        ref.ReferencedSOPInstanceUID = uid
        if frames:  # an enhanced (multi-frame) image: which frame
            ref.ReferencedFrameNumber = frames[contour.k]
        item.ContourImageSequence = Sequence([ref])
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = len(points)
        item.ContourNumber = index
        text = _ds_text(points.ravel())
        # Handed to pydicom as raw bytes, written as they are (no per-value DS objects).
        item[Tag(0x30060050)] = RawDataElement(Tag(0x30060050), "DS", len(text), text, 0, True, True)
        item.set_original_encoding(True, True, "iso8859")
        items.append(item)
        n_points += len(points)
    roi = Dataset()
    roi.ROIDisplayColor = list(colour)
    roi.ContourSequence = Sequence(items)
    roi.ReferencedROINumber = number
    return roi, n_points
