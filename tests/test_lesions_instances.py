"""Lesion instances: connectivity, dtypes, inputs, dust, splitting, ids, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg import Volume
from medseg.errors import CancelledError, InputError
from medseg.lesions import find_instances, instances_from_map, lesion_mask, split_component
from medseg.progress import CancelToken

SPACING = (0.7, 0.8, 2.5)


def affine(spacing=SPACING, flip=(1, 1, 1)):
    return np.diag([*(np.array(spacing) * np.array(flip)), 1.0])


def balls(shape, spacing, centres_mm, radii_mm):
    """Boolean mask of balls given in array-aligned mm (index * spacing)."""
    grid = np.indices(shape).astype(float) * np.asarray(spacing, float)[:, None, None, None]
    mask = np.zeros(shape, bool)
    for centre, radius in zip(centres_mm, radii_mm):
        mask |= np.sum((grid - np.asarray(centre, float)[:, None, None, None]) ** 2, axis=0) <= radius ** 2
    return mask


def test_two_balls_ids_by_volume_and_counts():
    mask = balls((60, 50, 16), SPACING, [(10, 10, 20), (30, 25, 20)], [5, 8])
    found = find_instances(Volume(mask.astype(np.uint8), affine()))
    assert len(found) == 2 and found.n_components == 2
    big = balls((60, 50, 16), SPACING, [(30, 25, 20)], [8]).sum()
    small = balls((60, 50, 16), SPACING, [(10, 10, 20)], [5]).sum()
    assert found.voxel_counts.tolist() == [big, small]
    assert found.ids.tolist() == [1, 2]
    # The instance map holds exactly those voxels with those ids.
    labels = found.labels.array
    assert labels.dtype in (np.uint16, np.uint32) and labels.shape == mask.shape
    assert np.array_equal(labels > 0, mask)
    assert np.count_nonzero(labels == 1) == big
    np.testing.assert_allclose(found.volumes_ml, np.array([big, small]) * 0.7 * 0.8 * 2.5 / 1000)
    assert np.array_equal(found.labels.affine, affine())


@pytest.mark.parametrize("connectivity, structure_rank", [(6, 1), (18, 2), (26, 3)])
def test_connectivity_matches_scipy(connectivity, structure_rank):
    mask = np.zeros((8, 8, 8), bool)
    mask[1, 1, 1] = mask[2, 2, 1] = mask[3, 3, 2] = True  # edge-, then corner-neighbours
    mask[5:7, 5:7, 5:7] = True
    expected = {6: 4, 18: 3, 26: 2}[connectivity]
    _, n_scipy = ndimage.label(mask, ndimage.generate_binary_structure(3, structure_rank))
    found = find_instances(Volume(mask, np.eye(4)), connectivity=connectivity)
    assert len(found) == n_scipy == expected
    assert found.connectivity == connectivity


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32,
                                   np.int64, np.float32, np.float64])
def test_dtypes_give_the_same_instances(dtype):
    mask = balls((30, 30, 10), SPACING, [(6, 6, 10), (15, 15, 12)], [3, 4])
    reference = find_instances(Volume(mask, affine()))
    value = True if dtype is bool else 1
    found = find_instances(Volume(np.where(mask, value, 0).astype(dtype), affine()))
    assert np.array_equal(found.labels.array, reference.labels.array)


def test_fortran_ordered_input_like_nibabel():
    mask = balls((40, 30, 12), SPACING, [(6, 6, 10), (20, 15, 12)], [3, 5])
    c_order = find_instances(Volume(mask.astype(np.uint8), affine()))
    f_order = find_instances(Volume(np.asfortranarray(mask.astype(np.uint8)), affine()))
    assert np.array_equal(c_order.labels.array, f_order.labels.array)
    assert np.array_equal(c_order.voxel_counts, f_order.voxel_counts)


def test_semantic_label_and_probability_inputs():
    semantic = np.zeros((20, 20, 8), np.int16)
    semantic[2:12, 2:12, 1:7] = 1  # organ
    semantic[4:7, 4:7, 2:5] = 2  # tumour inside it
    semantic[14:17, 14:17, 2:4] = 2
    found = find_instances(Volume(semantic, np.eye(4)), label=2)
    assert found.voxel_counts.tolist() == [27, 18]
    assert "label 2" in found.description
    probability = np.where(semantic == 2, 0.8, 0.1).astype(np.float32)
    probability[15, 15, 3] = 0.5  # exactly at the threshold counts as lesion
    thresholded = find_instances(Volume(probability, np.eye(4)), threshold=0.5)
    assert thresholded.voxel_counts.tolist() == [27, 18]
    assert find_instances(Volume(probability, np.eye(4)), threshold=0.9).voxel_counts.tolist() == []


def test_bad_inputs_are_clear_errors():
    semantic = np.zeros((10, 10, 4), np.uint8)
    semantic[1:3, 1:3, 1:3] = 1
    semantic[5:8, 5:8, 1:3] = 3
    volume = Volume(semantic, np.eye(4))
    with pytest.raises(InputError, match=r"several labels \(1, 3\).*label"):
        find_instances(volume)
    assert find_instances(volume, any_nonzero=True).voxel_counts.tolist() == [18, 8]
    with pytest.raises(InputError, match="no voxels with lesion label 2; it holds 1, 3"):
        find_instances(volume, label=2)
    assert len(find_instances(volume, label=2, allow_absent_label=True)) == 0
    probability = Volume(np.full((6, 6, 4), 0.37, np.float32), np.eye(4))
    with pytest.raises(InputError, match="non-integer values.*0.37.*threshold=0.5"):
        find_instances(probability)
    with pytest.raises(InputError, match="non-integer values"):
        find_instances(probability, label=1)
    with pytest.raises(InputError, match="not an integer label"):
        find_instances(volume, label=1.5)
    with pytest.raises(InputError, match="both a lesion label and a probability threshold"):
        find_instances(volume, label=1, threshold=0.5)
    with pytest.raises(InputError, match="connectivity"):
        find_instances(volume, label=1, connectivity=8)
    with pytest.raises(InputError, match="min_volume_mm3"):
        find_instances(volume, label=1, min_volume_mm3=-1)
    with pytest.raises(InputError, match="split_h_mm"):
        find_instances(volume, label=1, split_h_mm=0)
    negative = Volume(np.full((4, 4, 4), -1, np.int16), np.eye(4))
    with pytest.raises(InputError, match="negative labels"):
        instances_from_map(negative)
    nan_map = np.zeros((4, 4, 4), np.float32)
    nan_map[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        find_instances(Volume(nan_map, np.eye(4)), threshold=0.5)


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int16, np.float32])
def test_empty_mask_gives_zero_lesions(dtype):
    found = find_instances(Volume(np.zeros((10, 12, 5), dtype), affine()))
    assert len(found) == 0 and found.n_components == 0
    assert found.labels.array.shape == (10, 12, 5) and not found.labels.array.any()
    assert found.volumes_ml.tolist() == []


def test_single_voxel_lesions():
    mask = np.zeros((9, 9, 9), np.uint8)
    mask[0, 0, 0] = mask[8, 8, 8] = mask[4, 4, 4] = 1  # corners of the volume too
    found = find_instances(Volume(mask, affine()))
    assert found.voxel_counts.tolist() == [1, 1, 1]
    # Equal sizes: superior first (largest z), so voxel (8, 8, 8) is lesion 1.
    assert found.voxels.voxels(0).tolist() == [[8, 8, 8]]
    assert found.voxels.voxels(2).tolist() == [[0, 0, 0]]


def test_dust_removal_by_mm3():
    mask = balls((40, 40, 12), SPACING, [(6, 6, 10), (20, 20, 15)], [1.2, 6])
    mask[35, 35, 2] = True  # 1.4 mm^3
    voxel_mm3 = 0.7 * 0.8 * 2.5
    found_all = find_instances(Volume(mask, affine()))
    sizes = found_all.voxel_counts
    assert len(sizes) == 3
    cutoff = (sizes[1] + 0.5) * voxel_mm3  # removes all but the largest
    found = find_instances(Volume(mask, affine()), min_volume_mm3=cutoff)
    assert len(found) == 1 and found.n_dust == 2 and found.n_components == 3
    assert found.dust_volume_ml == pytest.approx((sizes[1] + sizes[2]) * voxel_mm3 / 1000)
    # A component exactly at the minimum is kept.
    exactly = find_instances(Volume(mask, affine()), min_volume_mm3=sizes[1] * voxel_mm3)
    assert len(exactly) == 2


def touching_pair(spacing=SPACING, separation=16.0, radius=10.0):
    shape = (int(60 / spacing[0]), int(40 / spacing[1]), int(40 / spacing[2]))
    centres = [(14, 20, 20), (14 + separation, 20, 20)]
    return balls(shape, spacing, centres, [radius, radius]), centres


def test_touching_pair_is_split_at_the_neck():
    mask, centres = touching_pair()
    volume = Volume(mask.astype(np.uint8), affine())
    assert len(find_instances(volume)) == 1
    found = find_instances(volume, split_h_mm=1.0)
    assert len(found) == 2 and found.n_split == 1
    assert found.voxel_counts.sum() == mask.sum()  # nothing lost
    # Each part keeps the voxels nearer its own centre: the cut lies at the mid-plane x = 22 mm.
    for g in range(2):
        x_mm = found.voxels.voxels(g)[:, 0] * SPACING[0]
        side = np.sign(x_mm.mean() - 22.0)
        assert np.all(np.sign(x_mm - 22.0) * side >= -SPACING[0] / 2 - 1e-9)
    assert abs(int(found.voxel_counts[0]) - int(found.voxel_counts[1])) <= 0.02 * mask.sum()


def test_split_eagerness_follows_h():
    # Neck radius sqrt(10^2 - 8^2) = 6 mm against ball radius 10 mm: a 4 mm step.
    mask, _ = touching_pair()
    volume = Volume(mask, affine())
    assert len(find_instances(volume, split_h_mm=2.0)) == 2
    assert len(find_instances(volume, split_h_mm=6.0)) == 1
    # An elongated ellipsoid has no neck: it stays whole even when splitting eagerly.
    grid = np.indices((90, 40, 14)).astype(float) * np.array(SPACING)[:, None, None, None]
    centre = np.array([31.5, 16.0, 17.5])[:, None, None, None]
    semi = np.array([28.0, 9.0, 12.0])[:, None, None, None]
    ellipsoid = np.sum(((grid - centre) / semi) ** 2, axis=0) <= 1
    assert len(find_instances(Volume(ellipsoid, affine()), split_h_mm=0.5)) == 1


def test_split_parts_below_min_volume_merge_back():
    # A 10 mm ball with a 3 mm ball attached through a thin neck.
    spacing = (0.5, 0.5, 0.5)
    mask = balls((60, 40, 40), spacing, [(12, 10, 10), (25, 10, 10)], [8, 3.2])
    mask[int(19 / 0.5):int(23 / 0.5), 20, 20] = True  # a 1-voxel bridge
    volume = Volume(mask, affine(spacing))
    assert len(find_instances(volume)) == 1
    assert len(find_instances(volume, split_h_mm=1.0)) == 2
    small_part = balls((60, 40, 40), spacing, [(25, 10, 10)], [3.2]).sum() * 0.125
    merged = find_instances(volume, split_h_mm=1.0, min_volume_mm3=small_part + 20)
    assert len(merged) == 1 and merged.voxel_counts[0] == mask.sum()


def test_split_component_single_voxel_and_line():
    assert len(split_component(np.array([[3, 3, 3]]), np.ones(3), h_mm=1)) == 1
    line = np.stack([np.arange(10), np.zeros(10, int), np.zeros(10, int)], axis=1)
    assert len(split_component(line, np.ones(3), h_mm=0.1)) == 1


def test_ids_do_not_depend_on_storage_orientation():
    spacing = (0.8, 0.8, 2.0)
    # Same-sized lesions: ties broken by world position, superior first, then anterior.
    mask = balls((40, 40, 20), spacing, [(8, 8, 10), (8, 24, 10), (24, 8, 30)], [3, 3, 3])
    ras = Volume(mask, affine(spacing))
    flipped = Volume(mask[::-1, ::-1, :].copy(), affine(spacing) @ np.array(
        [[-1, 0, 0, 39], [0, -1, 0, 39], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    assert flipped.orientation == "LPS" and ras.same_grid(flipped.reoriented("RAS"))
    a = find_instances(ras)
    b = find_instances(flipped)
    assert a.voxel_counts.tolist() == b.voxel_counts.tolist()
    for g in range(3):
        world_a = a.labels.voxel_to_world(a.voxels.voxels(g)).mean(axis=0)
        world_b = b.labels.voxel_to_world(b.voxels.voxels(g)).mean(axis=0)
        np.testing.assert_allclose(world_a, world_b, atol=1e-9)
    first = a.labels.voxel_to_world(a.voxels.voxels(0)).mean(axis=0)
    assert first[2] == pytest.approx(30.0)  # the superior one
    second = a.labels.voxel_to_world(a.voxels.voxels(1)).mean(axis=0)
    assert second[1] == pytest.approx(24.0)  # then the anterior one


def test_position_order():
    spacing = (1.0, 1.0, 1.0)
    mask = balls((30, 30, 40), spacing, [(10, 10, 5), (10, 10, 20), (20, 20, 33)], [4, 2, 3])
    found = find_instances(Volume(mask, affine(spacing)), order="position")
    z = [found.labels.voxel_to_world(found.voxels.voxels(g))[:, 2].mean() for g in range(3)]
    assert z == sorted(z, reverse=True)
    with pytest.raises(InputError, match="order"):
        find_instances(Volume(mask, affine(spacing)), order="size")


def test_instance_map_ids_are_kept():
    labels = np.zeros((10, 10, 10), np.uint16)
    labels[1:3, 1:3, 1:3] = 7
    labels[3:5, 1:3, 1:3] = 2  # touching lesion 7: stays separate
    found = instances_from_map(Volume(labels, np.eye(4)))
    assert found.ids.tolist() == [2, 7] and found.voxel_counts.tolist() == [8, 8]
    assert found.order == "kept"


def test_lesion_mask_keeps_bool_input_without_copy():
    mask = np.zeros((4, 4, 4), bool)
    assert lesion_mask(Volume(mask, np.eye(4))) is not None


def test_progress_and_cancel():
    mask, _ = touching_pair()
    calls = []
    find_instances(Volume(mask, affine()), split_h_mm=1.0, progress=lambda d, t, m: calls.append(m))
    assert any("connected components" in m for m in calls) and any("splitting" in m for m in calls)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        find_instances(Volume(mask, affine()), cancel=token)
