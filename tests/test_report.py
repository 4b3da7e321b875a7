"""Reports: CSV and versioned JSON of lesion tables and evaluations, and the plots (looked at as pixels)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from medseg import Volume
from medseg.evaluation import evaluate
from medseg.lesions import find_instances, lesion_table
from medseg.report import (
    EVALUATION_SCHEMA,
    LESION_TABLE_SCHEMA,
    plot_class_metrics,
    plot_lesion_montage,
    plot_lesion_sizes,
    write_evaluation,
    write_lesion_csv,
    write_lesion_json,
)
from medseg.report.montage import _display_axes, lesion_tile

SPACING = (0.8, 0.8, 2.0)


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"non-JSON constant {constant}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def lps_case():
    """Two lesions in an LPS-stored CT-like volume; lesion 2 has a bright spot on its patient-right,
    anterior side."""
    shape = (60, 60, 12)
    affine = np.array([[-0.8, 0, 0, 30], [0, -0.8, 0, 30], [0, 0, 2.0, -10], [0, 0, 0, 1.0]])
    ijk = np.indices(shape).astype(float)
    mask = np.zeros(shape, np.uint8)
    mask[((ijk[0] - 20) ** 2 + (ijk[1] - 20) ** 2 <= 64) & (abs(ijk[2] - 6) <= 2)] = 1
    mask[((ijk[0] - 45) ** 2 + (ijk[1] - 40) ** 2 <= 36) & (abs(ijk[2] - 5) <= 1)] = 1
    rng = np.random.default_rng(0)
    ct = rng.normal(40, 10, shape).astype(np.int16)
    ct[mask > 0] = 10
    # Patient right = low i (i runs to the left), anterior = low j (j runs posterior).
    ct[38:41, 33:36, 4:7] = 900
    return Volume(mask, affine, "CT"), Volume(ct, affine, "CT")


def test_lesion_csv_and_json(tmp_path):
    labels, ct = lps_case()
    table = lesion_table(find_instances(labels), image=ct)
    write_lesion_csv(table, tmp_path / "lesions.csv")
    write_lesion_json(table, tmp_path / "lesions.json", command="medseg lesions x")
    rows = list(csv.DictReader((tmp_path / "lesions.csv").open()))
    assert [int(r["id"]) for r in rows] == [1, 2]
    for record, row in zip(rows, table.rows):
        assert float(record["volume_ml"]) == pytest.approx(row.volume_ml, rel=1e-6)
        assert float(record["axial_long_axis_mm"]) == pytest.approx(row.axial_long_axis_mm, rel=1e-6)
        assert float(record["centroid_x_lps_mm"]) == pytest.approx(-row.centroid_ras_mm[0], rel=1e-6, abs=1e-6)
        assert int(record["bbox_k_stop"]) == row.bbox_stop_ijk[2]
        assert float(record["intensity_p50"]) == pytest.approx(row.intensity_percentiles["p50"], rel=1e-6)
        assert record["organ"] == ""
    document = strict_json(tmp_path / "lesions.json")
    assert document["schema"] == LESION_TABLE_SCHEMA and document["schema_version"] == "1.0"
    assert document["units"]["intensity"] == "HU" and document["command"] == "medseg lesions x"
    assert document["summary"]["n_lesions"] == 2
    assert document["settings"]["axial_slice_axis"] == "k (S)" and document["settings"]["connectivity"] == 26
    assert document["grid"]["orientation"] == "LPS"
    first = document["lesions"][0]
    assert first["id"] == 1 and len(first["long_axis_ras_mm"]) == 2
    assert first["volume_ml"] == pytest.approx(table.rows[0].volume_ml)


def test_empty_table_files(tmp_path):
    empty = Volume(np.zeros((8, 8, 8), np.uint8), np.eye(4))
    table = lesion_table(find_instances(empty))
    write_lesion_csv(table, tmp_path / "lesions.csv")
    write_lesion_json(table, tmp_path / "lesions.json")
    lines = (tmp_path / "lesions.csv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("id,voxel_count,volume_ml")
    document = strict_json(tmp_path / "lesions.json")
    assert document["lesions"] == [] and document["summary"]["total_volume_ml"] == 0.0
    for plot in (plot_lesion_sizes(table, tmp_path / "sizes.png"),
                 plot_lesion_montage(table, None, tmp_path / "montage.png")):
        assert plot.stat().st_size > 1000


def test_evaluation_report_nan_becomes_null(tmp_path):
    ref = np.zeros((20, 20, 8), np.uint8)
    ref[2:8, 2:8, 2:6] = 1
    ref[12:16, 12:16, 2:6] = 2
    pred = ref.copy()
    pred[pred == 2] = 0  # class 2 missed: no surface distances
    result = evaluate(Volume(pred, np.diag([*SPACING, 1])), Volume(ref, np.diag([*SPACING, 1])),
                      labels={1: "liver", 2: "tumour", 3: "cyst"}, lesion_label=2)
    paths = write_evaluation(result, tmp_path / "out", command="medseg evaluate a b")
    assert sorted(p.name for p in paths.values()) == ["classes.csv", "lesion_matches.csv", "report.json"]
    document = strict_json(paths["report"])
    assert document["schema"] == EVALUATION_SCHEMA and document["schema_version"] == "1.0"
    classes = {c["name"]: c for c in document["classes"]}
    assert classes["liver"]["dice"] == 1.0 and classes["tumour"]["hd95_mm"] is None
    assert classes["tumour"]["note"] == "empty prediction" and classes["cyst"]["dice"] is None
    assert document["lesions"]["fn"] == 1 and document["lesions"]["precision"] is None
    assert document["lesions"]["matches"][0]["outcome"] == "FN"
    assert document["summary"]["mean_dice"] == pytest.approx(0.5)
    rows = list(csv.DictReader(paths["classes"].open()))
    assert rows[1]["name"] == "tumour" and rows[1]["hd95_mm"] == "" and rows[1]["dice"] == "0"
    match_rows = list(csv.DictReader(paths["lesion_matches"].open()))
    assert [r["outcome"] for r in match_rows] == ["FN"]
    png = plot_class_metrics(result, tmp_path / "dice.png")
    image = _read_png(png)
    # The Dice bar of "liver" is drawn in its blue.
    assert _count(image, (0x3B, 0x7D, 0xD8)) > 500


def _read_png(path):
    from matplotlib.image import imread

    return (imread(path)[..., :3] * 255).round().astype(int)


def _count(image, rgb, tolerance=12):
    return int(np.count_nonzero(np.all(np.abs(image - np.array(rgb)) <= tolerance, axis=-1)))


def test_display_axes_are_radiological():
    # LPS storage: i runs to the patient's left -> no flip; j runs posterior -> no flip.
    assert _display_axes(np.diag([-0.8, -0.8, 2.0, 1.0]), 2)[:4] == (0, 1, False, False)
    # RAS storage (nibabel's canonical): both flipped.
    assert _display_axes(np.diag([0.8, 0.8, 2.0, 1.0]), 2)[:4] == (0, 1, True, True)
    # Sagittal acquisition: i -> anterior, j -> inferior, k -> right; axial planes span k (x) and i (y).
    sagittal = np.eye(4)
    sagittal[:3, :3] = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)
    assert _display_axes(sagittal, 1)[:4] == (2, 0, True, True)


def test_montage_shows_the_lesion_radiologically(tmp_path):
    labels, ct = lps_case()
    table = lesion_table(find_instances(labels), image=ct)
    row = table.rows[1]
    tile = lesion_tile(row, table.instances.labels, ct.array, table.slice_axis)
    # Screen right is the patient's left (+x in LPS), screen down is posterior.
    np.testing.assert_allclose(tile.right, [-1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(tile.down, [0, -1, 0], atol=1e-12)
    spot = np.argwhere(tile.grey == 900)
    lesion = np.argwhere(tile.ids == row.id)
    assert len(spot) == 9 and len(lesion) > 20
    # The bright spot on the patient's right-anterior side is left of and above the lesion.
    assert spot[:, 1].mean() < lesion[:, 1].mean() and spot[:, 0].mean() < lesion[:, 0].mean()
    # The long axis end points land on the lesion's outline: half the long axis from its centre.
    x, y = tile.to_screen(row.long_axis_ras_mm)
    pixel = tile.extent[1] / tile.ids.shape[1]
    centre = (lesion[:, ::-1].mean(axis=0) + 0.5) * pixel
    for end in zip(x, y):
        assert np.linalg.norm(np.array(end) - centre) == pytest.approx(row.axial_long_axis_mm / 2, abs=0.5)
    png = plot_lesion_montage(table, ct, tmp_path / "montage.png")
    image = _read_png(png)
    assert _count(image, (255, 208, 0), tolerance=40) > 100  # the yellow outlines
    assert _count(image, (255, 59, 59), tolerance=40) > 20  # the red RECIST lines


def test_size_plot(tmp_path):
    labels, _ = lps_case()
    table = lesion_table(find_instances(labels))
    image = _read_png(plot_lesion_sizes(table, tmp_path / "sizes.png"))
    assert _count(image, (0x3B, 0x7D, 0xD8)) > 200 and _count(image, (0xF0, 0xA0, 0x30)) > 200
    assert not math.isnan(table.total_volume_ml)
