"""Write a phantom as the files medseg ships: a DICOM series, NIfTI volumes, JSON and a README.

Everything written is a function of the phantom alone (fixed DICOM dates and UIDs from the
seed, gzip without time stamps), so writing the same seed twice gives the same bytes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import InputError
from medseg.labels import DEFAULT_ORGANS
from medseg.phantom._generate import Phantom
from medseg.progress import ProgressCallback, report

__all__ = ["PhantomFiles", "write_phantom", "STUDY_DATETIME"]

#: Date and time written into the phantom's DICOM files (fixed, for byte-identical output).
STUDY_DATETIME = _dt.datetime(2000, 1, 1, 12, 0, 0)


@dataclass(frozen=True)
class PhantomFiles:
    """Paths of one written phantom (all inside ``folder``)."""

    folder: Path
    ct_dicom: Path
    ct: Path
    organs: Path
    lesions: Path
    organs_json: Path
    truth_json: Path
    readme: Path
    dicom_files: tuple[Path, ...]


def write_phantom(phantom: Phantom, outdir: str | os.PathLike, *, replace: bool = False,
                  progress: ProgressCallback | None = None) -> PhantomFiles:
    """Write ``phantom`` to ``outdir/phantom/``, atomically.

    Files: ``ct_dicom/`` (CT Image Storage series, one file per slice), ``ct.nii.gz``,
    ``organs.nii.gz``, ``lesions.nii.gz``, ``organs.json`` (label value -> name),
    ``truth.json`` (known answers) and ``README.md``. The folder is built beside its final
    place and renamed into it when complete.

    Parameters
    ----------
    phantom : Phantom
        From :func:`medseg.phantom.make_phantom`.
    outdir : path-like
        Parent folder; created if missing.
    replace : bool
        Replace an existing non-empty ``outdir/phantom``. Default: refuse.
    progress
        See :mod:`medseg.progress`.
    """
    from medseg.io import save_volume
    from medseg.io._dicom_write import _new_folder, _swap_into_place, write_dicom_series

    folder = Path(outdir) / "phantom"
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder", "choose another output folder")
    if folder.is_dir() and any(folder.iterdir()) and not replace:
        raise InputError(folder, "already exists and is not empty",
                         "choose another output folder, or pass --replace to overwrite it")
    seed = phantom.truth["seed"]
    tmp = _new_folder(folder.parent, "phantom.medseg-tmp-")
    try:
        dicom = write_dicom_series(
            phantom.ct, tmp / "ct_dicom",
            series_description=phantom.ct.source.series_description,
            series_number=1,
            patient_id=f"MEDSEG-PHANTOM-{seed}",
            patient_name="Phantom^Medseg",
            uid_seed=f"medseg phantom v{phantom.truth['generator_version']} seed {seed} "
                     f"variation {phantom.truth['variation']} shape {phantom.truth['geometry']['shape']}",
            study_datetime=STUDY_DATETIME,
            compression="rle",  # keeps the shipped sample small; every reader decodes RLE
            attributes={
                "StudyDescription": "medseg synthetic abdominal CT phantom",
                "BodyPartExamined": "ABDOMEN",
                "ContrastBolusAgent": "iodinated contrast (simulated portal venous phase)",
                "ImageComments": f"Synthetic image made by medseg.phantom (seed {seed}); not patient data",
                "PatientIdentityRemoved": "YES",
            },
            progress=progress,
        )
        report(progress, 0, 3, "writing NIfTI")
        save_volume(phantom.ct, tmp / "ct.nii.gz")
        save_volume(phantom.organs, tmp / "organs.nii.gz")
        save_volume(phantom.lesions, tmp / "lesions.nii.gz")
        report(progress, 3, 3, "writing NIfTI")
        (tmp / "organs.json").write_text(json.dumps(DEFAULT_ORGANS.to_dict(), indent=1) + "\n", encoding="utf-8")
        (tmp / "truth.json").write_text(json.dumps(phantom.truth, indent=1) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(readme_text(phantom.truth), encoding="utf-8")
        _swap_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PhantomFiles(folder, folder / "ct_dicom", folder / "ct.nii.gz", folder / "organs.nii.gz",
                        folder / "lesions.nii.gz", folder / "organs.json", folder / "truth.json",
                        folder / "README.md", tuple(folder / "ct_dicom" / f.name for f in dicom))


def _command(truth: dict) -> str:
    from medseg.phantom._generate import DEFAULT_SHAPE, DEFAULT_SPACING_MM

    geometry = truth["geometry"]
    parts = ["python -m medseg.phantom OUTDIR", f"--seed {truth['seed']}"]
    if truth["variation"] != 1.0:
        parts.append(f"--variation {truth['variation']:g}")
    if tuple(geometry["shape"]) != DEFAULT_SHAPE:
        parts.append("--shape " + " ".join(str(s) for s in geometry["shape"]))
    if tuple(geometry["spacing_mm"]) != DEFAULT_SPACING_MM:
        parts.append("--spacing " + " ".join(f"{s:g}" for s in geometry["spacing_mm"]))
    return " ".join(parts)


def readme_text(truth: dict) -> str:
    """The README of a written phantom: what it is, how it was made, and its known answers."""
    g = truth["geometry"]
    shape = " x ".join(str(s) for s in g["shape"])
    spacing = " x ".join(f"{s:g}" for s in g["spacing_mm"])
    lines = [
        f"# medseg synthetic abdominal CT phantom (seed {truth['seed']})",
        "",
        "A **synthetic** portal-venous abdominal CT made by medseg's own deterministic code",
        "(`medseg.phantom`, generator version " + truth["generator_version"] + "). It is not patient data",
        "and contains no third-party images. The shapes are smooth randomly deformed",
        "ellipsoids, superellipses and tubes placed in correct patient anatomy (RAS: +x patient",
        "right, +y anterior, +z superior); tissue values are typical portal-venous HU; the noise",
        "is Gaussian, blurred in-plane like CT noise.",
        "",
        "Regenerate it (byte-identical) with:",
        "",
        "```",
        _command(truth),
        "```",
        "",
        "which writes `OUTDIR/phantom/`; the copy shipped in the repository is",
        "`sample_data/phantom/` (`python -m medseg.phantom sample_data --replace`).",
        "",
        "## Files",
        "",
        "| file | what |",
        "|---|---|",
        f"| `ct_dicom/` | the CT as a DICOM series ({g['shape'][2]} files, CT Image Storage, RLE Lossless, "
        "uint16 pixels with RescaleIntercept -1024, axial head-first-supine LPS) |",
        "| `ct.nii.gz` | the same CT in HU (int16), written by `medseg.io.save_volume` |",
        "| `organs.nii.gz` | organ labels (uint8), values as in `organs.json`; lesion voxels keep their organ's label |",
        "| `lesions.nii.gz` | lesion instances (uint8): 0 background, 1..N one value per lesion |",
        "| `organs.json` | label value -> organ name (medseg's default organ classes) |",
        "| `truth.json` | the known answers below, exactly, plus tissue HU and definitions |",
        "",
        "## Geometry",
        "",
        f"- shape {shape} voxels (i, j, k); spacing {spacing} mm; orientation {g['orientation']} "
        "(i to the patient's left, j posterior, k superior), as a scanner's axial series",
        f"- origin (centre of voxel 0,0,0) RAS {g['origin_ras_mm']} mm; voxel volume {g['voxel_volume_ml']} mL",
        "",
        f"## Lesions: {truth['lesion_count']} instances, {truth['lesion_components_26']} "
        "connected components (26-connectivity)",
        "",
        "| id | organ | voxels | volume mL | centroid RAS mm | longest diameter mm | axial diameter mm | touches |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lesion in truth["lesions"]:
        centroid = ", ".join(f"{v:.1f}" for v in lesion["centroid_ras_mm"])
        touches = ", ".join(str(t) for t in lesion["touches"]) or "-"
        lines.append(f"| {lesion['id']} | {lesion['organ']} | {lesion['voxels']} | {lesion['volume_ml']:.3f} | "
                     f"{centroid} | {lesion['longest_diameter_mm']:.1f} | "
                     f"{lesion['longest_axial_diameter_mm']:.1f} | {touches} |")
    lines += [
        "",
        "Lesions that touch form one connected component: instance separation must split them.",
        "Volumes are voxel counts x voxel volume (the masks are the truth, so they are exact).",
        "Diameters: largest distance between the centres of two voxels of the lesion, in 3D and",
        "within one axial slice.",
        "",
        "## Organs",
        "",
        "| value | organ | voxels | volume mL | mean HU |",
        "|---|---|---|---|---|",
    ]
    for name, row in truth["organs"].items():
        mean = "-" if row["mean_hu"] is None else f"{row['mean_hu']:.1f}"
        lines.append(f"| {row['value']} | {name} | {row['voxels']} | {row['volume_ml']:.3f} | {mean} |")
    lines += [
        "",
        f"Image noise: {truth['noise_sd_hu']:.1f} HU (standard deviation before rounding).",
        "",
    ]
    return "\n".join(lines)
