"""Per-slice contours and their rasterisation (medseg.export.contours): exactness, border rule,
even-odd, self-intersections, point reduction bounds, slice geometry. Numpy only, fast."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import polygon as skimage_polygon

from medseg.export.contours import (
    SliceContour,
    SliceGeometry,
    count_self_intersections,
    mask_contours,
    mask_to_contours,
    polygon_area,
)
from medseg.export.rasterise import contours_to_mask, rasterise_polygons


def _random_masks(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    yield np.zeros((7, 9), bool)
    yield np.ones((6, 5), bool)  # touches every border
    single = np.zeros((5, 5), bool)
    single[2, 3] = True
    yield single
    diagonal = np.eye(6, dtype=bool)  # pixels touching only at corners
    yield diagonal | np.fliplr(diagonal)
    for _ in range(n):
        shape = tuple(int(s) for s in rng.integers(1, 48, size=2))
        if rng.random() < 0.3:
            yield rng.random(shape) > 0.5  # salt and pepper: every saddle case
        else:
            yield ndi.gaussian_filter(rng.random(shape), rng.uniform(0.5, 3.0)) > rng.uniform(0.35, 0.65)


def _skimage_mask(polygon: np.ndarray, shape) -> np.ndarray:
    out = np.zeros(shape, bool)
    rr, cc = skimage_polygon(polygon[:, 0], polygon[:, 1], shape)
    out[rr, cc] = True
    return out


def _hausdorff(a: np.ndarray, b: np.ndarray, samples: int = 16) -> float:
    """Symmetric distance between two closed polygons, sampled densely along their edges."""
    def dense(p):
        t = np.linspace(0, 1, samples, endpoint=False)[None, :, None]
        return (p[:, None] + t * (np.roll(p, -1, 0) - p)[:, None]).reshape(-1, 2)

    def one_way(src, poly):
        s, e = poly, np.roll(poly, -1, 0)
        d = e - s
        t = np.clip(np.einsum("mnk,nk->mn", src[:, None] - s[None], d) / (d * d).sum(1)[None], 0, 1)
        return float(np.linalg.norm(src[:, None] - (s[None] + t[..., None] * d[None]), axis=2).min(1).max())

    return max(one_way(dense(a), b), one_way(dense(b), a))


def test_contours_give_back_every_pixel_of_random_masks():
    for mask in _random_masks(150):
        contours = mask_contours(mask)
        polygons = [points for points, _ in contours]
        assert np.array_equal(rasterise_polygons(polygons, mask.shape), mask)
        assert all(count_self_intersections(p) == 0 for p in polygons)
        # An independent rasteriser: skimage.draw.polygon per contour, combined even-odd (XOR).
        xor = np.zeros(mask.shape, bool)
        for points in polygons:
            xor ^= _skimage_mask(points, mask.shape)
        assert np.array_equal(xor, mask)


def test_holes_are_separate_contours_wound_the_other_way():
    mask = np.zeros((21, 21), bool)
    ii, jj = np.mgrid[:21, :21]
    r2 = (ii - 10) ** 2 + (jj - 10) ** 2
    mask[r2 <= 81] = True
    mask[r2 <= 25] = False  # a hole ...
    mask[r2 <= 2] = True  # ... with an island in it
    contours = mask_contours(mask)
    assert sorted(hole for _, hole in contours) == [False, False, True]
    for points, hole in contours:
        assert (polygon_area(points) < 0) == hole
    # Areas: pixel counts minus about half a pixel per contour (the cut corners).
    outer = max((p for p, h in contours if not h), key=lambda p: abs(polygon_area(p)))
    assert abs(polygon_area(outer) - np.count_nonzero(r2 <= 81)) <= 1.0
    assert np.array_equal(rasterise_polygons([p for p, _ in contours], mask.shape), mask)


def test_only_collinear_vertices_are_dropped_in_exact_mode():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 3:9] = True
    (points, hole), = mask_contours(mask)
    assert not hole
    assert len(points) == 8  # a rectangle with its four corners cut by marching squares
    assert polygon_area(points) == pytest.approx(36 - 0.5)


def test_border_belongs_to_the_object():
    # Corners on pixel centres: the whole border is in (as skimage.draw.polygon and OpenCV fill).
    square = np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]])
    mask = rasterise_polygons([square], (5, 5))
    assert np.argwhere(mask).tolist() == [[i, j] for i in (1, 2, 3) for j in (1, 2, 3)]
    assert np.array_equal(mask, _skimage_mask(square, (5, 5)))
    triangle = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])  # the hypotenuse runs through centres
    assert np.array_equal(rasterise_polygons([triangle], (6, 6)), _skimage_mask(triangle, (6, 6)))
    assert int(rasterise_polygons([triangle], (6, 6)).sum()) == 15
    # A centre 2e-3 pixel outside is out; 5e-4 pixel outside counts as on the border.
    assert not rasterise_polygons([square + [0.002, 0.0]], (5, 5))[1, 1]
    assert rasterise_polygons([square + [0.0005, 0.0]], (5, 5))[1, 1]
    # One or two vertices enclose nothing but mark the centres they touch (OpenCV's one-pixel contours).
    assert np.argwhere(rasterise_polygons([np.array([[2.0, 3.0]])], (5, 5))).tolist() == [[2, 3]]
    assert int(rasterise_polygons([np.array([[0.0, 1.0], [3.0, 1.0]])], (5, 5)).sum()) == 4


def test_border_rule_keeps_hole_borders_traced_through_pixel_centres():
    # OpenCV traces a hole through the centres of the object pixels around it: those stay in.
    outer = np.array([[0.0, 0.0], [6.0, 0.0], [6.0, 6.0], [0.0, 6.0]])
    hole = np.array([[2.0, 2.0], [2.0, 4.0], [4.0, 4.0], [4.0, 2.0]])
    mask = rasterise_polygons([outer, hole], (7, 7))
    expected = np.ones((7, 7), bool)
    expected[3, 3] = False
    assert np.array_equal(mask, expected)


def test_even_odd_over_several_contours():
    a = np.array([[0.5, 0.5], [6.5, 0.5], [6.5, 6.5], [0.5, 6.5]])
    b = a + 3.0
    mask = rasterise_polygons([a, b], (12, 12))
    expected = _skimage_mask(a, (12, 12)) ^ _skimage_mask(b, (12, 12))
    assert np.array_equal(mask, expected)
    assert int(mask.sum()) == 36 + 36 - 2 * 9


def _distance_to_edges(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    s, d = polygon, np.roll(polygon, -1, 0) - polygon
    t = np.clip(np.einsum("mnk,nk->mn", points[:, None] - s[None], d) / (d * d).sum(1)[None], 0, 1)
    return np.linalg.norm(points[:, None] - (s[None] + t[..., None] * d[None]), axis=2).min(1)


def test_rasteriser_matches_skimage_on_random_polygons():
    rng = np.random.default_rng(3)
    differ = 0
    for _ in range(60):
        n = int(rng.integers(3, 40))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(2, 15, n)
        centre = rng.uniform(10, 30, 2)
        polygon = centre + np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])
        shape = (int(rng.integers(20, 45)), int(rng.integers(20, 45)))  # polygons may leave the grid
        ours = rasterise_polygons([polygon], shape)
        theirs = _skimage_mask(polygon, shape)
        # Identical, except centres within the border tolerance (1e-3 pixel) of an edge, which
        # medseg counts as on the border (inside) and skimage decides by rounding.
        mismatch = np.argwhere(ours != theirs).astype(float)
        assert np.all(_distance_to_edges(mismatch, polygon) <= 1e-3)
        assert np.all(ours[ours != theirs])
        differ += len(mismatch)
    assert differ <= 10


def test_self_intersections_are_counted_and_filled_even_odd():
    bow_tie = np.array([[0.0, 0.0], [8.0, 7.0], [8.0, 0.0], [0.0, 7.0]])  # crossing at (4, 3.5)
    assert count_self_intersections(bow_tie) == 1
    pentagram = np.array([[np.cos(a), np.sin(a)] for a in np.pi / 2 + 4 * np.pi / 5 * np.arange(5)]) * 10 + 12
    assert count_self_intersections(pentagram) == 5
    figure_eight = np.array([[0.0, 0.0], [4.0, 4.0], [8.0, 0.0], [8.0, 8.0], [4.0, 4.0], [0.0, 8.0]])
    assert count_self_intersections(figure_eight) >= 1  # the two loops touch at (4, 4)
    assert count_self_intersections(np.array([[0.0, 0.0], [5.0, 0.0], [5.0, 5.0]])) == 0
    # Even-odd: the pentagram's centre (covered twice) is outside, its points inside.
    mask = rasterise_polygons([pentagram], (25, 25))
    assert not mask[12, 12] and mask[12, 20]
    assert int(rasterise_polygons([bow_tie], (10, 10)).sum()) == int(_skimage_mask(bow_tie, (10, 10)).sum())


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.8, 1.25)])
def test_point_reduction_and_smoothing_stay_within_the_stated_deviation(spacing):
    ii, jj = np.mgrid[:160, :140]
    mask = ((ii - 80) / 60.0) ** 2 + ((jj - 70) / 45.0) ** 2 < 1
    mask &= ~(((ii - 70) / 12.0) ** 2 + ((jj - 60) / 20.0) ** 2 < 1)
    exact = mask_contours(mask, spacing_ij=spacing)
    n_exact = sum(len(p) for p, _ in exact)
    scale = np.asarray(spacing)
    for bound in (0.3, 1.0, 2.0):
        for smoothing in (0.0, 1.5):
            reduced = mask_contours(mask, spacing_ij=spacing, max_deviation_mm=bound, smoothing_mm=smoothing)
            assert len(reduced) == len(exact)
            assert sum(len(p) for p, _ in reduced) < n_exact
            for (a, hole_a), (b, hole_b) in zip(exact, reduced):
                assert hole_a == hole_b
                assert _hausdorff(a * scale, b * scale) <= bound + 1e-9
            back = rasterise_polygons([p for p, _ in reduced], mask.shape)
            dice = 2 * np.count_nonzero(back & mask) / (back.sum() + mask.sum())
            assert dice > 0.98
    with pytest.raises(ValueError):
        mask_contours(mask, smoothing_mm=1.0)


def _oblique_geometry(shape=(30, 25, 6)) -> SliceGeometry:
    angle = np.deg2rad(20)
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    col = np.array([-np.sin(angle) * np.cos(0.3), np.cos(angle) * np.cos(0.3), np.sin(0.3)])
    normal = np.cross(row, col)
    origins = np.array([10.0, -20.0, 5.0]) + np.arange(shape[2])[:, None] * 2.5 * normal
    return SliceGeometry(shape, origins, row, col, (0.7, 0.9), tuple(f"1.2.3.{k}" for k in range(shape[2])))


def test_slice_geometry_maps_pixels_to_each_slice_plane():
    geometry = _oblique_geometry()
    points = np.array([[0.0, 0.0], [3.5, 7.25], [29.0, 24.0]])
    for k in range(geometry.shape[2]):
        lps = geometry.to_patient(k, points)
        assert np.abs((lps - geometry.origins_lps[k]) @ geometry.normal).max() < 1e-9
        assert np.allclose(geometry.to_pixels(k, lps), points, atol=1e-9)
    assert np.allclose(geometry.offsets_mm, 2.5 * np.arange(6))


def test_slice_geometry_from_affine_agrees_with_medseg_volume(make_volume):
    volume = make_volume(shape=(5, 6, 4), spacing=(0.5, 0.75, 3.0), axcodes="LPS", origin=(10.0, 20.0, -30.0))
    geometry = SliceGeometry.from_affine(volume.affine, volume.shape)
    for k in range(4):
        ras = volume.voxel_to_world(np.array([[2.0, 3.0, k]]))
        lps = ras * [-1, -1, 1]
        assert np.allclose(geometry.to_patient(k, np.array([[2.0, 3.0]])), lps)


def test_place_contours_puts_polygons_on_their_slices_or_reports_them():
    from medseg.io._rtstruct import place_contours

    geometry = _oblique_geometry()
    square = np.array([[5.0, 5.0], [12.0, 5.0], [12.0, 11.0], [5.0, 11.0]])
    on_plane = geometry.to_patient(3, square)
    off_plane = on_plane + 0.8 * geometry.normal  # 0.8 mm above slice 3 (spacing 2.5 mm)
    beyond = geometry.to_patient(5, square) + 2.0 * geometry.normal  # past the last slice
    placed = place_contours([on_plane, off_plane, beyond], geometry)
    assert [c.k for c in placed.contours] == [3]
    assert np.allclose(placed.contours[0].points_ij, square)
    assert [round(d, 6) for d, _ in placed.off_plane] == [0.8, 2.0]
    snapped = place_contours([on_plane, off_plane, beyond], geometry, snap_to_slices=True)
    assert [c.k for c in snapped.contours] == [3, 3]
    assert snapped.snapped == 1 and snapped.skipped == 1
    assert snapped.max_distance_mm == pytest.approx(0.8)
    assert np.allclose(snapped.contours[1].points_ij, square)


def test_mask_to_contours_and_back_in_3d_with_crop():
    rng = np.random.default_rng(5)
    mask = ndi.gaussian_filter(rng.random((40, 30, 8)), (2, 2, 0.5)) > 0.52
    contours = mask_to_contours(mask)
    assert all(isinstance(c, SliceContour) for c in contours)
    assert np.array_equal(contours_to_mask(contours, mask.shape), mask)
    box, crop = contours_to_mask(contours, mask.shape, crop=True)
    assert np.array_equal(mask[box], crop) and mask[box].sum() == mask.sum()
    assert mask_to_contours(np.zeros((4, 4, 3), bool)) == []
