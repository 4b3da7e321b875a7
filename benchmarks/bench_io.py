"""DICOM series reading speed and memory: medseg vs SimpleITK vs a plain pydicom loop.

Writes a 512 x 512 x 300 CT series (int16 pixels, realistic CT header, HU = stored - 1024) with
pydicom into a temporary folder, then reads it with each reader in its own fresh subprocess,
several rounds (readers interleaved, so they share the machine's noise), and prints medians:

* time of the read call, and its ratio to SimpleITK's ``ImageSeriesReader`` in the same run;
* peak memory: max RSS above the RSS measured after imports and a warm-up read of a tiny
  series (so library imports are not counted), as a multiple of the volume's bytes.

Targets (issue 3): medseg <= 1.0x SimpleITK's time, <= 1.5x the volume's bytes.

    .venv/bin/python benchmarks/bench_io.py                 # 300 slices, 5 rounds
    .venv/bin/python benchmarks/bench_io.py --layout ge     # signed 16-bit storage (GE-like)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

READERS = ("medseg", "simpleitk", "pydicom")
ROWS = COLUMNS = 512


def write_series(folder: Path, n_slices: int, *, layout: str = "siemens", seed: int = 0) -> None:
    """A CT series like a scanner's: one file per slice, 0.7 mm pixels, 1 mm apart, HFS."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[:ROWS, :COLUMNS]
    body = ((yy - 256) / 200.0) ** 2 + ((xx - 256) / 240.0) ** 2 < 1.0
    for k in range(n_slices):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.Modality, ds.Manufacturer = "CT", "medseg benchmark"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Bench^Mark", "BENCH01", "", "O"
        ds.BodyPartExamined, ds.SliceThickness, ds.KVP = "ABDOMEN", "1.0", "120"
        ds.ConvolutionKernel, ds.PatientPosition = "B30f", "HFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_ref
        ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber = "1", "2", "1"
        ds.InstanceNumber = str(n_slices - k)  # scanners often count head to feet
        ds.ImagePositionPatient = [-179.6, -179.6, round(-150.0 + k * 1.0, 3)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = ds.ImagePositionPatient[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns, ds.PixelSpacing = ROWS, COLUMNS, [0.703125, 0.703125]
        ds.BitsAllocated = 16
        hu = np.where(body, rng.normal(40, 30, (ROWS, COLUMNS)), -1000).astype(np.int32)
        if layout == "ge":  # signed 16 bits stored, padding -2000 outside the bore
            ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
            stored = np.where(body, hu + 1024, -2000).astype(np.int16)
        else:  # 12 bits stored, unsigned
            ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
            stored = np.clip(hu + 1024, 0, 4095).astype(np.uint16)
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"IM{k:05d}.dcm", enforce_file_format=True)
    del pydicom


# --- one read in its own process ----------------------------------------------------------------

def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _read(reader: str, folder: Path) -> np.ndarray:
    if reader == "medseg":
        from medseg.io import load_volume

        return load_volume(folder).array
    if reader == "simpleitk":
        import SimpleITK as sitk

        series = sitk.ImageSeriesReader()
        series.SetFileNames(series.GetGDCMSeriesFileNames(str(folder)))
        return sitk.GetArrayViewFromImage(series.Execute())
    import pydicom

    slices = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    stacked = np.stack([ds.pixel_array for ds in slices])
    return (stacked * float(slices[0].RescaleSlope) + float(slices[0].RescaleIntercept)).astype(np.int16)


def worker(reader: str, folder: Path, warmup: Path) -> None:
    _read(reader, warmup)  # imports and lazy plugin loading happen here, outside the measurement
    baseline = _rss_bytes()
    start = time.perf_counter()
    array = _read(reader, folder)
    seconds = time.perf_counter() - start
    peak = _rss_bytes() - baseline
    print(json.dumps({"reader": reader, "seconds": seconds, "peak_bytes": peak,
                      "shape": list(array.shape), "dtype": str(array.dtype)}))


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="medseg-bench-io-"))
    try:
        folder, warmup = tmp / "ct", tmp / "warmup"
        t0 = time.perf_counter()
        write_series(folder, args.slices, layout=args.layout)
        write_series(warmup, 3, layout=args.layout, seed=1)
        print(f"wrote {args.slices} slices of {ROWS}x{COLUMNS} ({args.layout} layout) in "
              f"{time.perf_counter() - t0:.1f} s to {folder}")
        volume_bytes = ROWS * COLUMNS * args.slices * 2
        results: dict[str, list[dict]] = {r: [] for r in READERS}
        for round_number in range(args.repeats):
            for reader in READERS:
                out = subprocess.run([sys.executable, __file__, "--worker", reader, str(folder), str(warmup)],
                                     check=True, capture_output=True, text=True)
                results[reader].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {round_number + 1}/{args.repeats}: " + ", ".join(
                f"{r} {results[r][-1]['seconds']:.2f} s" for r in READERS))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    base = statistics.median(x["seconds"] for x in results["simpleitk"])
    print(f"\nmedians over {args.repeats} rounds; volume = {volume_bytes / 1e6:.1f} MB")
    print(f"{'reader':<10} {'time s':>8} {'vs SimpleITK':>13} {'peak MB':>9} {'peak / volume':>14}")
    for reader in READERS:
        seconds = statistics.median(x["seconds"] for x in results[reader])
        peak = statistics.median(x["peak_bytes"] for x in results[reader])
        summary[reader] = {"seconds": seconds, "time_ratio": seconds / base, "peak_mb": peak / 1e6,
                           "peak_ratio": peak / volume_bytes, "dtype": results[reader][0]["dtype"]}
        print(f"{reader:<10} {seconds:8.3f} {seconds / base:12.2f}x {peak / 1e6:9.1f} "
              f"{peak / volume_bytes:13.2f}x")
    ok_time = summary["medseg"]["time_ratio"] <= 1.0
    ok_memory = summary["medseg"]["peak_ratio"] <= 1.5
    print(f"\ntargets: medseg time <= 1.0x SimpleITK: {'met' if ok_time else 'NOT met'}; "
          f"peak <= 1.5x volume: {'met' if ok_memory else 'NOT met'}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layout", choices=("siemens", "ge"), default="siemens",
                        help="siemens: 12 bits unsigned stored; ge: 16 bits signed with padding")
    parser.add_argument("--json", help="also write the summary to this JSON file")
    parser.add_argument("--worker", nargs=3, metavar=("READER", "FOLDER", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))
        return
    summary = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
