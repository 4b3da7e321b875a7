"""The segments of a DICOM SEG as medseg reads them: labels, codes, colours, and medseg's own values.

A SEG medseg wrote describes in each segment which label value (and lesion id) it holds
(``class liver, label value 1 [medseg]``, ``lesion 3 of class lesion, label value 11, instance 3
[medseg]``; see :mod:`medseg.export._seg_segments`); those values come back. Any other SEG's
segments become classes whose values are their segment numbers, named by their labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medseg.labels import LabelSet, canonical_name

__all__ = ["MEDSEG_MARK", "SegmentInfo", "describe_segments", "label_set_of"]

#: How medseg's exporter marks its segment descriptions (see medseg.export.dicom_seg).
MEDSEG_MARK = "[medseg]"


@dataclass(frozen=True)
class SegmentInfo:
    """One segment of a SEG, as read.

    ``kind`` is ``"class"`` (its voxels get label ``value`` in the class map) or ``"lesion"``
    (instance ``lesion_id`` of the lesion map; with ``value`` when its voxels are also that class).
    Codes are ``(value, scheme, meaning)`` tuples; ``colour`` is RGB in 0..1 or ``None``.
    """

    number: int
    label: str
    kind: str
    value: int | None
    lesion_id: int | None = None
    class_name: str = ""
    category: tuple[str, str, str] | None = None
    type: tuple[str, str, str] | None = None
    modifier: tuple[str, str, str] | None = None
    algorithm_type: str = ""
    algorithm_name: str = ""
    tracking_id: str = ""
    tracking_uid: str = ""
    colour: tuple[float, float, float] | None = None
    voxels: int = 0


def describe_segments(seg) -> list[SegmentInfo]:
    """Segments with medseg's label values and lesion ids where the SEG is medseg's own."""
    from highdicom.color import CIELabColor

    ours = str(seg.get("Manufacturer", "")) == "medseg"
    background = seg.get("PixelPaddingValue") if str(seg.SegmentationType) == "LABELMAP" else None
    out = []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        if str(seg.SegmentationType) == "LABELMAP" and (number == 0 or number == background):
            continue  # the LABELMAP IOD's background segment
        text = str(item.get("SegmentDescription", ""))
        label = str(item.get("SegmentLabel", "")) or f"segment {number}"
        value, lesion_id, kind, class_name = number, None, "class", label
        if ours and MEDSEG_MARK in text:
            found_value = re.search(r"label value (\d+)", text)
            found_lesion = re.search(r"instance (\d+)", text)
            found_class = re.search(r"of class (.*), label value", text)
            value = int(found_value.group(1)) if found_value else None
            if found_lesion:
                kind, lesion_id = "lesion", int(found_lesion.group(1))
                class_name = found_class.group(1) if found_class else ""
        types = item.get("SegmentedPropertyTypeCodeSequence") or [None]
        modifier = (types[0].get("SegmentedPropertyTypeModifierCodeSequence") or [None])[0] if types[0] else None
        algorithm = (item.get("SegmentationAlgorithmIdentificationSequence") or [None])[0]
        colour = None
        if "RecommendedDisplayCIELabValue" in item:
            rgb = CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb(clip=True)
            colour = tuple(round(c / 255.0, 4) for c in rgb)
        out.append(SegmentInfo(
            number, label, kind, value, lesion_id, class_name,
            _code_item((item.get("SegmentedPropertyCategoryCodeSequence") or [None])[0]), _code_item(types[0]),
            _code_item(modifier), str(item.get("SegmentAlgorithmType", "")),
            str(algorithm.get("AlgorithmName", "")) if algorithm else "", str(item.get("TrackingID", "")),
            str(item.get("TrackingUID", "")), colour))
    return out


def _code_item(item) -> tuple[str, str, str] | None:
    if item is None:
        return None
    return (str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", "")),
            str(item.get("CodeMeaning", "")))


def label_set_of(segments: list[SegmentInfo], values: list[int], extra: dict[int, str] | None = None) -> LabelSet:
    """value -> segment label; a repeated name gets its segment number, so every class stays distinct."""
    table: dict[int, str] = {}
    used: set[str] = {"background"}
    entries = [*((s.label, s.number, v) for s, v in zip(segments, values)),
               *((name, value, value) for value, name in (extra or {}).items())]
    for name, number, value in entries:
        if value in table:
            continue
        if canonical_name(name) in used:
            name = f"{name} (segment {number})"
        used.add(canonical_name(name))
        table[value] = name
    return LabelSet({0: "background", **table})
