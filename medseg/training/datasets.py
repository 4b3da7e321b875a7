"""Find training cases in a DATA folder: MSD/nnU-Net, image/label pairs, or corrected cases.

Three layouts are recognised (first match wins):

``dataset.json`` + ``imagesTr/`` + ``labelsTr/``
    Medical Segmentation Decathlon (``"training": [{"image", "label"}]``, ``"labels":
    {"0": "background", ...}``) or nnU-Net v2 (``"labels": {"background": 0, ...}``, images
    ``imagesTr/<case>_0000.nii.gz``, labels ``labelsTr/<case>.nii.gz``).
corrected cases (written by medseg's napari plugin; see ``docs/training.md``)
    One folder per case holding ``labels.nii.gz``, ``labels.json`` (value -> name),
    ``provenance.json``, and ``image.nii.gz`` (or a ``"source_image"`` path in the
    provenance). DATA may be one such folder or a folder of them.
CT series with RTSTRUCTs
    DICOM series each with an RT Structure Set that references it (one case per structure set;
    contours rasterised onto the series' grid, ROI names mapped to class names by
    :mod:`medseg.export.roi_aliases`; see :mod:`medseg.training.rtstruct_cases`).
image/label pairs
    ``images/`` and ``labels/`` with the same file names, or files named ``<case>_image.*``
    and ``<case>_label.*`` (also ``_img``/``_ct``, ``_seg``/``_labels``/``_mask``) side by
    side; class names in ``labels.json`` (or ``dataset.json``) at the top of DATA.

Discovery reads no voxel data; :func:`medseg.training.transforms.load_case` checks grids and
label values when a case is read.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.labels import canonical_name, read_label_table

__all__ = ["TrainingCase", "DatasetDescription", "discover_cases", "read_label_names",
           "CORRECTED_FILES"]

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_IMAGE_TAGS = ("image", "img", "ct", "mr", "volume")
_LABEL_TAGS = ("label", "labels", "seg", "segmentation", "mask")

#: File names of one corrected case folder (see docs/training.md).
CORRECTED_FILES = {"image": "image.nii.gz", "labels": "labels.nii.gz", "names": "labels.json",
                   "provenance": "provenance.json"}


@dataclass(frozen=True)
class TrainingCase:
    """One image with its label map, or (``image is None``) a label map to synthesise from.

    ``label_names`` maps each label value of this case's map to a class name (0 = background
    included); these are the classes annotated in this case.
    """

    name: str
    image: str | None
    label: str
    label_names: dict[int, str]
    provenance: dict[str, Any] = field(default_factory=dict)
    #: "msd", "nnunet", "pairs", "corrected", "labels-only" (synthesis source) or "memory".
    source: str = "pairs"


@dataclass(frozen=True)
class DatasetDescription:
    """What :func:`discover_cases` found."""

    root: str
    layout: str
    cases: tuple[TrainingCase, ...]
    modality: str = "CT"

    @property
    def class_names(self) -> tuple[str, ...]:
        """Every class name found, in order of first appearance (background first)."""
        seen: dict[str, str] = {}
        for case in self.cases:
            for value in sorted(case.label_names):
                name = case.label_names[value]
                seen.setdefault(canonical_name(name), name)
        return tuple(seen.values())


def read_label_names(path: str | os.PathLike) -> dict[int, str]:
    """A value -> name table (``labels.json``, MSD or nnU-Net ``dataset.json``), background included.

    The forms accepted are :func:`medseg.labels.parse_label_table`'s: this is the same reader.
    """
    return {lab.value: lab.name for lab in read_label_table(path)}


def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in _IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(_IMAGE_SUFFIXES))


def _msd(root: Path, meta: dict) -> DatasetDescription:
    names = read_label_names(root / "dataset.json")
    modality_table = meta.get("modality") or meta.get("channel_names") or {"0": "CT"}
    if len(modality_table) != 1:
        raise InputError(root / "dataset.json", f"declares {len(modality_table)} input channels "
                         f"({', '.join(map(str, modality_table.values()))})",
                         "medseg models take one channel; make a data set with one image per case")
    modality = str(next(iter(modality_table.values())))
    modality = "CT" if modality.upper() == "CT" else ("MR" if modality.upper() in ("MR", "MRI", "T1", "T2") else modality)
    cases: list[TrainingCase] = []
    if isinstance(meta.get("training"), list):  # MSD
        layout = "msd"
        for entry in meta["training"]:
            image = (root / str(entry["image"])).resolve()
            label = (root / str(entry["label"])).resolve()
            cases.append(TrainingCase(_strip_suffix(image.name), str(image), str(label), names, source=layout))
    else:  # nnU-Net v2
        layout = "nnunet"
        ending = str(meta.get("file_ending", ".nii.gz"))
        labels_dir = root / "labelsTr"
        if not labels_dir.is_dir():
            raise InputError(root, "has dataset.json but no labelsTr/ folder", "add labelsTr/ with one label map per case")
        for label in sorted(labels_dir.glob(f"*{ending}")):
            case = label.name[: -len(ending)]
            image = root / "imagesTr" / f"{case}_0000{ending}"
            cases.append(TrainingCase(case, str(image), str(label), names, source=layout))
    _check_files(root, cases)
    images_dir = root / "imagesTr"
    if images_dir.is_dir():
        listed = {Path(c.image).resolve() for c in cases if c.image}
        orphans = [p.name for p in _image_files(images_dir) if p.resolve() not in listed]
        if orphans:
            raise InputError(images_dir, f"{len(orphans)} image(s) have no label map: {', '.join(orphans[:5])}",
                             "add their labels to labelsTr/ (and dataset.json), or move them out")
    return DatasetDescription(str(root), layout, tuple(cases), modality)


def _check_files(root: Path, cases: list[TrainingCase]) -> None:
    for case in cases:
        if case.image and not Path(case.image).exists():
            raise InputError(case.image, f"image of case {case.name} does not exist",
                             f"fix the entry in {root / 'dataset.json'} or add the file")
        if not Path(case.label).exists():
            raise InputError(case.label, f"label map of case {case.name} does not exist",
                             "add it, or remove the case from the data set")


def _corrected_case(folder: Path) -> TrainingCase:
    """One case folder, read by :func:`medseg.case.read_case` (the one case reader)."""
    from medseg.case import FILES, read_case

    case = read_case(folder, require_manifest=False)
    image = case.image_path
    if image is None:
        raise InputError(folder / FILES["labels"], "has no image (no image.nii.gz and no existing provenance "
                         "source_image)", "save the case with its image, or fix source_image in provenance.json")
    names = {lab.value: lab.name for lab in case.label_set}
    return TrainingCase(folder.name, str(image), str(folder / FILES["labels"]), names, case.provenance,
                        source="corrected")


def _is_corrected(folder: Path) -> bool:
    return (folder / CORRECTED_FILES["names"]).is_file() and any(
        (folder / n).is_file() for n in ("labels.nii.gz", "labels.nii", "labels.nrrd"))


def _tagged(stem: str, tags: tuple[str, ...]) -> str | None:
    match = re.fullmatch(r"(.+?)[_\-.](%s)" % "|".join(tags), stem, flags=re.IGNORECASE)
    return match.group(1) if match else None


def _pairs(root: Path) -> DatasetDescription:
    names_file = next((p for p in (root / "labels.json", root / "dataset.json") if p.is_file()), None)
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    if (root / "images").is_dir() and (root / "labels").is_dir():
        images = {_strip_suffix(p.name): p for p in _image_files(root / "images")}
        labels = {_strip_suffix(p.name): p for p in _image_files(root / "labels")}
    else:
        for path in _image_files(root):
            stem = _strip_suffix(path.name)
            if (case := _tagged(stem, _LABEL_TAGS)) is not None:
                labels[case] = path
            elif (case := _tagged(stem, _IMAGE_TAGS)) is not None:
                images[case] = path
            else:
                images[stem] = path
    if not images and not labels:
        raise InputError(root, "holds no training cases",
                         "give an MSD/nnU-Net folder (dataset.json, imagesTr, labelsTr), a folder of "
                         "corrected cases, or images/ + labels/ folders (see docs/training.md)")
    without = sorted(set(images) - set(labels))
    if without:
        raise InputError(images[without[0]], f"{len(without)} image(s) have no label map "
                         f"({', '.join(without[:5])})",
                         "add <case>_label.nii.gz (or labels/<same name>) for each, or move them out")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise InputError(labels[orphans[0]], f"{len(orphans)} label map(s) have no image ({', '.join(orphans[:5])})",
                         "add the images, or move the label maps out")
    if names_file is None:
        raise InputError(root, "has no labels.json naming the label values",
                         'add labels.json such as {"0": "background", "1": "liver"}')
    names = read_label_names(names_file)
    cases = [TrainingCase(case, str(images[case]), str(labels[case]), names, source="pairs")
             for case in sorted(images)]
    return DatasetDescription(str(root), "pairs", tuple(cases))


def discover_cases(data: str | os.PathLike) -> DatasetDescription:
    """Find the training cases in ``data`` (see the module docstring for the layouts).

    Raises
    ------
    InputError
        The folder is missing or empty, an image has no label map (or the reverse), class
        names are missing, or a listed file does not exist.
    """
    root = Path(data)
    if not root.is_dir():
        raise InputError(root, "is not a folder" if root.exists() else "does not exist",
                         "give the folder that holds the training data")
    dataset_json = root / "dataset.json"
    if dataset_json.is_file() and (root / "imagesTr").is_dir():
        try:
            meta = json.loads(dataset_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(dataset_json, f"cannot be read as JSON ({exc})", "fix the file") from exc
        description = _msd(root, meta)
    elif _is_corrected(root):
        description = DatasetDescription(str(root), "corrected", (_corrected_case(root),))
    elif any(_is_corrected(p) for p in root.iterdir() if p.is_dir()):
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        cases = [_corrected_case(p) for p in folders if _is_corrected(p)]
        skipped = [p.name for p in folders if not _is_corrected(p)]
        if skipped:
            raise InputError(root / skipped[0], f"{len(skipped)} folder(s) are not corrected cases "
                             f"({', '.join(skipped[:5])}): no labels.json and labels.nii.gz",
                             "remove them from DATA or save them as corrected cases")
        description = DatasetDescription(str(root), "corrected", tuple(cases))
    else:
        from medseg.training.rtstruct_cases import rtstruct_training_cases

        description = rtstruct_training_cases(root) or _pairs(root)
    if not description.cases:
        raise InputError(root, f"holds no training cases ({description.layout} layout found, 0 cases)",
                         "add at least one image with its label map")
    return description
