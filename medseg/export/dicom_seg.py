"""DICOM SEG out: a case's organs and lesions as a Segmentation object that PACS, OHIF and 3D Slicer open.

>>> from medseg.export.dicom_seg import export_seg                      # doctest: +SKIP
>>> export_seg(labels, "ct_dicom/", "seg.dcm", lesions=lesions)          # doctest: +SKIP

Built with highdicom from the labels and the source DICOM series; the bulk of the file (per-frame
functional groups and pixels) is encoded by :mod:`medseg.export._seg_frames` after highdicom's
own template, identical byte for byte and ~5x faster (:mod:`medseg.export._seg_build` says how):

* **Geometry.** The labels must lie on the series' grid (medseg's reader gives it; a label file
  stored with its axes flipped or permuted, as other tools write NIfTI, is reoriented without
  resampling). highdicom receives a ``highdicom.Volume`` with the grid's affine and pairs frames
  with the source images at their positions, never by list order; compressed source series
  work (only headers are read).
* **Segments.** One per class present and one per lesion instance ("lesion 3"), with SNOMED CT
  category/type codes (:mod:`medseg.export.codes`), the label set's display colours, and for
  lesions a TrackingID ("lesion 3") and a TrackingUID derived from the source series and the
  lesion id, so every version of a case (a model's proposal, a person's correction) names the
  same lesion the same way. See :mod:`medseg.export._seg_segments` for how lesions and their
  class share voxels.
* **Who made it.** A model's output is AUTOMATIC with its algorithm identification (name,
  version, architecture and weights sha256, from the case provenance); a corrected case is
  SEMIAUTOMATIC; labels of unknown origin are MANUAL unless ``algorithm`` names the tool.
* **Encoding.** BINARY (1 bit per voxel per segment, what every viewer reads) by default,
  LABELMAP (DICOM 2024: one 8/16-bit map, smaller, few viewers yet) on request. Lossless
  compression: Deflated Explicit VR Little Endian by default (what dcmqi writes; read by DCMTK,
  dcmjs/OHIF, pydicom), RLE Lossless for LABELMAP, or none.
* **Nothing lost.** The file is written atomically and never over an input; an empty label map
  is refused rather than written as a SEG without segments.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError, option
from medseg.export._seg_build import build_seg
from medseg.export._seg_segments import PlannedSegment, plan_segments
from medseg.export._seg_source import (
    SourceSeries,
    derived_uid,
    describe_grid,
    read_source,
)
from medseg.export._seg_write import check_target, write_seg
from medseg.io._dicom_seg_series import small_pages
from medseg.volume import Volume

__all__ = ["COMPRESSIONS", "SEGMENTATION_TYPES", "SegExport", "export_case_seg", "export_seg", "seg_writer"]

SEGMENTATION_TYPES = ("BINARY", "LABELMAP")
COMPRESSIONS = ("deflate", "rle", "none")


@dataclass
class SegExport:
    """What :func:`export_seg` wrote.

    Attributes
    ----------
    path : Path or None
    dataset : highdicom.seg.Segmentation
        The SEG as built. When its frames were encoded directly (the usual case) and it was
        written to ``path``, this is its header only (the frames went to the file); built without
        a path it holds them too, as encoded bytes that pydicom parses when asked. Either way
        highdicom's frame look-up methods describe its one-slice template: read the SEG back with
        ``highdicom.seg.segread`` for those.
    segments : list of PlannedSegment
    segmentation_type : str
    warnings : list of str
    seconds : float
    """

    path: Path | None
    dataset: Any
    segments: list[PlannedSegment]
    segmentation_type: str
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        n_lesions = sum(s.kind == "lesion" for s in self.segments)
        size = f", {self.path.stat().st_size / 1e6:.2f} MB" if self.path and self.path.exists() else ""
        return (f"{self.segmentation_type} SEG, {len(self.segments)} segments ({len(self.segments) - n_lesions} "
                f"classes, {n_lesions} lesions){size}, {self.seconds:.1f} s")


def _lesion_volume(lesions: Any) -> Volume | None:
    return getattr(lesions, "labels", lesions)  # LesionInstances or a Volume


def _on_grid(volume: Volume, grid: Volume, name: str, where_source: str) -> Volume:
    """``volume`` on ``grid``: as it is, or with its axes permuted/flipped when that is all that differs."""
    if volume.same_grid(grid):
        return volume
    reoriented = volume.reoriented(grid.orientation)
    if reoriented.same_grid(grid):
        return reoriented
    raise InputError(name, f"is not on the grid of the source series {where_source}: {name} is "
                     f"{describe_grid(volume)}; the series is {describe_grid(grid)}",
                     "give the labels made on this series (or the series they were made on)")


def _algorithm(provenance: Mapping[str, Any] | None, kind: str | None, algorithm: str | Mapping | None):
    """(SegmentAlgorithmType, AlgorithmIdentificationSequence or None, warning or "")."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if isinstance(algorithm, str):
        name, _, version = algorithm.partition(":")
        algorithm = {"name": name, "version": version}
    model = dict(algorithm) if algorithm else dict((provenance or {}).get("model") or {})
    corrected = kind == "correction"
    if not model.get("name"):
        note = "" if corrected else ("labels of unknown origin: segments are marked MANUAL; name the program that "
                                     f"made them with {option('algorithm')} NAME:VERSION")
        return "MANUAL", None, note
    parameters = {k: str(model[k]) for k in ("architecture", "weights_sha256") if model.get(k)}
    identification = hd.AlgorithmIdentificationSequence(
        name=str(model["name"])[:64], family=codes.cid7162.ArtificialIntelligence,
        version=str(model.get("version") or "unknown")[:64], parameters=parameters or None)
    return ("SEMIAUTOMATIC" if corrected else "AUTOMATIC"), identification, ""


def _descriptions(segments: list[PlannedSegment], algorithm_type: str, identification, tracking_key: str) -> list:
    import highdicom as hd
    from highdicom.sr import CodedConcept

    def concept(code):
        return CodedConcept(code.value, code.scheme, code.meaning)

    out = []
    for s in segments:
        rgb = [round(c * 255) for c in s.colour]
        tracking = {"tracking_id": s.label, "tracking_uid": derived_uid("lesion", tracking_key, s.lesion_id)} \
            if s.kind == "lesion" else {}
        regions = [concept(s.codes.region)] if s.codes.region is not None else None
        desc = hd.seg.SegmentDescription(
            segment_number=s.number, segment_label=s.label[:64], segmented_property_category=concept(s.codes.category),
            segmented_property_type=concept(s.codes.type), algorithm_type=algorithm_type,
            algorithm_identification=identification, anatomic_regions=regions,
            display_color=hd.color.CIELabColor.from_rgb(*rgb), **tracking)
        desc.SegmentDescription = s.description
        if s.codes.modifier is not None:
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                concept(s.codes.modifier)]
        if regions and s.codes.region_modifier is not None:
            desc.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [concept(s.codes.region_modifier)]
        out.append(desc)
    return out


def export_seg(labels: Volume, dicom: str | os.PathLike | Volume | SourceSeries | None = None,
               path: str | os.PathLike | None = None, *, lesions: Any = None, series: str | int | None = None,
               segmentation_type: str = "BINARY", compression: str = "deflate",
               provenance: Mapping[str, Any] | None = None, kind: str | None = None,
               algorithm: str | Mapping[str, Any] | None = None, tracking_key: str | None = None,
               series_description: str | None = None, series_number: int | None = None,
               instance_number: int = 1, content_creator: str | None = None,
               inputs: tuple[str | os.PathLike, ...] = ()) -> SegExport:
    """Write ``labels`` (and ``lesions``) as a DICOM SEG that references the ``dicom`` source series.

    Parameters
    ----------
    labels : Volume
        Class labels with their ``label_set`` (value -> name), on the source series' grid.
    dicom : path-like, Volume or SourceSeries, optional
        The DICOM series the labels were made on (folder or file; or the image volume read from
        it). Default: ``labels.source`` when the labels carry a DICOM source.
    path : path-like, optional
        Where to write the SEG (atomically, never over an input). ``None``: build only.
    lesions : Volume or LesionInstances, optional
        Lesion instance map (ids 1..n) on the same grid: one segment per lesion.
    series : str or int, optional
        Which series of ``dicom`` (as :func:`medseg.io.load_volume`).
    segmentation_type : {"BINARY", "LABELMAP"}
    compression : {"deflate", "rle", "none"}
        Lossless: the whole data set deflated (default), RLE frames (LABELMAP only), or none.
    provenance : mapping, optional
        The case's provenance (``provenance.json``): its ``model`` names the algorithm.
    kind : {"proposal", "correction", "import"}, optional
        A ``"correction"`` is written SEMIAUTOMATIC.
    algorithm : str or mapping, optional
        ``"NAME:VERSION"`` or ``{"name", "version", "weights_sha256"}`` of the program that made
        labels without provenance.
    tracking_key : str, optional
        What lesion TrackingUIDs derive from (default: the source SeriesInstanceUID, so versions of
        a case share them).
    series_description, series_number, instance_number, content_creator
        Of the SEG (defaults: "medseg <model>", source series number + 1000, 1, none).
    inputs : paths
        Further files the SEG must not be written over.

    Returns
    -------
    SegExport

    Raises
    ------
    InputError
        Labels off the source grid (both grids named), a folder with several series and no
        ``series``, an empty label map, a source that is not DICOM, LABELMAP with overlapping
        segments.
    """
    import highdicom as hd

    t0 = time.perf_counter()
    segmentation_type = str(segmentation_type).upper()
    if segmentation_type not in SEGMENTATION_TYPES:
        raise InputError(option("segmentation_type", segmentation_type), "is not a SEG type medseg writes",
                         f"use one of {', '.join(SEGMENTATION_TYPES)}")
    if compression not in COMPRESSIONS or (compression == "rle" and segmentation_type != "LABELMAP"):
        raise InputError(option("compression", compression), "is not a lossless compression for "
                         f"{segmentation_type}", "use deflate (default) or none; rle only for LABELMAP")
    labels_name = labels.source.path or "labels"
    if dicom is None:
        if labels.source.format != "dicom":
            raise InputError(labels_name, "does not come from a DICOM series, so the SEG has no images to refer to",
                             f"give the source series with {option('dicom')}")
        dicom = labels
    src = dicom if isinstance(dicom, SourceSeries) else read_source(dicom, series)
    where = src.grid.source.path or "the source series"
    labels = _on_grid(labels, src.grid, labels_name, where)
    lesion_map = _lesion_volume(lesions)
    lesions_name = "lesions"
    if lesion_map is not None:
        lesions_name = lesion_map.source.path or "lesions"
        lesion_map = _on_grid(lesion_map, src.grid, lesions_name, where)
    protected = (src.grid.source.path, labels.source.path, getattr(lesion_map, "source", labels.source).path, *inputs)
    if path is not None:  # before the work: never over an input, never into a folder
        check_target(Path(path), protected)
    plan = plan_segments(labels, lesion_map, labels_name=labels_name, lesions_name=lesions_name)
    if not plan.segments:
        raise InputError(labels_name, "is empty (no voxel carries a class or a lesion)",
                         "nothing to export: a SEG without segments is not written")
    if plan.overlap and segmentation_type == "LABELMAP":
        raise InputError(lesions_name, f"overlaps the class segments ({plan.overlap_example}): a LABELMAP SEG holds "
                         "one segment per voxel", "write BINARY (leave out labelmap), or give labels whose lesion "
                         "voxels carry the lesion class")
    warnings = list(src.warnings) + plan.warnings
    algorithm_type, identification, note = _algorithm(provenance, kind, algorithm)
    if note:
        warnings.append(note)
    model = (provenance or {}).get("model") or {}
    key = tracking_key or src.series_uid
    first = src.datasets[0]
    description = series_description or (f"medseg {model.get('name', '')}".strip() +
                                         (" corrected" if kind == "correction" else ""))
    number = series_number if series_number is not None else int(first.get("SeriesNumber") or 0) + 1000
    options = {
        "series_instance_uid": derived_uid("seg series", key), "series_number": number,
        "sop_instance_uid": hd.UID(), "instance_number": int(instance_number), "manufacturer": "medseg",
        "manufacturer_model_name": "medseg", "software_versions": _version(), "device_serial_number": "1",
        "content_label": "MEDSEG", "content_description": f"{len(plan.segments)} segments by medseg"[:64],
        "content_creator_name": content_creator, "series_description": description[:64],
        "transfer_syntax_uid": "1.2.840.10008.1.2.5" if compression == "rle" else "1.2.840.10008.1.2.1"}
    with small_pages():
        built = build_seg(src, plan, labels, lesion_map, segmentation_type,
                          _descriptions(plan.segments, algorithm_type, identification, key), options)
        seg = built.dataset
        _deidentification(seg, first)
        out = write_seg(built, Path(path), compression, protected) if path is not None else None
        if path is None and built.per_frame is not None:
            _attach_frames(built)
    return SegExport(out, seg, plan.segments, segmentation_type, warnings, time.perf_counter() - t0)


def _version() -> str:
    from medseg import __version__

    return __version__


def _deidentification(seg, first) -> None:
    """A de-identified source needs its method named too (Patient module, type 1C)."""
    if str(first.get("PatientIdentityRemoved", "")).upper() != "YES":
        return
    seg.PatientIdentityRemoved = "YES"
    for element in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if element in first:
            seg[element] = first[element]
    if "DeidentificationMethod" not in seg and "DeidentificationMethodCodeSequence" not in seg:
        seg.DeidentificationMethod = "method not recorded in the source series"


def _attach_frames(built) -> None:
    """Put the directly encoded frames into the data set (a SEG built without a file to go to)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.encaps import encapsulate
    from pydicom.tag import Tag

    seg = built.dataset
    seg[0x52009230] = RawDataElement(Tag(0x52009230), "SQ", len(built.per_frame), built.per_frame, 0, False, True)
    seg.PixelData = encapsulate(built.frames) if built.frames is not None else built.pixels.tobytes()


def export_case_seg(case: Any, path: str | os.PathLike | None, *, dicom: str | os.PathLike | Volume | None = None,
                    series: str | int | None = None, **options: Any) -> SegExport:
    """:func:`export_seg` of a case folder (or :class:`medseg.case.Case`): labels, lesions, provenance.

    The source series defaults to the case's input when it was DICOM and is still there; the
    SEG's InstanceNumber is the case version and a corrected case is SEMIAUTOMATIC.
    """
    from medseg.case import read_case

    case = read_case(case) if not hasattr(case, "labels") else case
    record = (case.provenance.get("input") or {})
    if dicom is None:
        if record.get("format") != "dicom" or not record.get("path") or not os.path.exists(record["path"]):
            raise InputError(case.path, "does not name a DICOM input that is still there",
                             f"give the source series with {option('dicom')}")
        dicom, series = record["path"], series if series is not None else (record.get("series_uid") or None)
    options.setdefault("provenance", case.provenance)
    options.setdefault("kind", case.kind)
    options.setdefault("instance_number", case.version)
    options.setdefault("lesions", case.lesions)
    options["inputs"] = (*options.get("inputs", ()), case.path / "labels.nii.gz")
    return export_seg(case.labels, dicom, path, series=series, **options)


def seg_writer(**options: Any) -> Callable[[Any, Path], None]:
    """A ``writer(case_result, path)`` for ``run_case(..., exports={"seg.dcm": seg_writer()})``.

    The SEG refers to the run's own DICOM input; ``options`` go to :func:`export_seg`
    (e.g. ``segmentation_type="LABELMAP"``).
    """

    def write(result: Any, path: Path) -> None:
        image = result.image
        if image.source.format != "dicom":
            raise InputError(image.source.path or "input", "is not DICOM, so a DICOM SEG has no images to refer to",
                             "segment the DICOM series itself, or leave out the DICOM SEG export")
        export_seg(result.labels, image, path, lesions=result.lesions, provenance=result.provenance,
                   **{"kind": "proposal", **options})

    return write
