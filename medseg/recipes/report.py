"""The model card's tables from :func:`medseg.recipes.heldout.evaluate_model`'s summary (Markdown)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["markdown_report", "cell"]


def cell(row: dict[str, Any] | None, predicted_ml: float | None = None) -> str:
    """``Dice / HD95 / NSD`` of a scored class; its predicted volume when the reference does not label it."""
    if row is None:
        return "-" if not predicted_ml else f"({predicted_ml:.0f} mL)"
    if row["ref_ml"] <= 0:
        return "absent" if not row["pred_ml"] else f"absent ({row['pred_ml']:.0f} mL drawn)"
    dice, hd, nsd = row["dice"], row["hd95_mm"], row["nsd_2mm"]
    hd_text = "-" if hd is None or (isinstance(hd, float) and math.isnan(hd)) else f"{hd:.1f}"
    nsd_text = "-" if nsd is None or (isinstance(nsd, float) and math.isnan(nsd)) else f"{nsd:.2f}"
    return f"{dice:.3f} / {hd_text} / {nsd_text}"


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def markdown_report(summary: dict[str, Any], labels) -> str:
    cases = summary["cases"]
    names = list(cases)
    lines = ["Per class: Dice / HD95 (mm) / NSD (2 mm) where the scan's reference labels the class; "
             "(N mL) = drawn where the reference is silent; absent = not in the reference.", "",
             "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for lab in labels.foreground:
        if lab.name == "lesion":
            continue
        cells = [cell(cases[n]["classes"].get(lab.name), cases[n]["predicted_ml"].get(lab.name)) for n in names]
        lines.append(f"| {lab.name} | " + " | ".join(cells) + " |")
    lines.append("| **mean Dice, core organs labelled** | "
                 + " | ".join(f"**{_num(cases[n]['mean_dice_core'])}** ({cases[n]['core_organs_scored']})"
                              for n in names) + " |")
    lines.append("| mean Dice, all classes labelled | " + " | ".join(_num(cases[n]["mean_dice_all"]) for n in names)
                 + " |")
    lines.append("| false lesion components >= 100 mm^3 | "
                 + " | ".join(str(cases[n]["lesions"]["false"]) for n in names) + " |")
    lines.append("| true lesions touched | " + " | ".join(
        f"{cases[n]['lesions']['touching_truth']} of {cases[n]['lesions']['truth_components']}"
        if cases[n]["lesions"]["truth_components"] else "-" for n in names) + " |")
    lines.append("| guard warnings | " + " | ".join(str(len(cases[n]["warnings"])) for n in names) + " |")
    lines.append("| seconds to segment | " + " | ".join(f"{cases[n]['segment_seconds']:.1f}" for n in names) + " |")
    lines += ["", f"Mean Dice over the {summary['core_instances']} core-organ instances labelled "
              f"(liver, spleen, kidneys, lungs, aorta): **{_num(summary['mean_dice_core_all_instances'])}**.", ""]
    for n in names:
        check = cases[n].get("chest_check")
        if check:
            ml = check["liver_above_widest_lung_slice_ml"]
            lines.append(f"* {n}: liver drawn above the lungs' widest slice: {ml:.1f} mL")
    for n in names:
        for warning in cases[n]["warnings"]:
            lines.append(f"* {n} warning: {warning}")
    constructed = summary.get("constructed", {})
    if constructed:
        lines += ["", "| constructed input | classes drawn (mL) | guard warnings |", "|---|---|---|"]
        for key, entry in constructed.items():
            drawn = ", ".join(f"{k} {v:.0f}" for k, v in entry["predicted_ml"].items()) or "nothing"
            extra = ""
            if "lung_dice" in entry:
                dice, ref = entry["lung_dice"], entry["reference_lungs_ml"]
                extra = (f"; lung Dice R {dice['lung_right']:.3f} L {dice['lung_left']:.3f} "
                         f"(reference {ref['lung_right']:.0f} / {ref['lung_left']:.0f} mL)")
            warnings = "<br>".join(entry["warnings"]) or "none"
            lines.append(f"| {key}: {entry['description']} | {drawn}{extra} | {warnings} |")
    return "\n".join(lines) + "\n"
