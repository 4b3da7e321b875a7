"""DICOM RT Structure Set in: ROI contours -> label map and lesion instances on the CT's grid, a case.

:func:`read_rtstruct` reads the file and its CT series (:mod:`medseg.io._rtstruct_file`: the series
given must be the one referenced, else an error naming both UIDs), puts every contour on its slice
(vertices farther than ``plane_tolerance_mm`` from every slice plane are an error unless
``snap_to_slices``), rasterises it (pixel centre inside, even-odd over the slice's contours:
:mod:`medseg.export.contours`), maps ROI names to medseg classes (:mod:`medseg.export.roi_aliases`)
and paints the label map, larger structures first so that smaller ones stay visible where ROIs
overlap. Lesion ROIs (GTVs) become lesion instances, one per ROI, in ROI order. Empty ROIs are
skipped with a warning; self-intersecting contours are filled by the even-odd rule and counted.
:func:`import_rtstruct` writes the result as a case (``kind="import"``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError, option
from medseg.export.contours import SliceContour, SliceGeometry, count_self_intersections
from medseg.export.rasterise import contours_to_mask
from medseg.io._rtstruct_file import (
    RTSTRUCT_SOP_CLASS,
    StructureSet,
    StructureSetROI,
    dicom_slice_geometry,
    is_rtstruct,
    load_referenced_series,
    read_structure_set,
)
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.volume import Volume

__all__ = ["RTSTRUCT_SOP_CLASS", "PLANE_TOLERANCE_MM", "StructureSet", "StructureSetROI", "ImportedROI",
           "RTStructImport", "is_rtstruct", "read_structure_set", "dicom_slice_geometry", "load_referenced_series",
           "read_rtstruct", "import_rtstruct", "write_import_case", "slice_contours", "place_contours", "Placement"]

#: Largest distance (mm) of a contour's vertices from its slice plane that counts as "on" it. DS
#: strings written with 6 significant digits (some tools) are off by up to ~0.005 mm at |z| < 1 m.
PLANE_TOLERANCE_MM = 0.05
_CLOSED = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")


@dataclass(eq=False)
class Placement:
    """Contours put on their slices by :func:`place_contours`.

    ``off_plane`` lists ``(distance_mm, k)`` of the contours left out because they lie off every
    slice plane (without ``snap_to_slices``); ``snapped`` counts those moved to their nearest
    slice; ``skipped`` those that cannot be placed (no vertex, not finite, or, when snapping,
    farther than half a slice from every slice); ``self_intersecting`` those that cross
    themselves (filled by the even-odd rule); ``max_distance_mm`` is the largest distance of a
    kept vertex from its slice plane.
    """

    contours: list[SliceContour] = field(default_factory=list)
    off_plane: list[tuple[float, int]] = field(default_factory=list)
    snapped: int = 0
    skipped: int = 0
    self_intersecting: int = 0
    max_distance_mm: float = 0.0


def place_contours(polygons_lps: Iterable[np.ndarray], geometry: SliceGeometry, *,
                   plane_tolerance_mm: float = PLANE_TOLERANCE_MM,
                   snap_to_slices: bool = False) -> Placement:
    """Put closed planar polygons given in LPS mm on the slices of ``geometry``.

    Each polygon goes to the slice whose plane is nearest to it, in that slice's pixel
    coordinates. It is on the slice when all its vertices are within ``plane_tolerance_mm`` of
    the plane; otherwise it is reported in ``off_plane`` or, with ``snap_to_slices``, projected
    onto the nearest slice and counted in ``snapped``.
    """
    offsets, normal, origin = geometry.offsets_mm, geometry.normal, geometry.origins_lps[0]
    half = 0.5 * float(np.median(np.abs(np.diff(offsets)))) if len(offsets) > 1 else float("inf")
    out = Placement()
    for points in polygons_lps:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if len(points) == 0 or not np.all(np.isfinite(points)):
            out.skipped += 1
            continue
        d = (points - origin) @ normal
        centre, spread = 0.5 * (float(d.max()) + float(d.min())), 0.5 * (float(d.max()) - float(d.min()))
        k = int(np.argmin(np.abs(offsets - centre)))
        distance = abs(float(offsets[k]) - centre) + spread
        if distance > plane_tolerance_mm:
            if not snap_to_slices:
                out.off_plane.append((distance, k))
                continue
            if distance > half:  # beyond the first or last slice, or not parallel to the slices
                out.skipped += 1
                continue
            out.snapped += 1
        out.max_distance_mm = max(out.max_distance_mm, distance)
        ij = geometry.to_pixels(k, points)
        out.self_intersecting += count_self_intersections(ij) > 0
        out.contours.append(SliceContour(k, ij))
    return out


@dataclass(eq=False)
class ImportedROI:
    """One ROI after import: where it went and what happened to its contours.

    ``status`` is ``"imported"``, ``"empty"`` (no contours), ``"no voxels"`` (contours enclose no
    voxel centre), ``"planning"`` (left out: a margin or helper structure) or ``"not selected"``.
    """

    number: int
    name: str
    class_name: str
    role: str
    interpreted_type: str
    colour: tuple[int, int, int]
    status: str = "imported"
    instance: int = 0
    contours: list[SliceContour] = field(default_factory=list, repr=False)
    n_snapped: int = 0
    n_self_intersecting: int = 0
    n_skipped: int = 0
    max_plane_distance_mm: float = 0.0
    voxels: int = 0
    visible_voxels: int = 0
    volume_ml: float = 0.0

    def record(self) -> dict[str, Any]:
        """Plain data for provenance.json."""
        return {"number": self.number, "name": self.name, "class": self.class_name, "role": self.role,
                "interpreted_type": self.interpreted_type, "status": self.status, "instance": self.instance,
                "contours": len(self.contours), "snapped_contours": self.n_snapped,
                "self_intersecting_contours": self.n_self_intersecting, "skipped_contours": self.n_skipped,
                "max_plane_distance_mm": round(self.max_plane_distance_mm, 6), "voxels": self.voxels,
                "visible_voxels": self.visible_voxels, "volume_ml": round(self.volume_ml, 4)}


@dataclass(eq=False)
class RTStructImport:
    """What :func:`read_rtstruct` returns: the CT, the label map (with names), lesion instances
    (ids 1..n, or ``None``), every ROI's fate and the warnings."""

    structure: StructureSet
    image: Volume
    geometry: SliceGeometry
    labels: Volume
    lesions: Volume | None
    rois: list[ImportedROI]
    warnings: list[str]
    path: Path | None = None


def _selected(roi, role, rois: Sequence[str] | None) -> bool:
    from medseg.labels import canonical_name

    if rois is None:
        return role.role in ("organ", "lesion")
    wanted = {canonical_name(r) for r in rois}
    return canonical_name(roi.name) in wanted or canonical_name(role.class_name) in wanted


def read_rtstruct(path: str | os.PathLike, dicom: str | os.PathLike | None = None, *, series: str | int | None = None,
                  rois: Sequence[str] | None = None, aliases: Any = None, snap_to_slices: bool = False,
                  plane_tolerance_mm: float = PLANE_TOLERANCE_MM, label_set: Any = None,
                  progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> RTStructImport:
    """Read an RTSTRUCT onto its CT series: label map with names, lesion instances, ROI table.

    Parameters
    ----------
    path : path-like
        The RTSTRUCT file.
    dicom, series
        Where the referenced CT series is (:func:`load_referenced_series`).
    rois : sequence of str, optional
        Import only these ROIs (ROI names or medseg class names, any role). Default: every
        organ and lesion ROI; planning structures (PTV, CTV, body outline, ...) are left out
        because they overlap the anatomy, and reported.
    aliases : path, mapping or AliasTable, optional
        Extra ROI name aliases (:func:`medseg.export.roi_aliases.load_aliases`).
    snap_to_slices : bool
        Put contours that lie off every slice plane on the nearest slice (reported). Default:
        such contours are an error.
    plane_tolerance_mm : float
        How far vertices may lie from their slice plane and still be on it.
    label_set : LabelSet, optional
        Values for known class names (default: medseg's default model's, lesion = 11); other
        classes get the next free values.

    Raises
    ------
    InputError
        Not an RTSTRUCT, wrong or missing series, contours off the slice planes.
    """
    from medseg.export.roi_aliases import load_aliases
    from medseg.labels import DEFAULT_ORGANS, label_colour

    structure = read_structure_set(path)
    image, warnings = load_referenced_series(structure, dicom, series=series, progress=progress, cancel=cancel)
    geometry = dicom_slice_geometry(image)
    table = load_aliases(aliases)
    base = label_set if label_set is not None else DEFAULT_ORGANS.extended(["lesion"])
    off_plane: list = []
    imported: list[ImportedROI] = []
    masks: dict[int, tuple] = {}
    for n, roi in enumerate(structure.rois):
        check_cancel(cancel, "rtstruct import")
        report(progress, n, len(structure.rois), f"rtstruct: {roi.name}")
        role = table.role(roi.name, roi.interpreted_type)
        colour = roi.colour or tuple(int(round(255 * c)) for c in label_colour(role.class_name))
        item = ImportedROI(roi.number, roi.name, role.class_name, role.role, roi.interpreted_type, colour)
        imported.append(item)
        closed = [points for points, kind, _ in roi.contours if not kind or kind in _CLOSED]
        placed = place_contours(closed, geometry, plane_tolerance_mm=plane_tolerance_mm,
                                snap_to_slices=snap_to_slices)
        item.contours, item.n_snapped = placed.contours, placed.snapped
        item.n_self_intersecting = placed.self_intersecting
        item.n_skipped = placed.skipped + len(roi.contours) - len(closed)
        item.max_plane_distance_mm = placed.max_distance_mm
        if not _selected(roi, role, rois):
            item.status = "planning" if role.role == "planning" and rois is None else "not selected"
            continue
        off_plane += [(roi.name, distance, k) for distance, k in placed.off_plane]
        if not item.contours:
            item.status = "empty"
        else:
            masks[len(imported) - 1] = contours_to_mask(item.contours, image.shape, crop=True)
            item.voxels = int(masks[len(imported) - 1][1].sum())
            item.volume_ml = item.voxels * image.voxel_volume_ml
            item.status = "imported" if item.voxels else "no voxels"
    report(progress, len(structure.rois), len(structure.rois), "rtstruct: painting labels")
    if off_plane:
        name, distance, k = max(off_plane, key=lambda t: t[1])
        n_rois = len({o[0] for o in off_plane})
        raise InputError(structure.path, f"{len(off_plane)} contour(s) of {n_rois} ROI(s) lie off the slice planes of "
                         f"series {image.source.series_uid or image.source.path} (up to {distance:.3g} mm, ROI "
                         f"{name!r} near slice k={k}; tolerance {plane_tolerance_mm:g} mm)",
                         f"pass {option('snap_to_slices')} to put each on its nearest slice")
    labels, lesions, label_set = _paint(image, imported, masks, base, warnings)
    warnings += _notes(imported)
    lesion_volume = image.with_array(lesions) if lesions is not None else None
    return RTStructImport(structure, image, geometry, image.with_array(labels, label_set=label_set), lesion_volume,
                          imported, warnings)


def _notes(imported: list[ImportedROI]) -> list[str]:
    """One warning per thing the user should know about an ROI's contours."""
    notes = []
    for item in imported:
        if item.status in ("planning", "not selected"):
            continue
        what = f"ROI {item.name!r} (number {item.number})"
        if item.status == "empty":
            notes.append(f"{what} has no closed contours; skipped")
        elif item.status == "no voxels":
            notes.append(f"{what} encloses no voxel centre; skipped")
        if item.n_snapped:
            notes.append(f"{what}: {item.n_snapped} contour(s) off the slice planes were put on the nearest slice "
                         f"(up to {item.max_plane_distance_mm:.3g} mm away)")
        if item.n_self_intersecting:
            notes.append(f"{what}: {item.n_self_intersecting} self-intersecting contour(s), filled by the even-odd "
                         "rule")
        if item.n_skipped:
            notes.append(f"{what}: {item.n_skipped} contour(s) skipped (open, point, degenerate or outside the series)")
    left_out = [i.name for i in imported if i.status == "planning"]
    if left_out:
        notes.append(f"{len(left_out)} planning structure(s) left out ({', '.join(left_out[:6])}"
                     f"{', ...' if len(left_out) > 6 else ''}); name them with {option('rois')} to import them")
    return notes


def _paint(image: Volume, imported: list[ImportedROI], masks: dict, base, warnings: list[str]):
    """Label map, lesion map and label set from the ROI masks; larger ROIs are painted first, so
    smaller ones (a GTV inside its organ) stay visible where ROIs overlap."""
    from medseg.labels import LabelSet

    known = base
    for item in imported:
        if item.status != "imported":
            continue
        name = "lesion" if item.role == "lesion" else item.class_name
        try:
            item.class_name = known.name_of(known.value_of(name))
        except KeyError:
            known = known.extended([name])
            item.class_name = name
    present = {i.class_name for i in imported if i.status == "imported"}
    label_set = LabelSet([lab for lab in known if lab.value == 0 or lab.name in present])
    values = {lab.name: lab.value for lab in label_set}
    labels = np.zeros(image.shape, dtype=np.uint8 if max(values.values()) < 256 else np.uint16)
    lesion_items = [i for i in imported if i.status == "imported" and i.role == "lesion"]
    for instance, item in enumerate(lesion_items, start=1):
        item.instance = instance
    lesions = np.zeros(image.shape, dtype=np.uint16) if lesion_items else None
    order = sorted(masks, key=lambda n: -imported[n].voxels)
    for n in order:
        box, crop = masks[n]
        item = imported[n]
        labels[box][crop] = values[item.class_name]
        if item.instance:
            lesions[box][crop] = item.instance
    lesion_value = values.get("lesion", -1)
    for n in order:
        box, crop = masks[n]
        item = imported[n]
        under = labels[box][crop]
        shown = lesions[box][crop] == item.instance if item.instance else under == values[item.class_name]
        item.visible_voxels = int(shown.sum())
        lost = item.voxels - item.visible_voxels
        # An organ losing voxels to the lesions inside it is what the export wrote; anything else is news.
        by_others = int(((under != values[item.class_name]) & (under != lesion_value)).sum())
        if lost and (item.instance or by_others):
            warnings.append(f"ROI {item.name!r} overlaps other ROIs in {lost} voxel(s) "
                            f"({100 * lost / item.voxels:.1f} %), which keep them (smaller structures are drawn "
                            "over larger ones)")
    return labels, lesions, label_set


def import_rtstruct(path: str | os.PathLike, output: str | os.PathLike, *, dicom: str | os.PathLike | None = None,
                    save_image: bool = False, plots: bool = False, command: str = "", **options: Any) -> RTStructImport:
    """Read an RTSTRUCT (:func:`read_rtstruct`, same ``options``) and write it as a case
    (:func:`write_import_case`)."""
    result = read_rtstruct(path, dicom, **options)
    write_import_case(result, output, save_image=save_image, plots=plots, command=command,
                      plane_tolerance_mm=options.get("plane_tolerance_mm", PLANE_TOLERANCE_MM),
                      snap_to_slices=bool(options.get("snap_to_slices", False)))
    return result


def write_import_case(result: RTStructImport, output: str | os.PathLike, *, save_image: bool = False,
                      plots: bool = False, command: str = "", **settings: Any) -> Path:
    """Write an import as a case (``kind="import"``) and set ``result.path``.

    The case holds the label map and names, the lesion instances with their table (volumes,
    RECIST axes, HU, organ), and in ``provenance.json`` the RTSTRUCT, the series and every ROI's
    fate (``rtstruct.rois``). ``source_image`` names the CT series folder, so training and the
    napari plugin find the image; ``save_image`` also stores ``image.nii.gz``.
    """
    from medseg.case import input_sha256, sha256_of, write_case
    from medseg.lesions import instances_from_map, lesion_table

    image, structure = result.image, result.structure
    instances = table = None
    if result.lesions is not None:
        instances = instances_from_map(result.lesions)
        table = lesion_table(instances, image=image, organs=result.labels)
    src = image.source
    provenance = {
        "command": command, "source_image": os.path.abspath(src.path), "warnings": result.warnings,
        "input": {"path": os.path.abspath(src.path), "format": src.format, "sha256": input_sha256(image),
                  "series_uid": src.series_uid, "study_uid": src.study_uid,
                  "frame_of_reference_uid": src.frame_of_reference_uid, "modality": image.modality,
                  "shape": list(image.shape), "spacing_mm": [round(float(v), 6) for v in image.spacing],
                  "orientation": image.orientation, "affine_ras": image.affine.tolist()},
        "rtstruct": {"path": str(structure.path.resolve()), "sha256": sha256_of(structure.path),
                     "sop_instance_uid": structure.sop_instance_uid, "label": structure.label, **settings,
                     "rois": [roi.record() for roi in result.rois]},
    }
    result.path = write_case(output, labels=result.labels, provenance=provenance, kind="import", lesions=instances,
                             lesion_table=table, image=image if save_image else None, plots=plots, command=command,
                             inputs=(structure.path, src.path))
    return result.path


def slice_contours(result: RTStructImport, k: int) -> list[dict[str, Any]]:
    """The contours on slice ``k`` as drawn in the file, for a napari Shapes layer.

    Each entry: ``points`` (N, 3) voxel coordinates ``(i, j, k)`` (give the layer
    ``affine=result.image.affine`` so it lies on the image), the ROI ``name`` and its ``colour``
    (RGB 0..1).
    """
    out = []
    for roi in result.rois:
        for contour in roi.contours:
            if contour.k == k:
                points = np.column_stack([contour.points_ij, np.full(len(contour.points_ij), float(k))])
                out.append({"points": points, "name": roi.name, "colour": tuple(c / 255.0 for c in roi.colour)})
    return out
