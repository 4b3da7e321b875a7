"""RTSTRUCT export and import: medseg vs rt-utils (the library TotalSegmentator writes RTSTRUCT with).

Two real CT series from ../shared/data:

* ``aorta``: TotalSegmentator's CT angiography (233 x 167 x 191, 1.5 mm) written as a DICOM series
  (medseg's writer, uncompressed) with 13 real masks (heart on the full grid, 12 vessel / bone
  masks placed from their crop);
* ``square phantom``: medseg's phantom cropped to 170 x 170 x 70 (rt-utils reads square slices only);
* ``j2k``: ``example_ct_dicom`` (512 x 512 x 20, JPEG 2000, UIDs missing from its data sets) with
  TotalSegmentator's 31-class label map of it.

For each tool, rounds interleaved (the machine is noisy), medians of ``--rounds``:

* export: read the series + write the RTSTRUCT; import: read the series + rasterise every ROI;
* round trip (the tool's own writer and reader): smallest Dice over ROIs, largest volume error;
* interoperability: each tool reading the other's file (Dice against the original masks);
* geometry: largest distance (mm) of a vertex from the plane of the image its contour references
  (read back with pydicom), vertices, file size, dciodvfy errors;
* then, on ``j2k``, what point reduction and smoothing cost in vertices and accuracy.

    .venv/bin/python benchmarks/bench_rtstruct.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def aorta_case(work: Path):
    import nibabel as nib

    from medseg.io import load_volume
    from medseg.io._dicom_write import write_dicom_series
    from medseg.labels import LabelSet

    root = DATA / "totalsegmentator"
    ct = load_volume(root / "aorta_report" / "example_ct.nii.gz")
    write_dicom_series(ct, work / "aorta", uid_seed=1, study_datetime=None)
    series = load_volume(work / "aorta")
    labels = np.zeros(series.shape, np.uint8)
    names = {1: "heart"}
    labels[np.asarray(nib.load(str(root / "pulmonary_report" / "models" / "heart.nii.gz")).dataobj) > 0] = 1
    crop = root / "aorta_report" / "test_result" / "models"
    value = 2
    for file in sorted(crop.glob("*.nii.gz")):
        mask = np.asarray(nib.load(str(file)).dataobj)
        if file.name.startswith(("T7", "ct_")) or mask.max() == 0 or mask.max() > 1:
            continue
        target = labels[72:72 + mask.shape[0], 13:13 + mask.shape[1], 0:mask.shape[2]]
        target[(mask > 0) & (target == 0)] = value
        names[value] = file.name.removesuffix(".nii.gz")
        value += 1
    return work / "aorta", series, series.with_array(labels, label_set=LabelSet({0: "background", **names}))


def j2k_case(work: Path):
    from medseg.io import load_volume
    from medseg.labels import LabelSet

    folder = DATA / "totalsegmentator" / "example_ct_dicom"
    ct = load_volume(folder)
    seg = load_volume(DATA / "totalsegmentator" / "example_seg_dicom.nii.gz").reoriented(ct.orientation)
    names = json.loads((DATA / "train" / "labels_only" / "totalseg_total_classes.json").read_text())
    present = [int(v) for v in np.unique(seg.array) if v]
    label_set = LabelSet({0: "background", **{v: names[str(v)] for v in present}})
    return folder, ct, ct.with_array(seg.array.astype(np.uint8), label_set=label_set)


def square_case(work: Path):
    from medseg.io import load_volume
    from medseg.io._dicom_write import write_dicom_series
    from medseg.labels import DEFAULT_ORGANS

    phantom = REPO / "sample_data" / "phantom"
    box = (slice(15, 185), slice(0, 170), slice(None))  # square slices: rt-utils reads only those right
    write_dicom_series(load_volume(phantom / "ct_dicom").crop(box), work / "square", uid_seed=2)
    series = load_volume(work / "square")
    labels = load_volume(phantom / "organs.nii.gz").array[box].astype(np.uint8)
    labels[load_volume(phantom / "lesions.nii.gz").array[box] > 0] = 11
    return work / "square", series, series.with_array(labels, label_set=DEFAULT_ORGANS.extended(["lesion"]))


def reduction(folder: Path, labels, work: Path) -> None:
    """Vertices and accuracy of thinned / smoothed contours (read back by medseg)."""
    from medseg.export.rtstruct import write_rtstruct
    from medseg.io import load_volume

    image = load_volume(folder)
    ml = image.voxel_volume_ml
    print("\n  | max deviation | smoothing | vertices | kB | min Dice (all) | min Dice (> 1 mL) | "
          "max volume error (> 1 mL) |\n  |---|---|---|---|---|---|---|")
    for bound, smooth in ((0.0, 0.0), (0.25, 0.0), (0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (2.0, 0.0)):
        path = work / f"reduced-{bound}-{smooth}.dcm"
        result = write_rtstruct(labels, path, image=image, max_deviation_mm=bound, smoothing_mm=smooth)
        masks = medseg_import(folder, path, set(labels.label_set.names[1:]))
        dice_all = dice_big = 1.0
        volume = 0.0
        for lab in labels.label_set.foreground:
            truth = labels.array == lab.value
            got = masks.get(lab.name, np.zeros_like(truth))
            dice = 2 * np.count_nonzero(got & truth) / (got.sum() + truth.sum())
            dice_all = min(dice_all, dice)
            if truth.sum() * ml > 1:
                dice_big = min(dice_big, dice)
                volume = max(volume, abs(got.sum() / truth.sum() - 1))
        vertices = sum(r["points"] for r in result.rois)
        print(f"  | {bound:g} mm | {smooth:g} mm | {vertices} | {path.stat().st_size // 1024} | {dice_all:.4f} | "
              f"{dice_big:.4f} | {volume:.2%} |")


def medseg_export(folder, labels, path):
    from medseg.export.rtstruct import write_rtstruct
    from medseg.io import load_volume

    write_rtstruct(labels, path, image=load_volume(folder))


def medseg_import(folder, path, names):
    from medseg.io._rtstruct import read_rtstruct

    result = read_rtstruct(path, folder, rois=list(names))
    out = {}
    for roi in result.rois:
        if roi.status == "imported":
            out[roi.name] = result.labels.array == result.labels.label_set.value_of(roi.class_name)
    return out


def rtutils_export(folder, labels, path):
    from rt_utils import RTStructBuilder

    builder = RTStructBuilder.create_new(str(folder))
    for lab in labels.label_set.foreground:
        mask = labels.array == lab.value
        if mask.any():
            builder.add_roi(mask=mask.transpose(1, 0, 2), name=lab.name)  # rt-utils: (rows, columns, slices)
    builder.save(str(path))


def rtutils_import(folder, path, names):
    from rt_utils import RTStructBuilder

    rt = RTStructBuilder.create_from(str(folder), str(path))
    out = {}
    for name in rt.get_roi_names():
        if name in names:
            # rt-utils fills (row, column) slices into a (columns, rows) array: transposed for square
            # images, garbled for others (taken as returned: that is what its users get).
            mask = rt.get_roi_mask_by_name(name)
            out[name] = mask.transpose(1, 0, 2) if mask.shape[0] == mask.shape[1] else mask
    return out


def scores(masks: dict, labels, ml: float) -> tuple[float, float]:
    worst_dice, worst_volume = 1.0, 0.0
    for lab in labels.label_set.foreground:
        truth = labels.array == lab.value
        if not truth.any():
            continue
        got = masks.get(lab.name, np.zeros_like(truth))
        if got.shape != truth.shape:
            return float("nan"), float("nan")
        worst_dice = min(worst_dice, 2 * np.count_nonzero(got & truth) / (got.sum() + truth.sum()))
        if truth.sum() * ml > 1:
            worst_volume = max(worst_volume, abs(got.sum() / truth.sum() - 1))
    return worst_dice, worst_volume


def geometry(path: Path, folder: Path) -> tuple[float, int]:
    import pydicom

    planes = {}
    for file in folder.iterdir():
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        iop = np.array(ds.ImageOrientationPatient, float)
        uid = str(ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID)
        planes[uid] = (np.array(ds.ImagePositionPatient, float), np.cross(iop[:3], iop[3:]))
    worst, vertices = 0.0, 0
    for roi in pydicom.dcmread(path).ROIContourSequence:
        for contour in roi.ContourSequence:
            points = np.array(contour.get_item(0x30060050).value.split(b"\\"), float).reshape(-1, 3)
            uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
            if uid not in planes:
                return float("nan"), vertices
            ipp, normal = planes[uid]
            worst = max(worst, float(np.abs((points - ipp) @ normal).max()))
            vertices += len(points)
    return worst, vertices


def dciodvfy(path: Path) -> int:
    binary = Path(sys.executable).with_name("dciodvfy")
    out = subprocess.run([str(binary), str(path)], capture_output=True, text=True)
    return sum(line.startswith("Error") for line in (out.stdout + out.stderr).splitlines())


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def run_case(name: str, folder: Path, image, labels, work: Path, rounds: int) -> None:
    tools = {"medseg": (medseg_export, medseg_import), "rt-utils": (rtutils_export, rtutils_import)}
    names = set(labels.label_set.names[1:])
    times = {(tool, step): [] for tool in tools for step in ("export", "import")}
    files, masks, failures = {}, {}, {}
    for _ in range(rounds):
        for tool, (export, read) in tools.items():
            if tool in failures:
                continue
            path = work / f"{name}-{tool}.dcm"
            try:
                seconds, _ = timed(export, folder, labels, path)
                times[(tool, "export")].append(seconds)
                seconds, masks[tool] = timed(read, folder, path, names)
                times[(tool, "import")].append(seconds)
                files[tool] = path
            except Exception as exc:  # a benchmark reports what a tool cannot do, and goes on
                failures[tool] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    print(f"\n## {name}: {'x'.join(map(str, image.shape))} @ {'x'.join(f'{s:.3g}' for s in image.spacing)} mm, "
          f"{len(names)} ROIs")
    for tool, reason in failures.items():
        print(f"  {tool} failed: {reason}")
    base = {step: statistics.median(times[("rt-utils", step)]) if times[("rt-utils", step)] else None
            for step in ("export", "import")}
    ml = image.voxel_volume_ml
    print(f"  {'tool':<9} {'export s':>9} {'ratio':>6} {'import s':>9} {'ratio':>6} {'min Dice':>9} "
          f"{'max dV':>7} {'plane mm':>9} {'vertices':>9} {'kB':>6} {'dciodvfy':>8}")
    for tool in tools:
        if tool not in files:
            continue
        export, read = (statistics.median(times[(tool, s)]) for s in ("export", "import"))
        ratio = [f"{v / base[s]:.2f}" if base[s] else "-" for v, s in ((export, "export"), (read, "import"))]
        dice, volume = scores(masks[tool], labels, ml)
        plane, vertices = geometry(files[tool], folder)
        print(f"  {tool:<9} {export:9.2f} {ratio[0]:>6} {read:9.2f} {ratio[1]:>6} {dice:9.4f} {volume:7.2%} "
              f"{plane:9.2g} {vertices:9d} {files[tool].stat().st_size // 1024:6d} {dciodvfy(files[tool]):8d}")
    if len(files) == 2:
        cross = {"medseg reads rt-utils' file": medseg_import(folder, files["rt-utils"], names),
                 "rt-utils reads medseg's file": rtutils_import(folder, files["medseg"], names)}
        for what, got in cross.items():
            dice, volume = scores(got, labels, ml)
            print(f"  {what}: min Dice {dice:.4f}, max volume error {volume:.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"# RTSTRUCT benchmark: {model}, {platform.python_version()}, rounds {args.rounds}")
    work = Path(tempfile.mkdtemp(prefix="bench-rtstruct-"))
    try:
        for name, make in (("aorta", aorta_case), ("square phantom", square_case), ("j2k", j2k_case)):
            folder, image, labels = make(work)
            run_case(name, folder, image, labels, work, args.rounds)
        print("\n## point reduction and smoothing on j2k")
        reduction(folder, labels, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
