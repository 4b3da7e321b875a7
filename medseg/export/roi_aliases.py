"""ROI names <-> medseg class names, and ROI interpreted types: editable data plus two lookups.

Structure sets name their ROIs the way a clinic or a planning system likes ("Lung L",
"Kidney_R", "GTV-1", "BODY"); medseg names classes in lower case with ``_`` (``lung_left``,
``kidney_right``, ``lesion``). The tables below are pure data: add a line to teach medseg a
name, or give a JSON file of the same shape (``aliases=`` in the API, ``--aliases`` in the CLI):

.. code-block:: json

    {"aliases": {"liver": ["Leber", "LIV"]},
     "lesion_patterns": ["^ln_\\\\d+$"],
     "planning_patterns": ["^opt_"],
     "types": {"spinal_cord": "AVOIDANCE"}}

Names are compared after :func:`medseg.labels.canonical_name` (case and separators ignored), so
``"Lung L"``, ``"LUNG_L"`` and ``"lung-l"`` are one entry. Patterns are regular expressions on
that canonical form. A name no table knows keeps its canonical form, with the side suffixes
TG-263 uses spelled out (``Parotid_L`` -> ``parotid_left``); a name already written the medseg
way (``vertebrae_T12``) is kept as it is.

Each ROI gets a *role* on import: ``"lesion"`` (a GTV or a name that says tumour: one lesion
instance per ROI), ``"organ"`` (anatomy: a class of the label map) or ``"planning"`` (PTV, CTV,
body outline, couch, rings, ...: margins and helpers that overlap the anatomy; left out of the
label map unless asked for by name).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from medseg.labels import LESION_NAMES, canonical_name

__all__ = ["ALIASES", "LESION_PATTERNS", "PLANNING_PATTERNS", "PLANNING_TYPES", "EXPORT_TYPES", "AliasTable",
           "RoiRole", "load_aliases"]

#: medseg class name -> ROI names seen in structure sets (TG-263 and common vendor spellings).
ALIASES: dict[str, tuple[str, ...]] = {
    "liver": ("Liver", "LIV"),
    "spleen": ("Spleen",),
    "kidney_right": ("Kidney_R", "Kidney R", "R Kidney", "Right Kidney", "RKidney", "Kidney_Rt", "Kidney RT",
                     "Kidney_Right"),
    "kidney_left": ("Kidney_L", "Kidney L", "L Kidney", "Left Kidney", "LKidney", "Kidney_Lt", "Kidney LT",
                    "Kidney_Left"),
    "stomach": ("Stomach",),
    "pancreas": ("Pancreas",),
    "aorta": ("Aorta", "A_Aorta", "GreatVes_Aorta"),
    "lung_right": ("Lung_R", "Lung R", "R Lung", "Right Lung", "RLung", "Lung_Rt", "Lung RT", "Lung_Right"),
    "lung_left": ("Lung_L", "Lung L", "L Lung", "Left Lung", "LLung", "Lung_Lt", "Lung LT", "Lung_Left"),
    "lungs": ("Lungs", "Lung_Total", "Lung Total", "Lungs_Total", "Total Lung", "Lung_Both", "Lung"),
    "bone": ("Bone", "Bones", "Skeleton"),
    "heart": ("Heart", "Cor"),
    "esophagus": ("Esophagus", "Oesophagus", "Esoph"),
    "spinal_cord": ("SpinalCord", "Spinal Cord", "Spinal_Cord", "Cord", "Medulla"),
    "trachea": ("Trachea",),
    "bladder": ("Bladder", "Urinary Bladder"),
    "rectum": ("Rectum",),
    "prostate": ("Prostate",),
    "brain": ("Brain",),
    "brainstem": ("BrainStem", "Brain Stem", "Brainstem"),
    "gallbladder": ("Gallbladder", "Gall Bladder"),
    "duodenum": ("Duodenum",),
    "bowel": ("Bowel", "Bowel_Bag", "BowelBag", "Bowel Bag", "Intestine"),
    "body": ("BODY", "External", "Skin", "Outline", "Patient", "Body_Contour", "Ext"),
}

#: Canonical ROI names matching one of these are lesions (one instance per ROI).
LESION_PATTERNS: tuple[str, ...] = (
    r"^i?gtv.*",
    r"^(lesion|lesions|tumou?r|tumou?rs|nodule|nodules|mass|met|mets|metastas[ie]s)(_?\d+[a-z]?)?$",
    r"^(liver|lung|kidney|brain|bone)_(tumou?r|lesion|met|mets|metastas[ie]s)(_?\d+)?$",
)

#: Canonical ROI names matching one of these are planning structures (left out by default).
PLANNING_PATTERNS: tuple[str, ...] = (
    r"^(ptv|ctv|itv|prv|opt|ring|avoid|z|zz|x|dose|iso|isocent(er|re)|couch|table|marker|bolus|support)(_|\d|$).*",
    r".*_prv\d*$", r".*_(ptv|ctv|itv)\d*$", r"^(body|external|skin|outline|patient|ext)$",
)

#: RTROIInterpretedType values that mark planning structures on import.
PLANNING_TYPES = frozenset({
    "PTV", "CTV", "ITV", "EXTERNAL", "AVOIDANCE", "TREATED_VOLUME", "IRRAD_VOLUME", "DOSE_REGION", "CONTROL",
    "DOSE_MEASUREMENT", "BOLUS", "SUPPORT", "FIXATION", "MARKER", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT",
    "CAVITY", "BRACHY_CHANNEL", "BRACHY_ACCESSORY", "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD",
})

#: medseg class name -> RTROIInterpretedType on export (other classes: ORGAN; lesions: GTV).
EXPORT_TYPES: dict[str, str] = {"body": "EXTERNAL", "skin": "EXTERNAL", "external": "EXTERNAL"}

#: Class names (canonical) exported as AVOIDANCE: planning risk volumes and avoidance helpers.
AVOIDANCE_PATTERNS: tuple[str, ...] = (r".*_prv\d*$", r"^prv_.*", r"^avoid.*", r"^ring.*")

_SIDES = {"l": "left", "lt": "left", "left": "left", "r": "right", "rt": "right", "right": "right"}


@dataclass(frozen=True)
class RoiRole:
    """What an ROI becomes on import: ``class_name`` in the label map and its ``role``
    (``"organ"``, ``"lesion"`` or ``"planning"``); ``reason`` says which rule decided."""

    class_name: str
    role: str
    reason: str


@dataclass(frozen=True)
class AliasTable:
    """The lookups, built from the module's tables and optional user additions (which win)."""

    aliases: Mapping[str, str] = field(default_factory=dict)  # canonical ROI name -> class name
    lesion_patterns: tuple[str, ...] = LESION_PATTERNS
    planning_patterns: tuple[str, ...] = PLANNING_PATTERNS
    types: Mapping[str, str] = field(default_factory=dict)  # class name -> interpreted type

    def class_name(self, roi_name: str) -> str:
        """The medseg class name for an ROI name (its canonical form when no table knows it)."""
        key = canonical_name(roi_name) or "roi"
        if key in self.aliases:
            return self.aliases[key]
        words = key.split("_")
        if len(words) > 1 and words[-1] in _SIDES:  # Parotid_L -> parotid_left
            return "_".join(words[:-1] + [_SIDES[words[-1]]])
        if len(words) > 1 and words[0] in _SIDES:  # Left Parotid -> parotid_left
            return "_".join(words[1:] + [_SIDES[words[0]]])
        if re.fullmatch(r"[a-z][a-z0-9]*(_[A-Za-z0-9]+)*", roi_name.strip()):
            return roi_name.strip()  # already a medseg-style name (vertebrae_T12): kept as written
        return key

    def role(self, roi_name: str, interpreted_type: str = "") -> RoiRole:
        """Class and role of an ROI from its name and RTROIInterpretedType."""
        key = canonical_name(roi_name)
        kind = (interpreted_type or "").strip().upper()
        if kind == "GTV":
            return RoiRole("lesion", "lesion", "interpreted type GTV")
        if any(re.match(p, key) for p in self.lesion_patterns):
            return RoiRole("lesion", "lesion", "name")
        if key in self.aliases:
            name = self.aliases[key]
            return RoiRole(name, "planning" if name == "body" else "organ", "alias table")
        if kind in PLANNING_TYPES:
            return RoiRole(self.class_name(roi_name), "planning", f"interpreted type {kind}")
        if any(re.match(p, key) for p in self.planning_patterns):
            return RoiRole(self.class_name(roi_name), "planning", "name")
        return RoiRole(self.class_name(roi_name), "organ", "name")

    def interpreted_type(self, class_name: str, *, lesion: bool = False) -> str:
        """RTROIInterpretedType to export a class with: GTV, ORGAN, EXTERNAL or AVOIDANCE."""
        key = canonical_name(class_name)
        if key in self.types:
            return self.types[key]
        if lesion or key in LESION_NAMES:
            return "GTV"
        if key in EXPORT_TYPES:
            return EXPORT_TYPES[key]
        if any(re.match(p, key) for p in AVOIDANCE_PATTERNS):
            return "AVOIDANCE"
        return "ORGAN"


def _built_in() -> dict[str, str]:
    table = {}
    for name, spellings in ALIASES.items():
        table[canonical_name(name)] = name
        for spelling in spellings:
            table[canonical_name(spelling)] = name
    return table


def load_aliases(extra: str | os.PathLike | Mapping | AliasTable | None = None) -> AliasTable:
    """The alias table, with a user's JSON file or mapping (module docstring) on top.

    Raises
    ------
    InputError
        The file cannot be read or has another shape.
    """
    from medseg.errors import InputError

    if isinstance(extra, AliasTable):
        return extra
    aliases = _built_in()
    if extra is None:
        return AliasTable(aliases)
    where = "aliases" if isinstance(extra, Mapping) else os.fspath(extra)
    data = extra
    if not isinstance(extra, Mapping):
        try:
            data = json.loads(Path(extra).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(where, "does not exist", "give a JSON alias file") from exc
        except (OSError, ValueError) as exc:
            raise InputError(where, f"cannot be read as JSON ({exc})", "fix the file") from exc
    hint = 'write it as {"aliases": {"liver": ["Leber"]}, "types": {"spinal_cord": "AVOIDANCE"}}'
    known = {"aliases", "lesion_patterns", "planning_patterns", "types"}
    unknown = set(map(str, data)) - known if isinstance(data, Mapping) else {"(not an object)"}
    if unknown:
        raise InputError(where, f"has unknown keys {sorted(unknown)}", hint)
    try:
        for name, spellings in dict(data.get("aliases", {})).items():
            for spelling in [name, *([spellings] if isinstance(spellings, str) else list(spellings))]:
                aliases[canonical_name(str(spelling))] = str(name)
        lesion = tuple(str(p) for p in data.get("lesion_patterns", ())) + LESION_PATTERNS
        planning = tuple(str(p) for p in data.get("planning_patterns", ())) + PLANNING_PATTERNS
        for pattern in lesion + planning:
            re.compile(pattern)
        types = {canonical_name(str(k)): str(v).upper() for k, v in dict(data.get("types", {})).items()}
    except (TypeError, ValueError, re.error) as exc:
        raise InputError(where, f"is not an alias table ({exc})", hint) from exc
    return AliasTable(aliases, lesion, planning, types)
