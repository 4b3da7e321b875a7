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
