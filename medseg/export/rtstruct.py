"""DICOM RT Structure Set out: a case's organs and lesion instances as contours on its CT series.

What a planning system or PACS gets (RT Structure Set IOD, checked with dciodvfy):

* one ROI per organ class present (ROINumber = its label value, ROIInterpretedType ORGAN, or
  EXTERNAL / AVOIDANCE where :mod:`medseg.export.roi_aliases` says so) and one per lesion
  instance (``lesion_1``, ... , type GTV, described with its organ and volume); colours from
  :func:`medseg.labels.label_colour`; by default an organ's contour includes the lesions inside it,
  as radiotherapy draws organs (``lesions_in_organs=False`` leaves the holes);
* contours from :mod:`medseg.export.contours`: exact pixel boundaries (re-rasterised with the
  pixel-centre rule they give back every voxel), holes as separate contours, each vertex in
  the plane of its own slice (that slice's ImagePositionPatient, not a fitted grid), each
  contour referencing its image; optional point reduction / smoothing within a stated maximum
  deviation in mm;
* patient and study copied from the CT, the CT series and frame of reference referenced,
  ApprovalStatus UNAPPROVED (a model's output is a proposal), ROIGenerationAlgorithm AUTOMATIC
  for a model's proposal and SEMIAUTOMATIC for a corrected case.

Written with pydicom directly, not rt-utils: rt-utils places vertices with one matrix from the first
slice and the mean slice spacing (not each slice's own position), traces contours through border
pixel centres (OpenCV), writes files dciodvfy rejects (float32 coordinates longer than a DS may
be, no Frame of Reference module, ...), and cannot reference a series whose UIDs are only in the
file meta. Implicit VR Little Endian, because Explicit VR limits a DS value (ContourData) to 64 kB,
about 2 000 vertices.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from medseg.errors import InputError, option
from medseg.export._rtstruct_dataset import _dataset, _observation, _rgb, _roi, _roi_contour
from medseg.export.contours import mask_to_contours
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.volume import Volume

__all__ = ["RTStructExport", "write_rtstruct", "export_case_rtstruct", "rtstruct_exporter"]



class _Roi(NamedTuple):
    number: int
    name: str
    class_name: str
    kind: str  # RTROIInterpretedType
    text: str  # ROIDescription
    colour: tuple[int, int, int]
    box: tuple[slice, ...]
    mask_of: Callable[[tuple[slice, ...]], np.ndarray]


@dataclass
class RTStructExport:
    """What :func:`write_rtstruct` wrote: one record per ROI, warnings, and the largest distance
    (mm) of a vertex from its slice's plane (0 up to rounding)."""

    path: Path
    rois: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_plane_distance_mm: float = 0.0


def _on_grid(volume: Volume, image: Volume, what: str) -> Volume:
    if volume.same_grid(image, atol_mm=0.01):
        return volume
    turned = volume.reoriented(image.orientation)
    if turned.same_grid(image, atol_mm=0.01):
        return turned
    raise InputError(what, f"is on another grid than the DICOM series {image.source.path} ({volume.shape} "
                     f"{np.round(volume.spacing, 4).tolist()} mm {volume.orientation} vs {image.shape} "
                     f"{np.round(image.spacing, 4).tolist()} mm {image.orientation})",
                     "give the DICOM series the labels were made from")


def _host_organs(organs: np.ndarray, lesions: np.ndarray, skip: set[int]) -> dict[int, int]:
    """Lesion id -> the organ value most frequent in its one-voxel shell (0: none)."""
    from scipy.ndimage import binary_dilation, find_objects

    hosts = {}
    for index, box in enumerate(find_objects(lesions), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = lesions[box] == index
        around = organs[box][binary_dilation(inside) & ~inside].astype(np.int64)
        around = around[~np.isin(around, list(skip | {0}))]
        hosts[index] = int(np.bincount(around).argmax()) if around.size else 0
    return hosts






def write_rtstruct(labels: Volume, path: str | os.PathLike, *, image: Volume, lesions: Volume | None = None,
                   lesion_organs: Mapping[int, int] | None = None, lesions_in_organs: bool = True,
                   max_deviation_mm: float = 0.0, smoothing_mm: float = 0.0, aliases: Any = None,
                   label: str = "medseg", description: str = "", generation_algorithm: str = "AUTOMATIC",
                   inputs: tuple[str | os.PathLike, ...] = (), progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> RTStructExport:
    """Write ``labels`` (and lesion instances) as an RTSTRUCT referencing the DICOM series ``image``.

    Parameters
    ----------
    labels : Volume
        Class labels with their ``label_set``, on ``image``'s grid.
    path : path-like
        The RTSTRUCT file to write (atomically; never over an input).
    image : Volume
        The CT series as read from DICOM (:func:`medseg.io.load_volume`): its UIDs and slice
        positions are referenced.
    lesions : Volume, optional
        Lesion instance map (ids 1..n) on the same grid: one GTV ROI per lesion, and the lesion
        class itself is not written again. Without it the lesion class is one GTV ROI.
    lesion_organs : mapping id -> organ value, optional
        The organ of each lesion (the lesion table's ``organ_value``); default: the organ most
        frequent around it.
    lesions_in_organs : bool
        Draw each organ with the lesions inside it (radiotherapy's convention). False: organs
        exactly as the label map holds them, with holes where lesions are.
    max_deviation_mm, smoothing_mm : float
        Point reduction / smoothing (:func:`medseg.export.contours.mask_contours`); 0: exact.
    aliases : path, mapping or AliasTable, optional
        Interpreted types per class (``"types"``, :mod:`medseg.export.roi_aliases`).
    label, description, generation_algorithm : str
        StructureSetLabel, ROIGenerationDescription, ROIGenerationAlgorithm.

    Raises
    ------
    InputError
        ``image`` is not a DICOM series, the grids differ, nothing to export, or ``path`` is an input.
    """
    from medseg.export.roi_aliases import load_aliases
    from medseg.io import atomic_output, refuse_overwriting_inputs
    from medseg.io._rtstruct_file import dicom_slice_geometry

    path = Path(path)
    src = image.source
    if src.format != "dicom" or not any(src.sop_instance_uids):
        raise InputError(src.path or "image", "was not read from DICOM: an RTSTRUCT refers to the CT images by "
                         "their UIDs and slice positions",
                         f"give the DICOM series the labels were made from ({option('dicom')})")
    if labels.label_set is None:
        raise InputError("labels", "have no class names (label_set)", "attach a LabelSet with Volume.with_labels")
    if max_deviation_mm < 0 or smoothing_mm < 0 or (smoothing_mm > 0 and max_deviation_mm == 0):
        name, value = ("smoothing_mm", smoothing_mm) if smoothing_mm else ("max_deviation_mm", max_deviation_mm)
        raise InputError(option(name, value), "is not usable", f"give {option('max_deviation_mm')} > 0 (mm) to allow "
                         "smoothing or point reduction; 0 keeps the exact contours")
    refuse_overwriting_inputs(path, (src.path, labels.source.path, *inputs))
    organs = _on_grid(labels, image, labels.source.path or "labels").array
    lesion_map = None if lesions is None else _on_grid(lesions, image, lesions.source.path or "lesions").array
    geometry = dicom_slice_geometry(image)
    table = load_aliases(aliases)
    label_set = labels.label_set
    lesion_values = set(label_set.lesion_values())
    result = RTStructExport(path)

    hosts: dict[int, int] = {}
    if lesion_map is not None:
        hosts = dict(lesion_organs) if lesion_organs else _host_organs(organs, lesion_map, lesion_values)
        dust = int(np.count_nonzero(np.isin(organs, list(lesion_values)) & (lesion_map == 0)))
        if dust:
            result.warnings.append(f"{dust} voxel(s) of the lesion class belong to no lesion instance (smaller than "
                                   "the lesion size limit) and are not in the structure set")
    rois = _plan_rois(organs, lesion_map, label_set, hosts, lesions_in_organs, table, image.voxel_volume_ml)
    frames = list(src.extra.get("frame_numbers") or [])
    ds = _dataset(image, label, result)
    roi_items, contour_items, observations = [], [], []
    for n, (number, name, class_name, kind, text, colour, box, mask_of) in enumerate(rois):
        check_cancel(cancel, "rtstruct export")
        report(progress, n, len(rois), f"rtstruct: contours of {name}")
        mask = mask_of(box)
        voxels = int(np.count_nonzero(mask))
        start = np.array([box[0].start, box[1].start], dtype=np.float64)
        contours = [replace(c, k=c.k + box[2].start, points_ij=c.points_ij + start)
                    for c in mask_to_contours(mask, spacing_ij=geometry.spacing_ij, max_deviation_mm=max_deviation_mm,
                                              smoothing_mm=smoothing_mm)]
        if not contours:
            continue
        item, n_points = _roi_contour(number, colour, contours, geometry, frames, result)
        roi_items.append(_roi(number, name, text, ds.FrameOfReferenceUID, generation_algorithm, description))
        contour_items.append(item)
        observations.append(_observation(number, kind, class_name))
        result.rois.append({"number": number, "name": name, "interpreted_type": kind, "contours": len(contours),
                            "points": n_points, "voxels": voxels,
                            "volume_ml": round(voxels * image.voxel_volume_ml, 4)})
    if not roi_items:
        raise InputError(labels.source.path or "labels", "hold no labelled voxel: nothing to export",
                         "export a case with at least one class present")
    from pydicom.sequence import Sequence

    ds.StructureSetROISequence = Sequence(roi_items)
    ds.ROIContourSequence = Sequence(contour_items)
    ds.RTROIObservationsSequence = Sequence(observations)
    report(progress, len(rois), len(rois), f"rtstruct: writing {path}")
    with atomic_output(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return result


def _plan_rois(organs: np.ndarray, lesion_map: np.ndarray | None, label_set, hosts: dict[int, int],
               lesions_in_organs: bool, table, voxel_ml: float) -> list[_Roi]:
    """What to write, in order: each organ class present (with the lesions it holds), then each
    lesion. Masks are built one ROI at a time inside its bounding box, so a large series with many
    lesions costs little memory."""
    from scipy.ndimage import find_objects

    from medseg.labels import canonical_name, label_colour

    lesion_values = set(label_set.lesion_values())
    organ_boxes = find_objects(organs)
    lesion_boxes = find_objects(lesion_map) if lesion_map is not None else []
    rois = []
    for lab in label_set.foreground:
        if lesion_map is not None and lab.value in lesion_values:
            continue  # written lesion by lesion below
        inside = [i for i, v in hosts.items() if v == lab.value and 0 < i <= len(lesion_boxes)
                  and lesion_boxes[i - 1] is not None] if lesions_in_organs else []
        boxes = [b for b in [organ_boxes[lab.value - 1] if 0 < lab.value <= len(organ_boxes) else None]
                 + [lesion_boxes[i - 1] for i in inside] if b is not None]
        if not boxes:
            continue  # a class the label set names but the map does not hold

        def organ_mask(box, value=lab.value, inside=tuple(inside)):
            mask = organs[box] == value
            return mask | np.isin(lesion_map[box], inside) if inside else mask

        text = f"medseg class {lab.name} (value {lab.value})" + (f", with {len(inside)} lesion(s)" if inside else "")
        kind = table.interpreted_type(lab.name, lesion=lab.value in lesion_values)
        rois.append(_Roi(lab.value, lab.name, lab.name, kind, text, _rgb(label_colour(lab.name)), _union(boxes),
                         organ_mask))
    name = canonical_name(label_set.name_of(min(lesion_values)) if lesion_values else "lesion")
    number = max(label_set.values) + 1
    for index, box in enumerate(lesion_boxes, start=1):
        if box is None:
            continue
        host = label_set.name_of(hosts[index]) if hosts.get(index) in label_set.values else "no organ"
        ml = float(np.count_nonzero(lesion_map[box] == index)) * voxel_ml
        rois.append(_Roi(number, f"{name}_{index}", name, "GTV", f"lesion {index} in {host}, {ml:.3f} mL",
                         _rgb(label_colour(name)), box, lambda b, i=index: lesion_map[b] == i))
        number += 1
    return rois


def _union(boxes: list[tuple[slice, ...]]) -> tuple[slice, ...]:
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))












def export_case_rtstruct(case: Any, path: str | os.PathLike, *, dicom: str | os.PathLike | None = None,
                         series: str | int | None = None, progress: ProgressCallback | None = None,
                         cancel: CancelToken | None = None, **options: Any) -> RTStructExport:
    """Export a case folder (or :class:`medseg.case.Case`) as an RTSTRUCT on its DICOM series.

    ``dicom`` defaults to the case's ``source_image`` and ``series`` to the series it was made
    from (provenance); ``options`` go to :func:`write_rtstruct`.
    """
    from medseg.case import Case, read_case
    from medseg.io import load_volume

    case = case if isinstance(case, Case) else read_case(case)
    provenance = case.provenance
    source = dicom if dicom is not None else (provenance.get("source_image") or None)
    if source is None or not Path(source).exists():
        raise InputError(case.path, "does not say where its DICOM series is" if source is None else
                         f"was made from {source}, which no longer exists",
                         f"give the DICOM series with {option('dicom')}")
    wanted = (provenance.get("input") or {}).get("series_uid") or None
    if series is None and wanted and Path(source).is_dir():
        from medseg.io import scan

        # The case's own series when the folder holds it (a folder given by hand may hold others).
        if any(info.extra.get("series_uid") == wanted for info in scan(source)):
            series = wanted
    image = load_volume(source, series, progress=progress, cancel=cancel)
    rows = case.lesion_rows
    organs = {int(r["id"]): int(r.get("organ_value") or 0) for r in rows if "id" in r} or None
    algorithm = {"proposal": "AUTOMATIC", "correction": "SEMIAUTOMATIC"}.get(case.kind, "")
    options.setdefault("generation_algorithm", algorithm)
    model = (provenance.get("model") or {}).get("name", "")
    options.setdefault("description", f"medseg {case.kind}" + (f", model {model}" if model else ""))
    return write_rtstruct(case.labels, path, image=image, lesions=case.lesions, lesion_organs=organs,
                          inputs=(case.path,), progress=progress, cancel=cancel, **options)


def rtstruct_exporter(**options: Any) -> Callable[[Any, Path], None]:
    """A writer for :func:`medseg.pipeline.run_case`'s ``exports`` (``{"rtstruct.dcm": rtstruct_exporter()}``):
    writes the run's labels and lesions as an RTSTRUCT on its DICOM input."""

    def write(case_result: Any, path: Path) -> None:
        instances = case_result.lesions
        table = case_result.lesion_table
        organs = {row.id: row.organ_value for row in table.rows} if table is not None else None
        write_rtstruct(case_result.labels, path, image=case_result.image,
                       lesions=None if instances is None else instances.labels, lesion_organs=organs, **options)

    return write
