"""The SNOMED CT registry for segment codes: every code checked against pydicom's DICOM dictionaries,
every class of the default model, TotalSegmentator and the MONAI bundles known, and no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest

from medseg.export.codes import (
    _REGISTRY,
    CATEGORIES,
    TISSUE,
    codes_for,
    known_names,
    lookup,
)
from medseg.labels import DEFAULT_ORGANS, LESION_NAMES

#: Codes pydicom's dictionary (DICOM PS3.16 context groups) does not hold, each checked by hand
#: against TotalSegmentator's published SNOMED mapping; a new code must be added here knowingly.
NOT_IN_PYDICOM = {
    "65985001", "74281007", "110765007", "181674001", "78333006", "75297007", "244849004", "68455001",
    "48535007", "78247007", "25888004", "25523003", "15339008", "59558009", "24915002", "5953002", "22565002",
    "77644006", "58830002", "43993008", "67769002",
}


def _pydicom_meanings() -> dict[str, set[str]]:
    from pydicom.sr._concepts_dict import concepts

    meanings: dict[str, set[str]] = defaultdict(set)
    for entries in concepts["SCT"].values():
        for value, (meaning, _) in entries.items():
            meanings[value].add(meaning.lower())
    return meanings


def test_every_code_value_and_meaning_is_one_dicom_knows():
    meanings = _pydicom_meanings()
    unknown = set()
    for name, codes in _REGISTRY.items():
        for code in (codes.category, codes.type, codes.modifier, codes.region, codes.region_modifier):
            if code is None:
                continue
            assert code.scheme == "SCT", name
            if code.value == "123037004":  # pydicom: "Body structure"; Slicer, dcmqi, OHIF: "Anatomical Structure"
                assert code.meaning == "Anatomical Structure"
            elif code.value in meanings:
                assert code.meaning.lower() in meanings[code.value], (name, code)
            else:
                unknown.add(code.value)
    assert unknown == NOT_IN_PYDICOM, (sorted(unknown - NOT_IN_PYDICOM), sorted(NOT_IN_PYDICOM - unknown))
    assert "29700009" not in {c.type.value for c in _REGISTRY.values()}  # that one means *right* subclavian


def test_categories_are_segmentation_property_categories():
    assert {c.meaning for c in CATEGORIES.values()} == {"Anatomical Structure", "Tissue",
                                                        "Morphologically Abnormal Structure", "Physical object"}
    assert codes_for("liver").category == CATEGORIES["A"] and codes_for("lesion").category == CATEGORIES["M"]


def test_default_model_and_lesion_names_are_known():
    for name in (*DEFAULT_ORGANS.names[1:], *LESION_NAMES):
        assert lookup(name) is not None, name
    assert codes_for("lesion").type.meaning == "Lesion" and codes_for("tumour").type.meaning == "Neoplasm"
    liver_tumor = codes_for("liver_tumor")
    assert (liver_tumor.type.meaning, liver_tumor.region.meaning) == ("Neoplasm", "Liver")


@pytest.mark.parametrize("name, side", [("kidney_left", "Left"), ("Right Kidney", "Right"), ("kidney_R", "Right"),
                                        ("l_kidney", "Left"), ("Left Kideny", "Left"), ("right adrenal gland", "Right")])
def test_paired_organs_read_their_side_wherever_it_is_written(name, side):
    codes = codes_for(name)
    assert codes.known and codes.modifier is not None and codes.modifier.meaning == side


def test_unknown_name_is_generic_tissue():
    assert codes_for("my_structure") == TISSUE and not TISSUE.known and TISSUE.type.meaning == "Tissue"
    assert codes_for("prostate/uterus") == TISSUE  # AMOS's combined class is not one structure


@pytest.mark.shared_data
def test_totalsegmentator_and_monai_bundle_classes_are_all_known(shared_data):
    names = json.loads((shared_data / "train" / "labels_only" / "totalseg_total_classes.json").read_text())
    bundles = shared_data / "monai_bundles"
    for bundle in ("wholeBody_ct_segmentation", "swin_unetr_btcv_segmentation", "spleen_ct_segmentation"):
        meta = json.loads((bundles / bundle / "configs" / "metadata.json").read_text())
        names.update({f"{bundle}/{k}": v for k, v in meta["network_data_format"]["outputs"]["pred"]
                      ["channel_def"].items()})
    amos = json.loads((shared_data / "train" / "labels_only" / "amos_labels.json").read_text())
    names.update({f"amos/{k}": v for k, v in amos.items() if v != "prostate/uterus"})
    missing = sorted({v for v in names.values() if v != "background" and lookup(v) is None})
    assert missing == []
    assert len(known_names()) > 140


def test_the_registry_imports_neither_torch_nor_pydicom():
    code = ("import sys, medseg.export.codes, medseg.export.colour_tables; "
            "print(sorted(m for m in ('torch', 'monai', 'pydicom', 'highdicom') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
