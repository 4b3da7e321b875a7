"""Shared fixtures: where the real data lives, and small volumes with known geometry.

Real scanner data is read from ``../shared/data`` beside the repository (override with the
environment variable ``MEDSEG_SHARED_DATA``); it is never copied into the repository. Tests
that need it carry ``@pytest.mark.shared_data`` and are skipped only when that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()

# Two cores in CI: keep torch from oversubscribing when tests run model code.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared_data: reads real scanner data from ../shared/data")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARED_DATA.is_dir():
        return
    absent = pytest.mark.skipif(True, reason=f"real data folder {SHARED_DATA} is absent")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(absent)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data collection (``../shared/data``)."""
    return SHARED_DATA


@pytest.fixture
def make_volume():
    """Factory for a small Volume with a given shape, spacing, axis codes and origin."""
    from medseg.volume import Volume

    def _make(array=None, *, shape=(8, 9, 10), spacing=(1.0, 1.0, 1.0), axcodes="RAS",
              origin=(0.0, 0.0, 0.0), modality="CT", dtype=np.int16):
        from nibabel.orientations import axcodes2ornt, inv_ornt_aff

        if array is None:
            array = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(dtype)
        array = np.asarray(array)
        # Affine that points each axis where axcodes say, scaled by spacing, shifted to origin.
        ornt = axcodes2ornt(tuple(axcodes))
        affine = np.zeros((4, 4))
        for axis, (world_axis, sign) in enumerate(ornt):
            affine[int(world_axis), axis] = sign * spacing[axis]
        affine[:3, 3] = origin
        affine[3, 3] = 1.0
        del inv_ornt_aff
        return Volume(array, affine, modality)

    return _make


def write_real_ct_pairs(shared_data: Path, out: Path, classes: dict[int, int], names: dict[int, str],
                        slabs: dict[str, int], *, i0: int, j0: int, size_ij: tuple[int, int], depth: int) -> Path:
    """Slabs of the real 3 mm CT (``totalsegmentator/example_ct``) as image/label pairs for training.

    ``classes`` maps TotalSegmentator ids to the label values written; ``slabs`` maps a case name to
    its first k. Each slab keeps the CT's exact geometry (origin moved to the crop's corner).
    """
    import json

    import nibabel as nib

    root = shared_data / "totalsegmentator"
    ct = nib.load(str(root / "example_ct.nii.gz"))
    seg = np.asarray(nib.load(str(root / "example_seg_fast_force_split.nii.gz")).dataobj)
    image = np.asarray(ct.dataobj).astype(np.int16)
    labels = np.zeros(seg.shape, np.uint8)
    for ts_id, value in classes.items():
        labels[seg == ts_id] = value
    for name, k0 in slabs.items():
        box = (slice(i0, i0 + size_ij[0]), slice(j0, j0 + size_ij[1]), slice(k0, k0 + depth))
        affine = ct.affine.copy()
        affine[:3, 3] = ct.affine[:3, :3] @ [i0, j0, k0] + ct.affine[:3, 3]
        nib.save(nib.Nifti1Image(image[box], affine), str(out / f"{name}_image.nii.gz"))
        nib.save(nib.Nifti1Image(labels[box], affine), str(out / f"{name}_label.nii.gz"))
    (out / "labels.json").write_text(json.dumps({"0": "background", **{str(k): v for k, v in names.items()}}))
    return out
