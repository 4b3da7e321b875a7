"""DICOM SEG export and import of a 512x512x300 CT's organ + 50-lesion labels, against dcmqi, in one run.

    .venv/bin/python benchmarks/bench_seg.py [--repeats 3]

The CT is the benchmark volume of ``bench_inference.py`` (the real CT angiography from
``../shared/data`` resampled to 512x512x300, 0.68 x 0.68 x 0.96 mm), written as a DICOM series
(one uncompressed file per slice) with medseg's own writer. Its labels: 14 organ-like classes
(bands of the CT's HU smoothed over 3 mm, named as the default model's organs so every class has
a SNOMED code) and a lesion class holding 50 spherical lesions (2-12 mm radius, in soft tissue),
with their instance map: 14 + 50 segments. Cached under ``$MEDSEG_BENCH_CACHE``
(default ``/tmp/medseg-bench``).

Every variant runs as the command a user would type, in its own process, rounds interleaved so
machine noise hits all alike; times are wall clock of the whole command (start-up included):

* export: ``medseg export-seg labels.nii.gz --lesions lesions.nii.gz --dicom ct -o seg.dcm
  [--labelmap]`` against dcmqi's ``itkimage2segimage`` with the same 64 segments (one label map,
  lesions as their own labels; ``--segmentationType binary|labelmap``);
* import: medseg's ``read_seg(seg, dicom=ct)`` in a fresh process, timed from the call (library
  imports excluded: the target is about the work), and ``medseg import-seg`` as a command,
  against dcmqi's ``segimage2itkimage --mergeSegments`` on dcmqi's own SEG.

Targets (issue 12): export <= 0.5x dcmqi's time; import <= 2 s. Results: ``docs/dicom_seg.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_inference import CACHE, make_volume

BIN = Path(sys.executable).parent
ORGANS = ["liver", "spleen", "kidney_right", "kidney_left", "stomach", "pancreas", "aorta", "lung_right",
          "lung_left", "bone", "gallbladder", "esophagus", "duodenum", "colon"]
EDGES = [-900, -500, -200, -100, -60, -30, 0, 20, 40, 60, 90, 130, 200, 400]
N_LESIONS = 50


def make_case() -> Path:
    """CT series, labels.nii.gz (+ labels.json), lesions.nii.gz and dcmqi's inputs, cached."""
    folder = CACHE / "seg_case_v1"
    if (folder / "done").exists():
        return folder
    import nibabel as nib
    from scipy.ndimage import gaussian_filter

    from medseg.io import load_volume, save_volume
    from medseg.io._dicom_write import write_dicom_series
    from medseg.labels import LabelSet

    ct = load_volume(make_volume())
    folder.mkdir(parents=True, exist_ok=True)
    write_dicom_series(ct, folder / "ct", uid_seed="bench_seg", replace=True, series_description="bench CT")
    ct = load_volume(folder / "ct")  # the grid as the series gives it (LPS)
    smooth = gaussian_filter(ct.array.astype(np.float32), 3.0 / ct.spacing)
    labels = np.digitize(smooth, EDGES).astype(np.uint8)  # 0 = below -900 HU (air), 1..14 bands
    rng = np.random.default_rng(0)
    lesions = np.zeros(ct.shape, np.uint16)
    soft = np.argwhere((labels >= 7) & (labels <= 11))
    ijk = np.indices((25, 25, 25)).reshape(3, -1).T - 12
    for lesion_id in range(1, N_LESIONS + 1):
        radius_mm = rng.uniform(2.0, 12.0)
        centre = soft[rng.integers(len(soft))]
        ball = ijk[np.linalg.norm(ijk * ct.spacing, axis=1) <= radius_mm] + centre
        ball = ball[np.all((ball >= 0) & (ball < ct.shape), axis=1)]
        lesions[tuple(ball.T)] = lesion_id
    labels[lesions > 0] = 15
    names = LabelSet({0: "background", **{i + 1: n for i, n in enumerate(ORGANS)}, 15: "lesion"})
    save_volume(ct.with_array(labels, label_set=names), folder / "labels.nii.gz")
    save_volume(ct.with_array(lesions), folder / "lesions.nii.gz")
    # dcmqi's input: the same 64 segments in one map (organs 1..14, lesion n -> 14 + n) and its metadata.
    merged = labels.astype(np.uint16)
    merged[lesions > 0] = 14 + lesions[lesions > 0]
    nib.save(nib.Nifti1Image(merged, ct.affine), str(folder / "dcmqi_labels.nii.gz"))
    segments = [{"labelID": i + 1, "SegmentLabel": name, "SegmentAlgorithmType": "MANUAL",
                 "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "123037004", "CodingSchemeDesignator": "SCT",
                                                           "CodeMeaning": "Anatomical Structure"},
                 "SegmentedPropertyTypeCodeSequence": {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT",
                                                       "CodeMeaning": "Tissue"},
                 "recommendedDisplayRGBValue": [128, 174, 128]}
                for i, name in enumerate(ORGANS + [f"lesion {n}" for n in range(1, N_LESIONS + 1)])]
    (folder / "dcmqi_meta.json").write_text(json.dumps({
        "ContentCreatorName": "bench", "ClinicalTrialSeriesID": "1", "ClinicalTrialTimePointID": "1",
        "SeriesDescription": "bench", "SeriesNumber": "300", "InstanceNumber": "1", "segmentAttributes": [segments]}))
    (folder / "done").write_text("ok\n")
    return folder


def timed(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, max RSS in MB of the command's process, stdout), RSS by GNU time when present."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".rss") as rss_file:
        wrapper = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name] if Path("/usr/bin/time").exists() else []
        t0 = time.perf_counter()
        proc = subprocess.run(wrapper + command, capture_output=True, text=True, env=env, check=False)
        seconds = time.perf_counter() - t0
        text = Path(rss_file.name).read_text().strip().splitlines() if wrapper else []
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rss_mb = float(text[-1]) / 1024 if text and text[-1].isdigit() else float("nan")
    return seconds, rss_mb, proc.stdout


IMPORT_CODE = """
import sys, time, json, resource
from medseg.io._dicom_seg import read_seg
import highdicom, pydicom  # library imports are not the import's work
t0 = time.perf_counter()
result = read_seg(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "segments": len(result.segments),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for tool in ("itkimage2segimage", "segimage2itkimage"):
        if not (BIN / tool).exists():
            raise SystemExit(f"{tool} not found beside {sys.executable}: pip install dcmqi")
    case = make_case()
    out = CACHE / "seg_out"
    out.mkdir(exist_ok=True)
    medseg = [sys.executable, "-m", "medseg.cli.main"]
    variants = {
        "medseg export BINARY": medseg + ["export-seg", str(case / "labels.nii.gz"), "--lesions",
                                          str(case / "lesions.nii.gz"), "--dicom", str(case / "ct"),
                                          "-o", str(out / "binary.dcm"), "--algorithm", "bench:1"],
        "dcmqi export BINARY": [str(BIN / "itkimage2segimage"), "--inputImageList", str(case / "dcmqi_labels.nii.gz"),
                                "--inputDICOMDirectory", str(case / "ct"), "--inputMetadata",
                                str(case / "dcmqi_meta.json"), "--outputDICOM", str(out / "dcmqi_binary.dcm")],
        "medseg export LABELMAP": medseg + ["export-seg", str(case / "labels.nii.gz"), "--lesions",
                                            str(case / "lesions.nii.gz"), "--dicom", str(case / "ct"),
                                            "-o", str(out / "labelmap.dcm"), "--labelmap", "--algorithm", "bench:1"],
        "dcmqi export LABELMAP": [str(BIN / "itkimage2segimage"), "--inputImageList",
                                  str(case / "dcmqi_labels.nii.gz"), "--inputDICOMDirectory", str(case / "ct"),
                                  "--inputMetadata", str(case / "dcmqi_meta.json"), "--outputDICOM",
                                  str(out / "dcmqi_labelmap.dcm"), "--segmentationType", "labelmap"],
    }
    imports = {
        "medseg read_seg BINARY": [sys.executable, "-c", IMPORT_CODE, str(out / "binary.dcm"), str(case / "ct")],
        "medseg read_seg LABELMAP": [sys.executable, "-c", IMPORT_CODE, str(out / "labelmap.dcm"), str(case / "ct")],
        "medseg import-seg BINARY": medseg + ["import-seg", str(out / "binary.dcm"), "--dicom", str(case / "ct"),
                                              "-o", str(out / "back.nii")],
        "dcmqi segimage2itkimage BINARY": [str(BIN / "segimage2itkimage"), "--inputDICOM",
                                           str(out / "dcmqi_binary.dcm"), "--outputDirectory", str(out / "dcmqi_back"),
                                           "-t", "nifti", "--mergeSegments"],
    }
    (out / "dcmqi_back").mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    times: dict[str, list[float]] = {name: [] for name in (*variants, *imports)}
    rss: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, command in variants.items():
            seconds, peak, _ = timed(command, env)
            times[name].append(seconds)
            rss[name] = max(rss.get(name, 0.0), peak)
        for name, command in imports.items():
            seconds, peak, stdout = timed(command, env)
            if "read_seg" in name:
                record = json.loads(stdout.strip().splitlines()[-1])
                seconds, peak = record["seconds"], record["rss_mb"]
            times[name].append(seconds)
            rss[name] = max(rss.get(name, 0.0), peak)
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False)
                .stdout.splitlines() if line.startswith("Model name")), platform.processor())
    print(f"CPU: {cpu}; {os.cpu_count()} cores; Python {platform.python_version()}; {args.repeats} rounds")
    print(f"{'variant':<34} {'median s':>9} {'min s':>7} {'max RSS MB':>11}")
    for name, values in times.items():
        print(f"{name:<34} {statistics.median(values):>9.2f} {min(values):>7.2f} {rss[name]:>11.0f}")
    for kind in ("BINARY", "LABELMAP"):
        ratios = [m / d for m, d in zip(times[f"medseg export {kind}"], times[f"dcmqi export {kind}"])]
        print(f"export {kind}: medseg / dcmqi = {statistics.median(ratios):.2f}x (median of per-round ratios; "
              "target <= 0.5x)")
    for kind in ("BINARY", "LABELMAP"):
        print(f"import {kind}: read_seg {statistics.median(times[f'medseg read_seg {kind}']):.2f} s (target <= 2 s)")
    sizes = {p.name: p.stat().st_size / 1e6 for p in out.glob("*.dcm")}
    print("file sizes MB: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(sizes.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
