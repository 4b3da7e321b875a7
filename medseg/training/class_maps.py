"""Which source structure becomes which medseg class, and which tissue it is made of (pure data).

The one place where other label schemes meet medseg's default classes
(:data:`medseg.labels.DEFAULT_ORGANS`). Keys are canonical structure names
(:func:`medseg.labels.canonical_name`), so TotalSegmentator v2 ``total`` names
(``lung_upper_lobe_left``), AMOS names (``right kidney`` -> ``right_kidney``) and MSD-style
names all meet in one table. Each entry is ``(default_class, tissue)``:

``default_class``
    A name in ``DEFAULT_ORGANS`` (the training target) or ``None`` (background for the
    default model: the structure is drawn in synthetic images but not segmented).
``tissue``
    What the structure looks like on CT, a key of :data:`medseg.training.synth.TISSUES`;
    used only to generate images from label maps.

No code lives here beyond two lookups; TotalSegmentator numbering and AMOS numbering are
resolved through each data set's own value -> name table (``totalseg_total_classes.json``,
``amos_labels.json``), never by hard-coded ids.
"""

from __future__ import annotations

import re

from medseg.labels import canonical_name

__all__ = ["STRUCTURES", "ALIASES", "default_class_of", "tissue_of", "UNKNOWN_TISSUE"]

#: Tissue used for a labelled structure that is not in :data:`STRUCTURES`.
UNKNOWN_TISSUE = "soft"

_BONES = ("sacrum", "humerus_left", "humerus_right", "scapula_left", "scapula_right",
          "clavicula_left", "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right",
          "skull", "sternum")

#: canonical structure name -> (default class or None, tissue)
STRUCTURES: dict[str, tuple[str | None, str]] = {
    # Default organs (TotalSegmentator v2 names).
    "liver": ("liver", "liver"),
    "spleen": ("spleen", "spleen"),
    "kidney_right": ("kidney_right", "kidney"),
    "kidney_left": ("kidney_left", "kidney"),
    "stomach": ("stomach", "stomach"),
    "pancreas": ("pancreas", "pancreas"),
    "aorta": ("aorta", "artery"),
    "lung_upper_lobe_right": ("lung_right", "lung"),
    "lung_middle_lobe_right": ("lung_right", "lung"),
    "lung_lower_lobe_right": ("lung_right", "lung"),
    "lung_upper_lobe_left": ("lung_left", "lung"),
    "lung_lower_lobe_left": ("lung_left", "lung"),
    "lung_right": ("lung_right", "lung"),
    "lung_left": ("lung_left", "lung"),
    "bone": ("bone", "bone"),
    **{name: ("bone", "bone") for name in _BONES},
    # Cysts inside a kidney belong to the kidney as an organ (TotalSegmentator keeps them apart).
    "kidney_cyst_left": ("kidney_left", "fluid"),
    "kidney_cyst_right": ("kidney_right", "fluid"),
    "lesion": ("lesion", "lesion"),
    # Drawn but not segmented by the default model.
    "gallbladder": (None, "fluid"),
    "urinary_bladder": (None, "fluid"),
    "adrenal_gland_right": (None, "adrenal"),
    "adrenal_gland_left": (None, "adrenal"),
    "esophagus": (None, "esophagus"),
    "trachea": (None, "airway"),
    "thyroid_gland": (None, "thyroid"),
    "small_bowel": (None, "bowel"),
    "duodenum": (None, "bowel"),
    "colon": (None, "colon"),
    "prostate": (None, "prostate"),
    "prostate_uterus": (None, "prostate"),
    "heart": (None, "heart"),
    "pulmonary_vein": (None, "vein"),
    "brachiocephalic_trunk": (None, "artery"),
    "subclavian_artery_right": (None, "artery"),
    "subclavian_artery_left": (None, "artery"),
    "common_carotid_artery_right": (None, "artery"),
    "common_carotid_artery_left": (None, "artery"),
    "iliac_artery_left": (None, "artery"),
    "iliac_artery_right": (None, "artery"),
    "brachiocephalic_vein_left": (None, "vein"),
    "brachiocephalic_vein_right": (None, "vein"),
    "atrial_appendage_left": (None, "heart"),
    "superior_vena_cava": (None, "vein"),
    "inferior_vena_cava": (None, "vein"),
    "iliac_vena_left": (None, "vein"),
    "iliac_vena_right": (None, "vein"),
    "portal_vein_and_splenic_vein": (None, "portal"),
    "spinal_cord": (None, "cord"),
    "brain": (None, "brain"),
    "costal_cartilages": (None, "cartilage"),
    **{f"{muscle}_{side}": (None, "muscle") for side in ("left", "right")
       for muscle in ("gluteus_maximus", "gluteus_medius", "gluteus_minimus", "autochthon", "iliopsoas")},
}
# Vertebrae and ribs by pattern rather than 50 more lines of the same entry.
STRUCTURES.update({f"vertebrae_{v}": ("bone", "bone") for v in
                   ["S1"] + [f"L{i}" for i in range(1, 6)] + [f"T{i}" for i in range(1, 13)]
                   + [f"C{i}" for i in range(1, 8)]})
STRUCTURES.update({f"rib_{side}_{i}": ("bone", "bone") for side in ("left", "right") for i in range(1, 13)})
STRUCTURES = {canonical_name(k): v for k, v in STRUCTURES.items()}

#: Other spellings of the same structure (AMOS, BTCV, MSD, the phantom) -> a key of STRUCTURES.
ALIASES: dict[str, str] = {canonical_name(k): canonical_name(v) for k, v in {
    "right kidney": "kidney_right",
    "left kidney": "kidney_left",
    "gall bladder": "gallbladder",
    "postcava (inferior vena cava)": "inferior_vena_cava",
    "postcava": "inferior_vena_cava",
    "ivc": "inferior_vena_cava",
    "right adrenal gland": "adrenal_gland_right",
    "left adrenal gland": "adrenal_gland_left",
    "bladder": "urinary_bladder",
    "prostate/uterus": "prostate_uterus",
    "arota": "aorta",  # AMOS's own spelling
    "right lung": "lung_right",
    "left lung": "lung_left",
    "bones": "bone",
    "tumor": "lesion",
    "tumour": "lesion",
}.items()}


def _key(name: str) -> str:
    key = canonical_name(name)
    return ALIASES.get(key, key)


def default_class_of(name: str) -> str | None:
    """The ``DEFAULT_ORGANS`` class a structure named ``name`` counts as, or None (background).

    >>> default_class_of("lung_middle_lobe_right"), default_class_of("Right Kidney")
    ('lung_right', 'kidney_right')
    >>> default_class_of("gallbladder") is None
    True
    """
    entry = STRUCTURES.get(_key(name))
    return entry[0] if entry else None


def tissue_of(name: str) -> str:
    """The tissue a structure is drawn with in synthetic CT (``"soft"`` when unknown)."""
    entry = STRUCTURES.get(_key(name))
    if entry:
        return entry[1]
    if re.match(r"^(vertebra|rib|bone)", _key(name)):
        return "bone"
    return UNKNOWN_TISSUE
