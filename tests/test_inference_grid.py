"""Model space and back, piece by piece, against MONAI's own transforms and brute force.

* the model grid (shape, affine) equals MONAI Orientation + Spacing's, for permuted, flipped and
  oblique inputs; resampled values equal Spacing's bilinear output;
* intensity normalisation equals ScaleIntensityRange / NormalizeIntensity / ScaleIntensity;
* streamed sliding-window slabs equal ``sliding_window_inference`` (Gaussian and constant,
  padding of inputs smaller than the window);
* the streamed restore to the input grid equals full trilinear interpolation of every class
  probability followed by argmax (what Invertd + AsDiscrete do), voxel for voxel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nibabel.orientations import axcodes2ornt
from scipy.ndimage import gaussian_filter, map_coordinates

from medseg.errors import InputError
from medseg.inference.preprocess import (
    apply_intensity,
    check_fits_roi,
    foreground_box,
    plan_grid,
    resample_to_grid,
    window_aligned_box,
)
from medseg.inference.restore import LabelRestorer
from medseg.inference.sliding import plan_windows, sliding_window_slabs
from medseg.models.spec import IntensitySpec, Preprocessing
from medseg.volume import Volume


def _affine(axcodes: str, spacing, origin=(0.0, 0.0, 0.0), rotate_deg: float = 0.0) -> np.ndarray:
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, (world, sign) in enumerate(axcodes2ornt(tuple(axcodes))):
        affine[int(world), axis] = sign * spacing[axis]
    affine[:3, 3] = origin
    if rotate_deg:
        t = np.deg2rad(rotate_deg)
        rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        affine[:3, :3] = rot @ affine[:3, :3]
    return affine


GEOMETRIES = [  # axcodes, spacing (mm), model spacing (mm), rotation (degrees)
    ("RAS", (3.0, 3.0, 3.0), (4.5, 4.0, 5.0), 0.0),
    ("LPS", (0.8, 0.9, 2.5), (1.5, 1.5, 1.5), 0.0),
    ("SAL", (2.0, 2.0, 2.0), (1.0, 3.0, 2.0), 0.0),
    ("LAS", (1.2, 1.1, 1.7), (2.0, 2.0, 2.0), 12.0),
]


def _smooth_volume(shape, affine, seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    array = (gaussian_filter(rng.normal(size=shape), 2.0) * 4000).astype(np.int16)
    return Volume(array, affine, "CT")


@pytest.mark.parametrize("axcodes,spacing,target,rotate", GEOMETRIES)
def test_model_grid_and_values_equal_monai_orientation_spacing(axcodes, spacing, target, rotate):
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    volume = _smooth_volume((23, 19, 17), _affine(axcodes, spacing, (5.0, -7.0, 11.0), rotate))
    grid = plan_grid(volume, Preprocessing(orientation="RAS", spacing_mm=target))
    image = MetaTensor(torch.from_numpy(volume.array.astype(np.float32))[None], affine=torch.from_numpy(volume.affine))
    expected = Spacing(pixdim=target, mode="bilinear")(Orientation(axcodes="RAS")(image))
    assert grid.shape == tuple(expected.shape[1:])
    np.testing.assert_allclose(grid.affine, expected.affine.numpy(), atol=1e-6)
    values = resample_to_grid(volume, grid)
    np.testing.assert_allclose(values, expected[0].numpy(), atol=0.05)  # float32 rounding on HU


def test_intensity_equals_monai_transforms():
    from monai.transforms import NormalizeIntensity, ScaleIntensity, ScaleIntensityRange

    rng = np.random.default_rng(1)
    hu = rng.normal(-200, 500, size=(20, 21, 22)).astype(np.float32)
    hu[:4] = 0.0  # exact zeros: excluded by nonzero=True
    cases = [
        (IntensitySpec(kind="window", a_min=-57, a_max=164, b_min=0, b_max=1, clip=True),
         ScaleIntensityRange(-57, 164, 0, 1, clip=True)),
        (IntensitySpec(kind="window", a_min=-175, a_max=250, b_min=-1, b_max=2, clip=False),
         ScaleIntensityRange(-175, 250, -1, 2, clip=False)),
        (IntensitySpec(kind="zscore", zscore_over="nonzero"), NormalizeIntensity(nonzero=True)),
        (IntensitySpec(kind="zscore", zscore_over="all"), NormalizeIntensity(nonzero=False)),
    ]
    for spec, monai_transform in cases:
        got = apply_intensity(hu.copy(), spec)
        np.testing.assert_allclose(got, np.asarray(monai_transform(hu.copy())), rtol=1e-5, atol=1e-5)
    # wholeBody bundle: NormalizeIntensity(nonzero) then ScaleIntensity(-1, 1)
    spec = IntensitySpec(kind="zscore", zscore_over="nonzero", rescale_to=(-1.0, 1.0))
    expected = ScaleIntensity(minv=-1.0, maxv=1.0)(NormalizeIntensity(nonzero=True)(hu.copy()))
    np.testing.assert_allclose(apply_intensity(hu.copy(), spec), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,overlap,shape", [("gaussian", 0.25, (40, 37, 45)), ("constant", 0.5, (33, 20, 28)),
                                                ("gaussian", 0.0, (16, 50, 16)), ("gaussian", 0.6, (12, 30, 9))])
def test_sliding_slabs_equal_monai_sliding_window_inference(mode, overlap, shape):
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(),
                              torch.nn.Conv3d(4, 3, 3, padding=1)).eval()
    image = torch.randn(1, *shape)
    roi = (16, 16, 16)
    with torch.inference_mode():
        expected = sliding_window_inference(image[None], roi, 1, net, overlap=overlap, mode=mode)[0]
        plan = plan_windows(shape, roi, overlap)
        slabs = list(sliding_window_slabs(image, net, plan, mode=mode))
    starts = [s for s, _ in slabs]
    assert starts == sorted(starts) and starts[0] == 0
    got = torch.cat([slab for _, slab in slabs], dim=3)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _brute_force_labels(grid, probs: np.ndarray, values) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear interpolation of every channel onto the input grid, argmax; and entropy."""
    coords = np.meshgrid(*[grid.model_coords(a) - grid.box[a][0] for a in range(3)], indexing="ij")
    inside = np.ones(grid.oriented_shape, bool)
    for axis in range(3):
        if grid.box[axis][0] > 0:
            inside &= coords[axis] >= -1e-6
        if grid.box[axis][1] < grid.shape[axis]:
            inside &= coords[axis] <= grid.box_shape[axis] - 1 + 1e-6
    interp = np.stack([map_coordinates(p, coords, order=1, mode="nearest") for p in probs])
    labels = np.asarray(values)[interp.argmax(0)] * inside
    p = np.clip(probs, 1e-12, None)
    entropy = -(p * np.log(p)).sum(0) / np.log(len(probs))
    return labels, map_coordinates(entropy, coords, order=1, mode="nearest") * inside


@pytest.mark.parametrize("axcodes,spacing,target,rotate", GEOMETRIES)
@pytest.mark.parametrize("chunks", [(1000,), (3, 7, 1, 100)])
def test_restore_equals_full_interpolation_then_argmax(axcodes, spacing, target, rotate, chunks):
    volume = Volume(np.zeros((37, 41, 29), np.int16), _affine(axcodes, spacing, rotate_deg=rotate))
    grid = plan_grid(volume, Preprocessing(spacing_mm=target))
    box = tuple((min(2, n - 2), n - min(3, n // 4)) for n in grid.shape) if axcodes == "LPS" else grid.box
    grid = grid.with_box(box)
    rng = np.random.default_rng(0)
    values = [0, 1, 2, 5, 300]  # not the channel numbers; 300 needs uint16
    logits = gaussian_filter(rng.normal(size=(len(values), *grid.box_shape)), sigma=(0, 2, 2, 2)) * 20
    probs = torch.softmax(torch.from_numpy(logits).float(), 0)
    restorer = LabelRestorer(grid, values, entropy=True)
    z = 0
    for n in chunks:
        if z < grid.box_shape[2]:
            restorer.add(z, probs[..., z:z + n])
            z += n
    restorer.finish()
    expected, entropy = _brute_force_labels(grid, probs.numpy(), values)
    assert restorer.labels.dtype == np.uint16 and restorer.labels.shape == volume.shape
    np.testing.assert_array_equal(grid.oriented(restorer.labels), expected)
    np.testing.assert_allclose(grid.oriented(restorer.entropy), entropy, atol=1e-5)
    assert len(np.unique(expected)) >= 4  # the maps are not trivial
    assert 0.0 < restorer.mixed_voxels / restorer.written_voxels < 1.0


def test_foreground_box_with_margin():
    values = np.full((50, 60, 40), -1000.0, np.float32)
    values[20:25, 30:32, 10:30] = 40.0
    assert foreground_box(values, -500.0, (2, 3, 4)) == ((18, 27), (27, 35), (6, 34))
    assert foreground_box(np.full((9, 9, 9), -1000.0), -500.0, (1, 1, 1)) == ((0, 9),) * 3


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.7])
def test_crop_keeps_whole_windows_of_the_full_image(overlap):
    rng = np.random.default_rng(3)
    roi = (32, 24, 16)
    for _ in range(30):
        shape = tuple(int(rng.integers(8, 140)) for _ in range(3))
        lo = [int(rng.integers(0, n)) for n in shape]
        box = tuple((a, int(rng.integers(a + 1, n + 1))) for a, n in zip(lo, shape))
        aligned = window_aligned_box(box, shape, roi, overlap)
        full = plan_windows(shape, roi, overlap)
        sub = plan_windows([b - a for a, b in aligned], roi, overlap)
        shifted = {tuple((w.start + a, w.stop + a) for w, (a, _) in zip(win, aligned)) for win in sub.windows}
        on_full = {tuple((w.start, w.stop) for w in win) for win in full.windows}
        if all(n > r for n, r in zip(shape, roi)):
            assert shifted <= on_full  # the crop's windows are windows of the whole image
        assert all(a <= lo_ and b >= hi for (a, b), (lo_, hi) in zip(aligned, box))  # and cover the box
        touching = {w for w in on_full if all(s < hi and e > lo_ for (s, e), (lo_, hi) in zip(w, box))}
        if all(n > r for n, r in zip(shape, roi)):
            assert touching <= shifted


def test_too_small_for_the_window_is_refused():
    volume = Volume(np.zeros((200, 200, 3), np.int16), _affine("RAS", (1.0, 1.0, 2.0)))
    grid = plan_grid(volume, Preprocessing(spacing_mm=(1.5, 1.5, 1.5), roi_size=(96, 96, 96)))
    with pytest.raises(InputError, match=r"too small for the model.*along model axis k.*at least 24 voxels"):
        check_fits_roi(grid, (96, 96, 96), "thin.nii.gz")
    check_fits_roi(grid, (96, 96, 8), "thin.nii.gz")  # fine for a thin window


def test_nan_voxels_read_as_background():
    array = np.full((20, 20, 20), 100.0, np.float32)
    array[5:8, 5:8, 5:8] = np.nan
    array[0, 0, 0] = np.inf
    volume = Volume(array, _affine("RAS", (1.0, 1.0, 1.0)), "MR")
    values = resample_to_grid(volume, plan_grid(volume, Preprocessing(spacing_mm=(2.0, 2.0, 2.0))))
    assert np.isfinite(values).all() and values.min() == 100.0
