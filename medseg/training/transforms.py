"""The MONAI data pipeline of training: cases to model space, then random crops and augmentation.

Deterministic part (run once per case, then cached): read image and label map with
:func:`medseg.io.load_volume`, check they share a grid, turn label values into network
channels, reorient to the model's axis codes, resample to its spacing (image bilinear, labels
nearest), crop to the body with a margin, and pre-compute the voxels of each class for
foreground-balanced cropping. Label maps without an image keep their source structure values
(``gen``) and a body-hull distance for :mod:`medseg.training.synth`.

Random part (every sample): class-balanced crop (``RandCropByLabelClassesd``), affine
augmentation (rotation, scaling) of image and labels together, image synthesis for label-only
sources (``SynthesizeCTd``), lesion insertion (``InsertLesionsd``), HU-space intensity
augmentation, then the model's own intensity normalisation (:func:`normalise_intensity`, the
same function inference uses).

Arrays are channel-first ``(1, I, J, K)`` in the model's orientation (default RAS).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.config import KeysCollection

from medseg.errors import InputError
from medseg.labels import LabelSet, canonical_name
from medseg.models.spec import IntensitySpec, Preprocessing
from medseg.training.class_maps import tissue_of
from medseg.training.datasets import TrainingCase
from medseg.training.synth import (LESION_BASE, SynthesisSettings, hull_distance_mm, insert_lesions,
                                   synthesize_ct)
from medseg.volume import Volume

__all__ = ["normalise_intensity", "to_model_grid", "channel_lookup", "load_case", "load_label_source",
           "SynthesizeCTd", "InsertLesionsd", "training_transforms", "prepare_item", "crop_size", "AIR_HU"]

#: Value that pads CT images (air).
AIR_HU = -1024.0


def normalise_intensity(array, intensity: IntensitySpec) -> np.ndarray:
    """Network input from voxel values as the spec says: the inference code's own function.

    Returns a new float32 array (the input is not modified). Training and inference share
    :func:`medseg.inference.preprocess.apply_intensity`, so a model sees the same values in both.
    """
    from medseg.inference.preprocess import apply_intensity

    values = np.array(np.asarray(array), dtype=np.float32, copy=True)
    return apply_intensity(values, intensity)


def to_model_grid(volume: Volume, pre: Preprocessing, *, labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` on the model grid of inference (:func:`medseg.inference.preprocess.plan_grid`).

    Orientation is exact (axes permuted/flipped); spacing is resampled along the oriented axes,
    trilinearly for images (:func:`~medseg.inference.preprocess.resample_to_grid`) and by nearest
    neighbour for label maps (:meth:`~medseg.inference.preprocess.ModelGrid.nearest_labels`: the
    same source coordinates, rounded). Returns the array ``(I, J, K)`` (float32 image, or int32
    label values) and the grid's 4x4 RAS affine.
    """
    from medseg.inference.preprocess import plan_grid, resample_to_grid

    grid = plan_grid(volume, pre)
    if not labels:
        return resample_to_grid(volume, grid), np.asarray(grid.affine, dtype=np.float64)
    return grid.nearest_labels(volume.array).astype(np.int32), np.asarray(grid.affine, dtype=np.float64)


def channel_lookup(case_names: Mapping[int, str], model_labels: LabelSet) -> np.ndarray:
    """Table ``lut[value] = channel`` from a case's value -> name table to the model's channels.

    A name is matched to the model's classes first as it is, then through
    :mod:`medseg.training.class_maps` (``lung_upper_lobe_left`` -> ``lung_left``,
    ``vertebrae_L1`` -> ``bone``); a structure the model has no class for is background.
    """
    from medseg.training.class_maps import default_class_of

    lut = np.zeros(max(case_names) + 1, dtype=np.int16)
    model_names = {canonical_name(n): c for c, n in enumerate(model_labels.names)}
    for value, name in case_names.items():
        channel = model_names.get(canonical_name(name))
        if channel is None and (default := default_class_of(name)) is not None:
            channel = model_names.get(canonical_name(default))
        lut[value] = channel or 0
    return lut


def _annotated(case_names: Mapping[int, str], model_labels: LabelSet) -> np.ndarray:
    """Channels this case annotates: those its names reach, plus background."""
    lut = channel_lookup(case_names, model_labels)
    mask = np.zeros(len(model_labels), dtype=bool)
    mask[np.unique(lut)] = True
    mask[0] = True
    return mask


def _label_values(label: Volume, case: TrainingCase) -> np.ndarray:
    array = label.array
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        if not np.allclose(array, rounded, atol=1e-3):
            raise InputError(case.label, "is not a label map (non-integer values)",
                             "give a label map with one integer value per class")
        array = rounded
    array = array.astype(np.int32, copy=False)
    values = np.unique(array)
    unnamed = [int(v) for v in values if int(v) not in case.label_names]
    if unnamed:
        raise InputError(case.label, f"has label values {unnamed[:10]} that have no class name "
                         f"(names given for {sorted(case.label_names)})",
                         "add them to labels.json / dataset.json, or set those voxels to 0")
    return array


def _crop_box(mask: np.ndarray, margin_vox: Sequence[int]) -> tuple[slice, ...]:
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(idx[0]) - margin_vox[axis], 0), min(int(idx[-1]) + margin_vox[axis] + 1, mask.shape[axis])))
    return tuple(box)


def load_case(case: TrainingCase, pre: Preprocessing, model_labels: LabelSet) -> dict[str, Any]:
    """Read one image/label pair into model space (see the module docstring).

    Raises
    ------
    InputError
        Image and label map on different grids (naming both files), label values without a
        class name, unreadable files.
    """
    from medseg.io import load_volume

    image = load_volume(case.image)
    label = load_volume(case.label)
    if not image.same_grid(label, atol_mm=0.05) and image.same_grid(label.reoriented(image.orientation), atol_mm=0.05):
        # The same voxels stored in another axis order (e.g. dcm2niix's LAS for an LPS series).
        label = label.reoriented(image.orientation)
    if not image.same_grid(label, atol_mm=0.05):
        raise InputError(case.label, f"is on another grid than its image {case.image} "
                         f"(label {label.shape} @ {np.round(label.spacing, 3).tolist()} mm origin "
                         f"{np.round(label.origin, 2).tolist()}; image {image.shape} @ "
                         f"{np.round(image.spacing, 3).tolist()} mm origin {np.round(image.origin, 2).tolist()})",
                         "resample the label map onto the image grid, or pair it with the right image")
    values = _label_values(label, case)
    channels = channel_lookup(case.label_names, model_labels)[values]
    from medseg.inference.preprocess import plan_grid, resample_to_grid

    grid = plan_grid(image, pre)  # one grid for both: the label map is on the image's grid (checked above)
    image_arr, affine = resample_to_grid(image, grid), np.asarray(grid.affine, dtype=np.float64)
    label_arr = grid.nearest_labels(channels.astype(np.int16))
    threshold = pre.foreground_threshold
    body = image_arr > (threshold if threshold is not None else image_arr.min())
    margin = [int(np.ceil(pre.crop_margin_mm / s)) for s in pre.spacing_mm]
    box = _crop_box(body | (label_arr > 0), margin) if pre.crop_foreground else tuple(slice(None) for _ in range(3))
    affine = affine.copy()
    affine[:3, 3] = affine[:3, :3] @ [b.start or 0 for b in box] + affine[:3, 3]
    return {
        "image": image_arr[box][None].astype(np.float32),
        "label": label_arr[box][None].astype(np.int16),
        "annotated": _annotated(case.label_names, model_labels),
        "affine": affine,
        "name": case.name,
    }


def load_label_source(case: TrainingCase, pre: Preprocessing, model_labels: LabelSet) -> dict[str, Any]:
    """Read a label map without image as a synthesis source: structure values, target, body hull."""
    from medseg.io import load_volume

    label = load_volume(case.label)
    values = _label_values(label, case)
    gen, _ = to_model_grid(label.with_array(values), pre, labels=True)
    box = _crop_box(gen > 0, [int(np.ceil(60.0 / s)) for s in pre.spacing_mm])
    gen = gen[box]
    target_lut = channel_lookup(case.label_names, model_labels)
    target = target_lut[gen]
    # Synthetic images are consistent with their map: nothing is drawn where the map is silent
    # (no bone or lung in an AMOS abdomen), so every class is known, present or absent.
    annotated = np.ones(len(model_labels), dtype=bool)
    return {
        "gen": gen[None].astype(np.int16),
        "label": target[None].astype(np.int16),
        "hull": hull_distance_mm(gen > 0, pre.spacing_mm)[None],
        "annotated": annotated,
        "tissues": {int(v): tissue_of(n) for v, n in case.label_names.items() if v != 0},
        "name": case.name,
    }


class SynthesizeCTd(mt.RandomizableTransform, mt.MapTransform):
    """Make ``image`` (HU) from the generation labels ``gen`` of a label-only source.

    Items without ``gen`` (real images) pass unchanged. ``gen``, ``hull`` and ``tissues`` are
    removed so that real and synthetic samples collate together.
    """

    def __init__(self, settings: SynthesisSettings, spacing_mm: Sequence[float]) -> None:
        mt.RandomizableTransform.__init__(self, prob=1.0)
        mt.MapTransform.__init__(self, keys=["gen"], allow_missing_keys=True)
        self.settings = settings
        self.spacing_mm = tuple(float(s) for s in spacing_mm)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if "gen" not in d:
            return d
        rng = np.random.default_rng(self.R.randint(0, 2**31 - 1))
        gen = np.asarray(d.pop("gen"))[0].astype(np.int32)
        hull = np.asarray(d.pop("hull"))[0]
        image = synthesize_ct(gen, d.pop("tissues"), hull, rng=rng, settings=self.settings,
                              spacing_mm=self.spacing_mm)
        d["image"] = torch.from_numpy(image[None])
        return d


class InsertLesionsd(mt.RandomizableTransform, mt.MapTransform):
    """With probability ``prob``, insert synthetic lesions into liver/spleen/kidney of a source."""

    def __init__(self, lesion_channel: int, spacing_mm: Sequence[float], prob: float = 0.5,
                 host_tissues: tuple[str, ...] = ("liver", "spleen", "kidney"), count: tuple[int, int] = (1, 4)) -> None:
        mt.RandomizableTransform.__init__(self, prob=prob)
        mt.MapTransform.__init__(self, keys=["gen"], allow_missing_keys=True)
        self.count = tuple(count)
        self.lesion_channel = int(lesion_channel)
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.host_tissues = host_tissues

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        if "gen" not in d or not self._do_transform:
            return d
        hosts = [v for v, t in d["tissues"].items() if t in self.host_tissues and v < LESION_BASE]
        rng = np.random.default_rng(self.R.randint(0, 2**31 - 1))
        gen = np.asarray(d["gen"])[0].astype(np.int32)
        target = np.asarray(d["label"])[0].astype(np.int16)
        gen, target = insert_lesions(gen, target, host_values=hosts, lesion_channel=self.lesion_channel,
                                     rng=rng, spacing_mm=self.spacing_mm, count=self.count)
        d["gen"] = torch.from_numpy(gen[None].astype(np.int16))
        d["label"] = torch.from_numpy(target[None])
        return d


class _Normalised(mt.MapTransform):
    def __init__(self, keys: KeysCollection, intensity: IntensitySpec) -> None:
        super().__init__(keys)
        self.intensity = intensity

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.from_numpy(normalise_intensity(d[key], self.intensity))
        return d


def training_transforms(
    pre: Preprocessing,
    n_classes: int,
    *,
    num_samples: int = 2,
    class_ratios: Sequence[float] | None = None,
    synthesis: SynthesisSettings | None = None,
    lesion_channel: int | None = None,
    lesion_probability: float = 0.5,
    lesion_count: tuple[int, int] = (1, 4),
    augment: bool = True,
) -> mt.Compose:
    """The random part of the pipeline, applied to cached items from :func:`load_case` /
    :func:`load_label_source`; yields ``num_samples`` dicts with ``image`` (normalised,
    ``(1, *roi)``), ``label`` (channels) and ``annotated`` (per-channel bool)."""
    roi = tuple(int(s) for s in pre.roi_size)
    # Crop a margin larger than the ROI so rotations do not pull in padding at the corners.
    crop = crop_size(pre, augment=augment)
    ratios = list(class_ratios) if class_ratios is not None else [1.0] * n_classes
    keys = ["image", "label", "gen", "hull"]
    steps: list[Any] = [
        mt.RandCropByLabelClassesd(keys, label_key="label", spatial_size=crop, ratios=ratios,
                                   num_classes=n_classes, num_samples=num_samples,
                                   indices_key="label_cls_indices", warn=False, allow_missing_keys=True),
    ]
    if lesion_channel is not None:
        steps.append(InsertLesionsd(lesion_channel, pre.spacing_mm, prob=lesion_probability, count=lesion_count))
    if augment:
        steps.append(mt.RandAffined(
            keys, spatial_size=roi, prob=1.0,
            rotate_range=(np.deg2rad(7), np.deg2rad(7), np.deg2rad(15)),
            scale_range=(0.15, 0.15, 0.15), translate_range=(0, 0, 0),
            mode=("bilinear", "nearest", "nearest", "bilinear"),
            padding_mode=("border", "zeros", "zeros", "border"), allow_missing_keys=True))
    steps.append(SynthesizeCTd(synthesis or SynthesisSettings(), pre.spacing_mm))
    if augment:
        steps += [
            mt.RandShiftIntensityd(["image"], offsets=20.0, prob=0.3),
            mt.RandScaleIntensityd(["image"], factors=0.05, prob=0.3),
            mt.RandGaussianNoised(["image"], std=15.0, prob=0.2),
            mt.RandGaussianSmoothd(["image"], sigma_x=(0.25, 0.8), sigma_y=(0.25, 0.8),
                                   sigma_z=(0.25, 1.2), prob=0.2),
        ]
    steps += [
        _Normalised(["image"], pre.intensity),
        mt.CastToTyped(["label"], dtype=torch.long),
        mt.SelectItemsd(["image", "label", "annotated"]),
    ]
    return mt.Compose(steps)


def crop_size(pre: Preprocessing, *, augment: bool = True) -> tuple[int, int, int]:
    """Size of the random crops: the ROI, plus 20 % for rotations when augmenting."""
    return tuple(int(np.ceil(s * 1.2)) if augment else int(s) for s in pre.roi_size)


def prepare_item(item: dict[str, Any], pre: Preprocessing, n_classes: int, *, augment: bool = True) -> dict[str, Any]:
    """Pad a loaded item to at least the crop size and list the voxels of every class.

    Deterministic, so it is cached with the item; the indices let ``RandCropByLabelClassesd``
    pick foreground-balanced centres without searching the volume at every sample.
    """
    size = crop_size(pre, augment=augment)
    pads = [
        mt.SpatialPadd(["image"], size, mode="constant", constant_values=AIR_HU, allow_missing_keys=True),
        mt.SpatialPadd(["label", "gen"], size, mode="constant", constant_values=0, allow_missing_keys=True),
        mt.SpatialPadd(["hull"], size, mode="constant", constant_values=80.0, allow_missing_keys=True),
        mt.ClassesToIndicesd("label", num_classes=n_classes),
    ]
    out = dict(item)
    for step in pads:
        out = step(out)
    for key in ("image", "label", "gen", "hull"):
        if key in out:
            out[key] = np.asarray(out[key])
    return out
