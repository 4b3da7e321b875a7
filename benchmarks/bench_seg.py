"""DICOM SEG export and import of a 512x512x300 CT's organ + 50-lesion labels, against dcmqi, in one run.

    .venv/bin/python benchmarks/bench_seg.py [--repeats 3] [--before GIT_REVISION]

The CT is the benchmark volume of ``bench_inference.py`` (the real CT angiography from
``../shared/data`` resampled to 512x512x300, 0.68 x 0.68 x 0.96 mm), written as a DICOM series
(one uncompressed file per slice) with medseg's own writer. Its labels: 14 organ-like classes
(bands of the CT's HU smoothed over 3 mm, named as the default model's organs so every class has
a SNOMED code) and a lesion class holding 50 spherical lesions (2-12 mm radius, in soft tissue),
with their instance map: 14 + 50 segments. Cached under ``$MEDSEG_BENCH_CACHE``
(default ``/tmp/medseg-bench``).

Every variant runs as the command a user would type, in its own process, rounds interleaved so
machine noise hits all alike; times are wall clock of the whole command (start-up included), and
its CPU time (user + system, from GNU time) is printed beside it, which a loaded machine
disturbs less:

* export: ``medseg export-seg labels.nii.gz --lesions lesions.nii.gz --dicom ct -o seg.dcm
  [--labelmap]`` against dcmqi's ``itkimage2segimage`` with the same 64 segments (one label map,
  lesions as their own labels; ``--segmentationType binary|labelmap``);
* import: medseg's ``read_seg(seg, dicom=ct)`` in a fresh process, timed from the call (library
  imports excluded: the target is about the work), and ``medseg import-seg`` as a command,
  against dcmqi's ``segimage2itkimage --mergeSegments`` on dcmqi's own SEG.

``--before REV`` adds the same medseg variants run with the ``medseg`` package of git revision
REV (extracted with ``git archive`` into a temporary folder, nothing in the work tree changes),
reading and writing the same files, so a change is measured against its baseline in one run.

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


def timed(command: list[str], env: dict | None = None) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds (user + system), max RSS in MB, stdout) of a command (GNU time when present)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".rss") as rss_file:
        wrapper = ["/usr/bin/time", "-f", "%M %U %S", "-o", rss_file.name] if Path("/usr/bin/time").exists() else []
        t0 = time.perf_counter()
        # From a neutral folder: the package on PYTHONPATH is the one imported, not the current folder's.
        proc = subprocess.run(wrapper + command, capture_output=True, text=True, env=env, check=False, cwd=CACHE)
        seconds = time.perf_counter() - t0
        text = Path(rss_file.name).read_text().strip().splitlines() if wrapper else []
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    fields = text[-1].split() if text else []
    if len(fields) == 3:
        return seconds, float(fields[1]) + float(fields[2]), float(fields[0]) / 1024, proc.stdout
    return seconds, float("nan"), float("nan"), proc.stdout


IMPORT_CODE = """
import sys, time, json, resource
from medseg.io._dicom_seg import read_seg
import highdicom, pydicom  # library imports are not the import's work
t0, c0 = time.perf_counter(), time.process_time()
result = read_seg(sys.argv[1], sys.argv[2])
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"seconds": seconds, "cpu": cpu, "segments": len(result.segments),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def baseline(revision: str, folder: Path) -> Path:
    """The ``medseg`` package of git ``revision``, extracted under ``folder`` (the work tree is untouched)."""
    target = folder / f"medseg-{revision.replace('/', '_')}"
    if not (target / "medseg").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "medseg"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", metavar="REV", help="also run medseg as of git revision REV (the baseline)")
    args = parser.parse_args()
    for tool in ("itkimage2segimage", "segimage2itkimage"):
        if not (BIN / tool).exists():
            raise SystemExit(f"{tool} not found beside {sys.executable}: pip install dcmqi")
    case = make_case()
    out = CACHE / "seg_out"
    out.mkdir(exist_ok=True)
    (out / "dcmqi_back").mkdir(exist_ok=True)
    medseg = [sys.executable, "-m", "medseg.cli.main"]
    ct = str(case / "ct")
    export = medseg + ["export-seg", str(case / "labels.nii.gz"), "--lesions", str(case / "lesions.nii.gz"),
                       "--dicom", ct, "--algorithm", "bench:1", "-o"]
    dcmqi_export = [str(BIN / "itkimage2segimage"), "--inputImageList", str(case / "dcmqi_labels.nii.gz"),
                    "--inputDICOMDirectory", ct, "--inputMetadata", str(case / "dcmqi_meta.json"), "--outputDICOM"]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    envs = {"": env}
    if args.before:
        envs[" (before)"] = {**env, "PYTHONPATH": str(baseline(args.before, CACHE / "baselines"))}
    variants: list[tuple[str, list[str], dict]] = []
    for kind, flag in (("BINARY", []), ("LABELMAP", ["--labelmap"])):
        for tag, variant_env in envs.items():
            name = "binary" if kind == "BINARY" else "labelmap"
            variants.append((f"medseg export {kind}{tag}", export + [str(out / f"{name}{tag.strip(' ()')}.dcm")] + flag,
                             variant_env))
        variants.append((f"dcmqi export {kind}", dcmqi_export + [str(out / f"dcmqi_{kind.lower()}.dcm")] +
                         ([] if kind == "BINARY" else ["--segmentationType", "labelmap"]), env))
    for kind in ("BINARY", "LABELMAP"):
        for tag, variant_env in envs.items():
            variants.append((f"medseg read_seg {kind}{tag}", [sys.executable, "-c", IMPORT_CODE,
                                                                  str(out / f"{kind.lower()}.dcm"), ct], variant_env))
    variants.append(("medseg import-seg BINARY", medseg + ["import-seg", str(out / "binary.dcm"), "--dicom", ct,
                                                          "-o", str(out / "back.nii")], env))
    variants.append(("dcmqi segimage2itkimage BINARY", [str(BIN / "segimage2itkimage"), "--inputDICOM",
                                                        str(out / "dcmqi_binary.dcm"), "--outputDirectory",
                                                        str(out / "dcmqi_back"), "-t", "nifti", "--mergeSegments"],
                     env))
    wall: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    rss: dict[str, float] = {}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, command, variant_env in variants:
            seconds, used, peak, stdout = timed(command, variant_env)
            if "read_seg" in name:
                record = json.loads(stdout.strip().splitlines()[-1])
                seconds, used, peak = record["seconds"], record["cpu"], record["rss_mb"]
            wall[name].append(seconds)
            cpu[name].append(used)
            rss[name] = max(rss.get(name, 0.0), peak)
        loads.append(os.getloadavg()[0])
    cpu_model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines() if line.startswith("Model name")),
        platform.processor())
    print(f"CPU: {cpu_model}; {os.cpu_count()} cores; Python {platform.python_version()}; {args.repeats} rounds; "
          f"1-minute load average {min(loads):.1f}-{max(loads):.1f} during the rounds")
    print(f"{'variant':<36} {'median s':>9} {'min s':>7} {'CPU s':>7} {'max RSS MB':>11}")
    for name, values in wall.items():
        print(f"{name:<36} {median(values):>9.2f} {min(values):>7.2f} {median(cpu[name]):>7.2f} {rss[name]:>11.0f}")

    def ratio(a: str, b: str, table: dict[str, list[float]]) -> float:
        return median([x / y for x, y in zip(table[a], table[b])])

    for kind in ("BINARY", "LABELMAP"):
        print(f"export {kind}: medseg / dcmqi = {ratio(f'medseg export {kind}', f'dcmqi export {kind}', wall):.2f}x "
              f"wall, {ratio(f'medseg export {kind}', f'dcmqi export {kind}', cpu):.2f}x CPU (median of per-round "
              "ratios; target <= 0.5x)")
        if args.before:
            print(f"  before: {ratio(f'medseg export {kind} (before)', f'dcmqi export {kind}', wall):.2f}x wall; "
                  f"after / before = {ratio(f'medseg export {kind}', f'medseg export {kind} (before)', wall):.2f}x")
    for kind in ("BINARY", "LABELMAP"):
        name = f"medseg read_seg {kind}"
        print(f"import {kind}: read_seg {median(wall[name]):.2f} s wall, {median(cpu[name]):.2f} s CPU (target <= 2 s)"
              + (f"; before {median(wall[name + ' (before)']):.2f} s, after / before = "
                 f"{ratio(name, name + ' (before)', wall):.2f}x" if args.before else ""))
    sizes = {p.name: p.stat().st_size / 1e6 for p in out.glob("*.dcm")}
    print("file sizes MB: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(sizes.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
