"""Volume geometry: spacing/origin/direction/orientation, LPS conversion, crop, reorientation."""

import numpy as np
import pytest

from medseg.volume import Volume, affine_from_lps, lps_from_affine


def test_properties_of_an_lps_volume(make_volume):
    vol = make_volume(shape=(4, 5, 6), spacing=(0.5, 0.75, 2.0), axcodes="LPS", origin=(10, -20, 30))
    assert vol.orientation == "LPS"
    np.testing.assert_allclose(vol.spacing, [0.5, 0.75, 2.0])
    np.testing.assert_allclose(vol.origin, [10, -20, 30])
    np.testing.assert_allclose(vol.direction, np.diag([-1, -1, 1]))
    # In LPS the same geometry is an identity direction with x, y of the origin negated.
    np.testing.assert_allclose(vol.direction_lps, np.eye(3))
    np.testing.assert_allclose(vol.origin_lps, [-10, 20, 30])
    assert vol.voxel_volume_ml == pytest.approx(0.5 * 0.75 * 2.0 / 1000)


def test_affine_from_lps_round_trip():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    spacing = np.array([0.7, 0.8, 3.0])
    origin = np.array([-120.5, 33.25, 901.0])
    affine = affine_from_lps(spacing, origin, q)
    sp, org, direction = lps_from_affine(affine)
    np.testing.assert_allclose(sp, spacing)
    np.testing.assert_allclose(org, origin)
    np.testing.assert_allclose(direction, q)


def test_voxel_world_round_trip(make_volume):
    vol = make_volume(spacing=(0.5, 1.5, 2.5), axcodes="LAI", origin=(3, 4, 5))
    ijk = np.array([[0, 0, 0], [1, 2, 3], [7, 8, 9]], dtype=float)
    xyz = vol.voxel_to_world(ijk)
    np.testing.assert_allclose(xyz[0], [3, 4, 5])
    np.testing.assert_allclose(xyz[1], [3 - 0.5, 4 + 3.0, 5 - 7.5])
    np.testing.assert_allclose(vol.world_to_voxel(xyz), ijk, atol=1e-12)


def test_crop_keeps_world_positions(make_volume):
    vol = make_volume(shape=(10, 12, 14), spacing=(1.0, 2.0, 3.0), axcodes="LPS", origin=(1, 2, 3))
    sub = vol.crop((slice(2, 7), slice(3, None), slice(None, 5)))
    assert sub.shape == (5, 9, 5)
    np.testing.assert_array_equal(sub.array, vol.array[2:7, 3:, :5])
    np.testing.assert_allclose(sub.voxel_to_world([0, 0, 0]), vol.voxel_to_world([2, 3, 0]))
    np.testing.assert_allclose(sub.voxel_to_world([4, 8, 4]), vol.voxel_to_world([6, 11, 4]))


@pytest.mark.parametrize("axcodes", ["LPS", "RAS", "LAS", "PSL", "IRA", "ASR"])
def test_reoriented_keeps_every_voxel_at_its_world_position(make_volume, axcodes):
    vol = make_volume(shape=(5, 6, 7), spacing=(0.5, 1.0, 2.0), axcodes=axcodes, origin=(-3, 7, 11))
    ras = vol.reoriented("RAS")
    assert ras.orientation == "RAS"
    assert sorted(ras.shape) == sorted(vol.shape)
    # Every voxel of the original must be found, with its value, at the same world position.
    rng = np.random.default_rng(1)
    for ijk in rng.integers(0, [5, 6, 7], size=(20, 3)):
        world = vol.voxel_to_world(ijk)
        back = np.rint(ras.world_to_voxel(world)).astype(int)
        np.testing.assert_allclose(ras.voxel_to_world(back), world, atol=1e-9)
        assert ras.array[tuple(back)] == vol.array[tuple(ijk)]
    again = ras.reoriented(axcodes)
    np.testing.assert_array_equal(again.array, vol.array)
    np.testing.assert_allclose(again.affine, vol.affine, atol=1e-12)


def test_same_grid(make_volume):
    a = make_volume(spacing=(1, 1, 2))
    b = a.with_array(np.zeros(a.shape, np.uint8), modality="SEG")
    assert a.same_grid(b) and b.modality == "SEG"
    shifted = Volume(a.array, a.affine + np.array([[0, 0, 0, 0.01]] * 3 + [[0, 0, 0, 0]]))
    assert not a.same_grid(shifted)
    assert a.same_grid(shifted, atol_mm=0.02)


def test_rejects_non_3d_and_singular():
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((4, 4)), np.eye(4))
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.zeros((4, 4)))


def test_affine_is_read_only(make_volume):
    vol = make_volume()
    with pytest.raises(ValueError):
        vol.affine[0, 0] = 5
