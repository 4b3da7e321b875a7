"""The real scans the default model is judged on, each with what its reference labels and how.

Every scan here is real (no phantom) and none is trained on by recipe v2 (``default_v2``):

=================  ==============================================  ===================================
case               scan                                            reference (scored classes only)
=================  ==============================================  ===================================
example_ct         TotalSegmentator's example abdomen CT, 3 mm     TotalSegmentator's prediction
                   (lower chest to pelvis, non-contrast)           (``--fast``), all default classes
example_ct_dicom   a 20-slice (40 mm) upper-abdomen DICOM slab     TotalSegmentator's prediction
aorta_cta          CT angiography, chest and upper abdomen,        aorta (TotalSegmentator aorta
                   1.5 mm (``aorta_report/example_ct``)            model, pasted from its crop);
                                                                   lungs from HU
lung1, lung2       chest-only CTs, 0.6 x 0.6 x 5 mm, a lung        lungs from HU; the tumour as
                   tumour each (pyradiomics test data)             ``lesion``
s0003              TotalSegmentator data set subject s0003:        expert-reviewed ground truth
                   head-neck and upper chest, 1.5 mm               (lung apices, bone)
=================  ==============================================  ===================================

"Lungs from HU" is :func:`medseg.recipes.lung_reference.lung_reference` (checked against s0003's
expert lungs: Dice 0.95 / 0.98). Only the classes a reference labels are scored on a scan; the
others are reported as volumes, never as Dice. Scans without a known lesion count every
predicted lesion component as false.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["HeldoutCase", "heldout_cases", "shared_data_root", "TRAINING_PAIRS", "HELDOUT_PAIRS"]

#: Real image/label pairs of ``train/`` that recipe v2 trains on, and the one it holds out.
TRAINING_PAIRS = ("totalseg_s0002",)
HELDOUT_PAIRS = ("totalseg_s0003",)


def shared_data_root(path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$MEDSEG_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    if path:
        return Path(path)
    env = os.environ.get("MEDSEG_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True)
class HeldoutCase:
    """One held-out real scan.

    Attributes
    ----------
    name, description : str
    image : str
        The scan (any format medseg reads).
    field_of_view : str
        "chest", "abdomen", "chest-abdomen", "head-neck-chest", "slab": how the card groups results.
    reference_kind : str
        What the reference is (a model's prediction, expert ground truth, HU threshold).
    chest_only : bool
        The scan shows no abdomen below the diaphragm worth scoring: liver above the lungs' widest
        slice counts as a failure (the chest-only check).
    """

    name: str
    description: str
    image: str
    field_of_view: str
    reference_kind: str
    chest_only: bool = False
    _kind: str = ""
    _paths: dict = field(default_factory=dict)

    def load(self, labels):
        """(image Volume, reference Volume in ``labels``' values, scored {value: name}, lesion mask or None)."""
        from medseg.io import load_volume

        image = load_volume(self.image)
        scored: dict[int, str] = {}
        reference = np.zeros(image.shape, dtype=np.uint8)
        lesion = None
        if self._kind == "totalseg":
            from medseg.training.datasets import read_label_names
            from medseg.training.heldout import reference_in_model_classes

            ref = load_volume(self._paths["label"])
            if not ref.same_grid(image) and ref.reoriented(image.orientation).same_grid(image, atol_mm=0.05):
                ref = ref.reoriented(image.orientation)
            ref = reference_in_model_classes(ref.with_array(ref.array, label_set=None),
                                             read_label_names(self._paths["names"]), labels)
            reference = np.asarray(ref.array, dtype=np.uint8)
            scored = {lab.value: lab.name for lab in labels.foreground if lab.name != "lesion"}
            if self._paths.get("partial"):  # a head-neck-chest scan: only what it shows is scored
                present = set(np.unique(reference).tolist())
                scored = {v: n for v, n in scored.items() if v in present}
        if self._paths.get("aorta"):
            aorta = _paste(load_volume(self._paths["aorta"]), image)
            value = labels.value_of("aorta")
            reference[aorta] = value
            scored[value] = "aorta"
        if self._paths.get("lungs_from_hu"):
            from medseg.recipes.lung_reference import lung_reference

            lungs = lung_reference(image).array
            for side, name in ((1, "lung_right"), (2, "lung_left")):
                value = labels.value_of(name)
                reference[(lungs == side) & (reference == 0)] = value
                scored[value] = name
        if self._paths.get("lesion"):
            lesion = np.asarray(load_volume(self._paths["lesion"]).array) > 0
        return image, image.with_array(reference, modality="SEG", label_set=labels), scored, lesion


def _paste(mask_volume, image) -> np.ndarray:
    """A mask on a crop of ``image``'s grid placed into ``image``'s grid (same spacing and axes)."""
    offset = np.rint(image.world_to_voxel(mask_volume.voxel_to_world(np.zeros((1, 3))))[0]).astype(int)
    if not np.allclose(mask_volume.affine[:3, :3], image.affine[:3, :3], atol=1e-3):
        raise ValueError(f"{mask_volume.source.path}: not a crop of {image.source.path}")
    out = np.zeros(image.shape, dtype=bool)
    src = np.asarray(mask_volume.array) > 0
    dst = tuple(slice(max(o, 0), min(o + s, n)) for o, s, n in zip(offset, src.shape, image.shape))
    cut = tuple(slice(d.start - o, d.stop - o) for d, o in zip(dst, offset))
    out[dst] = src[cut]
    return out


def heldout_cases(shared_data: str | os.PathLike | None = None) -> list[HeldoutCase]:
    """The held-out real scans found under the shared data folder (missing ones are left out)."""
    root = shared_data_root(shared_data)
    ts = root / "totalsegmentator"
    names = root / "train" / "labels_only" / "totalseg_total_classes.json"
    cases = [
        HeldoutCase("example_ct", "TotalSegmentator example CT, lower chest to pelvis, 3 mm",
                    str(ts / "example_ct.nii.gz"), "chest-abdomen", "TotalSegmentator prediction",
                    _kind="totalseg", _paths={"label": str(ts / "example_seg_fast_force_split.nii.gz"),
                                              "names": str(names)}),
        HeldoutCase("example_ct_dicom", "20-slice upper-abdomen DICOM slab, 0.98 x 0.98 x 2 mm",
                    str(ts / "example_ct_dicom"), "slab", "TotalSegmentator prediction",
                    _kind="totalseg", _paths={"label": str(ts / "example_seg_dicom.nii.gz"), "names": str(names)}),
        HeldoutCase("aorta_cta", "CT angiography, chest and upper abdomen, 1.5 mm",
                    str(ts / "aorta_report" / "example_ct.nii.gz"), "chest-abdomen",
                    "aorta: TotalSegmentator prediction; lungs: HU threshold",
                    _paths={"aorta": str(ts / "aorta_report" / "test_result" / "models" / "aorta.nii.gz"),
                            "lungs_from_hu": True}),
    ]
    for n in (1, 2):
        folder = root / "lesions" / "pyradiomics"
        cases.append(HeldoutCase(f"lung{n}", f"chest-only CT with a lung tumour (pyradiomics lung{n})",
                                 str(folder / f"lung{n}_image.nrrd"), "chest", "lungs: HU threshold; tumour mask",
                                 chest_only=True,
                                 _paths={"lungs_from_hu": True, "lesion": str(folder / f"lung{n}_label.nrrd")}))
    for pair in HELDOUT_PAIRS:
        cases.append(HeldoutCase(pair.replace("totalseg_", ""), "TotalSegmentator data set subject, head-neck "
                                 "and upper chest, 1.5 mm", str(root / "train" / "images" / f"{pair}_ct.nii.gz"),
                                 "head-neck-chest", "expert-reviewed ground truth", _kind="totalseg",
                                 _paths={"label": str(root / "train" / "labels_only" / f"{pair}_label.nii.gz"),
                                         "names": str(names), "partial": True}))
    return [c for c in cases if Path(c.image).exists()]
