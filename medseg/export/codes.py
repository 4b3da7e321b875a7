"""SNOMED CT codes for class names: what a DICOM SEG segment *is*, as pure data (no torch, no pydicom).

DICOM SEG, 3D Slicer's terminology columns and OHIF name a segment by three codes: a category
(CID 7150: anatomical structure, tissue, morphologically abnormal structure, physical object), a
type (CID 7151: liver, kidney, lesion, ...) and an optional type modifier (CID 244: left, right).
:func:`codes_for` maps a medseg class name to them:

>>> codes_for("kidney_left").type.meaning, codes_for("kidney_left").modifier.meaning
('Kidney', 'Left')
>>> codes_for("Right Kidney") == codes_for("kidney_right")        # BTCV / AMOS spelling
True
>>> codes_for("my_structure").known, codes_for("my_structure").type.meaning
(False, 'Tissue')

Covered: the shipped default model's classes, every class of TotalSegmentator's ``total`` task
(v2, 117 classes) and of its v1 104-class map used by MONAI's ``wholeBody_ct_segmentation`` bundle,
the BTCV / AMOS / MSD spellings MONAI bundles use, and the lesion names of
:data:`medseg.labels.LESION_NAMES`. An unknown name gets the generic "Tissue" codes and
``known=False``; the exporter then warns, since a SEG reader cannot tell what the segment is.

Where the codes come from: type codes follow TotalSegmentator's published SNOMED mapping
(``resources/totalsegmentator_snomed_mapping.csv``, Apache-2.0), with code meanings as the DICOM
content mapping resource spells them; ``tests/test_dicom_seg_codes.py`` checks every (value,
meaning) pair against pydicom's copy of the DICOM code dictionaries. Two deliberate differences
from that mapping: the left subclavian artery is the generic "Subclavian artery" (36765005) with a
Left modifier, since 29700009 means *right* subclavian artery, and the left atrial appendage is
33626005 "Left auricular appendage". The anatomical-structure category is 123037004, as 3D Slicer,
dcmqi, OHIF and TotalSegmentator write it (pydicom's CID 7150 table still lists the retired
91723000).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "CATEGORIES",
    "LEFT",
    "RIGHT",
    "TISSUE",
    "Code",
    "SegmentCodes",
    "codes_for",
    "known_names",
    "lookup",
]


class Code(NamedTuple):
    """One coded concept: ``value`` in coding scheme ``scheme`` (``"SCT"`` = SNOMED CT)."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class SegmentCodes:
    """The codes that say what a segment is.

    Attributes
    ----------
    category, type : Code
        Segmented property category (CID 7150) and type (CID 7151).
    modifier : Code or None
        Segmented property type modifier: laterality (CID 244).
    region : Code or None
        Anatomic region, for findings whose type does not name the organ ("Neoplasm" in the liver).
    region_modifier : Code or None
        Laterality of the region.
    known : bool
        False when the name was not in the registry and the generic "Tissue" codes were used.
    """

    category: Code
    type: Code
    modifier: Code | None = None
    region: Code | None = None
    region_modifier: Code | None = None
    known: bool = True


LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
CATEGORIES = {
    "A": Code("123037004", "SCT", "Anatomical Structure"),
    "T": Code("85756007", "SCT", "Tissue"),
    "M": Code("49755003", "SCT", "Morphologically Abnormal Structure"),
    "O": Code("260787004", "SCT", "Physical object"),
}
TISSUE = SegmentCodes(CATEGORIES["T"], Code("85756007", "SCT", "Tissue"), known=False)

# One class per line: name | category (A/T/M/O) | type code | type meaning | laterality (L/R) |
# region code + laterality | region meaning. Names are canonical (see medseg.labels.canonical_name).
_TABLE = """
liver|A|10200004|Liver|||
spleen|A|78961009|Spleen|||
kidney_right|A|64033007|Kidney|R||
kidney_left|A|64033007|Kidney|L||
kidney|A|64033007|Kidney|||
stomach|A|69695003|Stomach|||
pancreas|A|15776009|Pancreas|||
aorta|A|15825003|Aorta|||
lung_right|A|39607008|Lung|R||
lung_left|A|39607008|Lung|L||
lung|A|39607008|Lung|||
bone|T|3138006|Bone|||
gallbladder|A|28231008|Gallbladder|||
esophagus|A|32849002|Esophagus|||
trachea|A|44567001|Trachea|||
thyroid_gland|A|69748006|Thyroid|||
small_bowel|A|30315005|Small intestine|||
duodenum|A|38848004|Duodenum|||
colon|A|71854001|Colon|||
urinary_bladder|A|89837001|Bladder|||
prostate|A|41216001|Prostate|||
adrenal_gland_right|A|23451007|Adrenal gland|R||
adrenal_gland_left|A|23451007|Adrenal gland|L||
adrenal_gland|A|23451007|Adrenal gland|||
lung_upper_lobe_left|A|45653009|Upper lobe of lung|L||
lung_lower_lobe_left|A|90572001|Lower lobe of lung|L||
lung_upper_lobe_right|A|45653009|Upper lobe of lung|R||
lung_middle_lobe_right|A|72481006|Middle lobe of right lung|||
lung_lower_lobe_right|A|90572001|Lower lobe of lung|R||
kidney_cyst_left|M|367643001|Cyst||64033007L|Kidney
kidney_cyst_right|M|367643001|Cyst||64033007R|Kidney
sacrum|A|54735007|Sacrum|||
vertebrae_s1|A|65985001|S1 vertebra|||
vertebrae_l5|A|49668003|L5 vertebra|||
vertebrae_l4|A|11994002|L4 vertebra|||
vertebrae_l3|A|36470004|L3 vertebra|||
vertebrae_l2|A|14293000|L2 vertebra|||
vertebrae_l1|A|66794005|L1 vertebra|||
vertebrae_t12|A|23215003|T12 vertebra|||
vertebrae_t11|A|12989004|T11 vertebra|||
vertebrae_t10|A|7610001|T10 vertebra|||
vertebrae_t9|A|82687006|T9 vertebra|||
vertebrae_t8|A|11068009|T8 vertebra|||
vertebrae_t7|A|62487009|T7 vertebra|||
vertebrae_t6|A|45296009|T6 vertebra|||
vertebrae_t5|A|56401006|T5 vertebra|||
vertebrae_t4|A|73071006|T4 vertebra|||
vertebrae_t3|A|1626008|T3 vertebra|||
vertebrae_t2|A|53733008|T2 vertebra|||
vertebrae_t1|A|64864005|T1 vertebra|||
vertebrae_c7|A|87391001|C7 vertebra|||
vertebrae_c6|A|36054005|C6 vertebra|||
vertebrae_c5|A|36978003|C5 vertebra|||
vertebrae_c4|A|5329002|C4 vertebra|||
vertebrae_c3|A|113205007|C3 vertebra|||
vertebrae_c2|A|39976000|C2 vertebra|||
vertebrae_c1|A|14806007|C1 vertebra|||
vertebrae|A|51282000|Vertebra|||
heart|A|80891009|Heart|||
heart_myocardium|A|74281007|Myocardium|||
heart_atrium_left|A|82471001|Left atrium|||
heart_atrium_right|A|73829009|Right atrium|||
heart_ventricle_left|A|87878005|Left ventricle|||
heart_ventricle_right|A|53085002|Right ventricle|||
pulmonary_artery|A|81040000|Pulmonary artery|||
pulmonary_vein|A|122972007|Pulmonary vein|||
brachiocephalic_trunk|A|12691009|Brachiocephalic trunk|||
subclavian_artery_right|A|36765005|Subclavian artery|R||
subclavian_artery_left|A|36765005|Subclavian artery|L||
common_carotid_artery_right|A|32062004|Common carotid artery|R||
common_carotid_artery_left|A|32062004|Common carotid artery|L||
brachiocephalic_vein_left|A|8887007|Brachiocephalic vein|L||
brachiocephalic_vein_right|A|8887007|Brachiocephalic vein|R||
atrial_appendage_left|A|33626005|Left auricular appendage|||
superior_vena_cava|A|48345005|Superior vena cava|||
inferior_vena_cava|A|64131007|Inferior vena cava|||
portal_vein_and_splenic_vein|A|110765007|Portal vein and splenic vein|||
iliac_artery_left|A|73634005|Common iliac artery|L||
iliac_artery_right|A|73634005|Common iliac artery|R||
iliac_vena_left|A|46027005|Common iliac vein|L||
iliac_vena_right|A|46027005|Common iliac vein|R||
humerus_left|A|85050009|Humerus|L||
humerus_right|A|85050009|Humerus|R||
scapula_left|A|79601000|Scapula|L||
scapula_right|A|79601000|Scapula|R||
clavicula_left|A|51299004|Clavicle|L||
clavicula_right|A|51299004|Clavicle|R||
femur_left|A|71341001|Femur|L||
femur_right|A|71341001|Femur|R||
hip_left|A|29836001|Hip|L||
hip_right|A|29836001|Hip|R||
spinal_cord|A|2748008|Spinal cord|||
gluteus_maximus_left|A|181674001|Gluteus maximus muscle|L||
gluteus_maximus_right|A|181674001|Gluteus maximus muscle|R||
gluteus_medius_left|A|78333006|Gluteus medius muscle|L||
gluteus_medius_right|A|78333006|Gluteus medius muscle|R||
gluteus_minimus_left|A|75297007|Gluteus minimus muscle|L||
gluteus_minimus_right|A|75297007|Gluteus minimus muscle|R||
autochthon_left|A|244849004|Deep muscle of back|L||
autochthon_right|A|244849004|Deep muscle of back|R||
iliopsoas_left|A|68455001|Iliopsoas muscle|L||
iliopsoas_right|A|68455001|Iliopsoas muscle|R||
brain|A|12738006|Brain|||
skull|A|89546000|Skull|||
face|A|89545001|Face|||
rib_left_1|A|48535007|First rib|L||
rib_left_2|A|78247007|Second rib|L||
rib_left_3|A|25888004|Third rib|L||
rib_left_4|A|25523003|Fourth rib|L||
rib_left_5|A|15339008|Fifth rib|L||
rib_left_6|A|59558009|Sixth rib|L||
rib_left_7|A|24915002|Seventh rib|L||
rib_left_8|A|5953002|Eighth rib|L||
rib_left_9|A|22565002|Ninth rib|L||
rib_left_10|A|77644006|Tenth rib|L||
rib_left_11|A|58830002|Eleventh rib|L||
rib_left_12|A|43993008|Twelfth rib|L||
rib_right_1|A|48535007|First rib|R||
rib_right_2|A|78247007|Second rib|R||
rib_right_3|A|25888004|Third rib|R||
rib_right_4|A|25523003|Fourth rib|R||
rib_right_5|A|15339008|Fifth rib|R||
rib_right_6|A|59558009|Sixth rib|R||
rib_right_7|A|24915002|Seventh rib|R||
rib_right_8|A|5953002|Eighth rib|R||
rib_right_9|A|22565002|Ninth rib|R||
rib_right_10|A|77644006|Tenth rib|R||
rib_right_11|A|58830002|Eleventh rib|R||
rib_right_12|A|43993008|Twelfth rib|R||
ribs|A|113197003|Rib|||
sternum|A|56873002|Sternum|||
costal_cartilages|A|50016007|Costal cartilage|||
portal_vein|A|32764006|Portal vein|||
splenic_vein|A|35819009|Splenic vein|||
liver_vessels|A|59820001|Blood vessel||10200004|Liver
skeletal_muscle|A|127954009|Skeletal muscle|||
subcutaneous_fat|T|67769002|Subcutaneous fatty tissue|||
torso_fat|T|55603005|Fat|||
body|A|38266002|Entire body|||
lesion|M|52988006|Lesion|||
tumor|M|108369006|Neoplasm|||
mass|M|4147007|Mass|||
nodule|M|27925004|Nodule|||
cyst|M|367643001|Cyst|||
metastasis|M|128462008|Metastasis|||
liver_tumor|M|108369006|Neoplasm||10200004|Liver
lung_tumor|M|108369006|Neoplasm||39607008|Lung
kidney_tumor|M|108369006|Neoplasm||64033007|Kidney
pancreas_tumor|M|108369006|Neoplasm||15776009|Pancreas
lung_nodules|M|27925004|Nodule||39607008|Lung
pleural_effusion|M|60046008|Pleural effusion|||
pericardial_effusion|M|41699000|Effusion||25489000|Pericardial cavity
"""

#: Other spellings of the same classes (BTCV, AMOS, MSD, MONAI bundles, British English, plurals).
_ALIASES = {
    "kideny_left": "kidney_left",  # BTCV's own typo ("Left Kideny"), kept by MONAI's bundle
    "ivc": "inferior_vena_cava", "postcava": "inferior_vena_cava",
    "postcava_inferior_vena_cava": "inferior_vena_cava", "vena_cava_inferior": "inferior_vena_cava",
    "portal_and_splenic_veins": "portal_vein_and_splenic_vein", "portal_vein_splenic_vein": "portal_vein_and_splenic_vein",
    "gall_bladder": "gallbladder", "bladder": "urinary_bladder", "oesophagus": "esophagus",
    "thyroid": "thyroid_gland", "adrenal": "adrenal_gland", "small_intestine": "small_bowel",
    "lesions": "lesion", "lesion_class": "lesion", "tumour": "tumor", "tumors": "tumor", "tumours": "tumor",
    "neoplasm": "tumor", "gtv": "tumor", "nodules": "nodule", "metastases": "metastasis",
    "liver_tumour": "liver_tumor", "lung_tumour": "lung_tumor", "kidney_tumour": "kidney_tumor",
    "pancreas_tumour": "pancreas_tumor", "pancreatic_tumor": "pancreas_tumor", "hepatic_tumor": "liver_tumor",
    "bones": "bone", "skeleton": "bone", "lungs": "lung", "kidneys": "kidney", "rib": "ribs",
    "vertebra": "vertebrae", "spine": "vertebrae",
    "myocardium": "heart_myocardium", "hepatic_vessels": "liver_vessels", "hepatic_vessel": "liver_vessels",
}
_SIDES = {"l": "left", "left": "left", "r": "right", "right": "right"}


def _parse(table: str) -> dict[str, SegmentCodes]:
    out = {}
    for line in table.strip().splitlines():
        name, category, value, meaning, side, region, region_meaning = line.split("|")
        region_code = region.rstrip("LR")
        region_side = region[len(region_code):]
        out[name] = SegmentCodes(
            category=CATEGORIES[category], type=Code(value, "SCT", meaning),
            modifier={"L": LEFT, "R": RIGHT}.get(side),
            region=Code(region_code, "SCT", region_meaning) if region_code else None,
            region_modifier={"L": LEFT, "R": RIGHT}.get(region_side))
    return out


_REGISTRY = _parse(_TABLE)


def _key(name: str) -> str:
    # The same normalisation as medseg.labels.canonical_name (kept here so this module stays
    # import-free): lower case, any run of non-alphanumerics becomes one "_".
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def lookup(name: str) -> SegmentCodes | None:
    """The codes of a class name, or ``None`` when the registry does not know it.

    Matching ignores case and separators, knows the aliases above, and reads the side of a
    paired organ wherever it stands: ``"Right Kidney"``, ``"kidney_R"``, ``"r_kidney"`` are
    ``kidney_right``.
    """
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    words = key.split("_")
    sides = [w for w in words if w in _SIDES]
    if len(sides) == 1:
        rest = "_".join(w for w in words if w not in _SIDES)
        rest = _ALIASES.get(rest, rest)
        side = _SIDES[sides[0]]
        for candidate in (f"{rest}_{side}", _ALIASES.get(f"{rest}_{side}", "")):
            if candidate in _REGISTRY:
                return _REGISTRY[candidate]
        base = _REGISTRY.get(rest)
        if base is not None and base.modifier is None and base.region is None:
            return SegmentCodes(base.category, base.type, LEFT if side == "left" else RIGHT)
    return None


def codes_for(name: str) -> SegmentCodes:
    """The codes of a class name; the generic "Tissue" codes (``known=False``) when unknown."""
    return lookup(name) or TISSUE


def known_names() -> tuple[str, ...]:
    """Every canonical class name in the registry (aliases not included)."""
    return tuple(_REGISTRY)
