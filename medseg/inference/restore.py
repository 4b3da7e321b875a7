"""Back to the input grid: class probabilities at model resolution -> labels on the input's voxels.

This is what MONAI's ``Invertd`` (trilinear, ``nearest_interp=False``) followed by ``argmax`` does,
without ever holding a ``C x I x J x K`` float map at input resolution (the step that dominates
time and memory in nnU-Net #2540 and MONAI #6427). It rests on one exact fact: the argmax of a
trilinear blend of probability vectors equals ``c`` whenever ``c`` is the argmax at all 8
corners (a convex combination keeps ``p_c > p_d``). So

1. the argmax at model resolution is taken once, and a cell is *uniform* when its 8 corners agree;
2. each input voxel in a uniform cell takes that label directly (a gather of bytes);
3. only voxels in mixed cells (the thin shell along class borders) get their ``C`` probabilities
   interpolated and arg-maxed.

Probabilities arrive as slabs along the model's last axis (from
:func:`medseg.inference.sliding.sliding_window_slabs`); each input plane is written as soon as
both model planes around it are known, so only a few model planes are ever kept.
"""

from __future__ import annotations

import math

import numpy as np

from medseg.inference.preprocess import ModelGrid, linear_weights

__all__ = ["LabelRestorer"]

#: Output voxels computed per step (bounds the temporary index/weight arrays).
_BLOCK_VOXELS = 1 << 23


class _Axis:
    """1D map from oriented input indices to the computed box of the model grid on one axis."""

    def __init__(self, grid: ModelGrid, axis: int) -> None:
        start, stop = grid.box[axis]
        full = grid.model_coords(axis)
        lo_ok = full >= start - 1e-6 if start > 0 else np.ones(full.shape, bool)
        hi_ok = full <= stop - 1 + 1e-6 if stop < grid.shape[axis] else np.ones(full.shape, bool)
        inside = np.flatnonzero(lo_ok & hi_ok)
        # Inside indices form one run because the map is monotonic.
        self.lo = int(inside[0]) if inside.size else 0
        self.hi = int(inside[-1]) + 1 if inside.size else 0
        self.i0, self.i1, self.w = linear_weights(stop - start, full[self.lo:self.hi] - start)


class LabelRestorer:
    """Collects model-space probability slabs and writes labels (and entropy) on the input grid.

    Parameters
    ----------
    grid : ModelGrid
        The map between the input and model grids, with the computed ``box``.
    values : sequence of int
        Label value written for each channel (``LabelSet.values``).
    entropy : bool
        Also produce normalised entropy (0 = certain, 1 = uniform over the classes), trilinearly
        interpolated from model resolution.

    Outputs live in input array order: ``labels`` (uint8, or uint16 above 255) and ``entropy``
    (float32) are allocated once at input size; voxels outside the computed box are background
    (value 0, entropy 0).
    """

    def __init__(self, grid: ModelGrid, values, *, entropy: bool = False) -> None:
        self.grid = grid
        values = np.asarray(values, dtype=np.int64)
        dtype = np.uint8 if values.max() <= 255 else np.uint16
        self._lut = values.astype(dtype)
        self.labels = np.zeros(grid.input_shape, dtype=dtype)
        self.entropy = np.zeros(grid.input_shape, dtype=np.float32) if entropy else None
        self._out = grid.oriented(self.labels)
        self._out_h = grid.oriented(self.entropy) if entropy else None
        self._ax = [_Axis(grid, a) for a in range(3)]
        self._next_k = self._ax[2].lo  # next output plane to write (oriented index)
        # Model planes kept: probabilities plane-first and channel-last (n, X, Y, C), so a voxel's C
        # values are contiguous for the gathers below and selecting whole planes copies contiguous
        # blocks (with z inside, as (X, Y, n, C), a plane selection was X*Y copies of C floats:
        # 5x slower); their argmax (X, Y, n); and the first plane's index.
        self._probs = None
        self._argmax = None
        self._buf_start = 0
        self.mixed_voxels = 0
        self.written_voxels = 0

    def add(self, z_start: int, probs) -> None:
        """Add probabilities (torch float tensor, (C, X, Y, n)) for box planes ``z_start..``."""
        import torch

        last = probs.permute(3, 1, 2, 0).contiguous()
        argmax = np.moveaxis(last.argmax(dim=3).numpy().astype(np.uint8 if last.shape[3] <= 256 else np.int16), 0, 2)
        if self._probs is None:
            self._buf_start, self._probs, self._argmax = z_start, last, argmax
        else:
            self._probs = torch.cat([self._probs, last], dim=0)
            self._argmax = np.concatenate([self._argmax, argmax], axis=2)
        self._write_ready(final=False)

    def finish(self) -> None:
        """Write the remaining planes (those that need the last model plane)."""
        if self._probs is not None:
            self._write_ready(final=True)
        self._probs = self._argmax = None

    # --- internals -------------------------------------------------------------------------------
    def _write_ready(self, *, final: bool) -> None:
        ax_x, ax_y, ax_z = self._ax
        buf_end = self._buf_start + self._probs.shape[0]
        k, last = self._next_k, ax_z.hi
        ready = k  # output planes whose upper neighbour plane is already here
        while ready < last and (final or ax_z.i1[ready - ax_z.lo] < buf_end):
            ready += 1
        if ready > k:
            # Bound the channel-last temporaries (C x X x J x planes floats) of one step.
            per_plane = (ax_x.hi - ax_x.lo) * (ax_y.hi - ax_y.lo) \
                + self._probs.shape[3] * self._probs.shape[1] * max(ax_y.hi - ax_y.lo, 1)
            step = max(1, _BLOCK_VOXELS // max(per_plane, 1))
            for k0 in range(k, ready, step):
                self._write_planes(k0, min(k0 + step, ready))
            self._next_k = ready
        if self._next_k < last:  # drop model planes no pending output plane needs
            cut = int(ax_z.i0[self._next_k - ax_z.lo]) - self._buf_start
            if cut > 0:
                self._probs, self._argmax = self._probs[cut:], self._argmax[:, :, cut:]
                self._buf_start += cut
        else:
            self._probs = self._argmax = None

    def _write_planes(self, k0: int, k1: int) -> None:

        ax_x, ax_y, ax_z = self._ax
        rel = slice(k0 - ax_z.lo, k1 - ax_z.lo)
        z0 = ax_z.i0[rel] - self._buf_start
        z1 = ax_z.i1[rel] - self._buf_start
        wz = ax_z.w[rel]
        zmin, zmax = int(z0.min()), int(z1.max()) + 1
        am = self._argmax[:, :, zmin:zmax]
        z0, z1 = z0 - zmin, z1 - zmin
        flat = _uniform_cells(am)
        # A cell is uniform when its 4 corners agree on both planes and the planes agree.
        cell = flat[:, :, z0] & flat[:, :, z1] & (am[:, :, z0] == am[:, :, z1])
        uni = cell[ax_x.i0][:, ax_y.i0]
        lab = am[:, :, z0][ax_x.i0][:, ax_y.i0]
        mixed = np.flatnonzero(~uni)
        if mixed.size:
            ii, jj, kk = np.unravel_index(mixed, uni.shape)
            lab[ii, jj, kk] = self._mixed_argmax(zmin, zmax, z0, z1, wz, ii, jj, kk)
        self.mixed_voxels += int(mixed.size)
        self.written_voxels += int(uni.size)
        region = (slice(ax_x.lo, ax_x.hi), slice(ax_y.lo, ax_y.hi), slice(k0, k1))
        self._out[region] = self._lut[lab]
        if self._out_h is not None:
            self._out_h[region] = self._entropy_block(self._probs[zmin:zmax], z0, z1, wz)

    def _mixed_argmax(self, zmin, zmax, z0, z1, wz, ii, jj, kk) -> np.ndarray:
        """Argmax of the trilinear class probabilities at the mixed voxels ``(ii, jj, kk)``.

        Along z for whole model planes first (contiguous lerps), then either along y for whole
        rows and along x per voxel (2 row gathers per voxel), or, when mixed voxels are few, both
        per voxel (4 gathers): whichever moves fewer rows of ``C`` floats.
        """
        import torch

        ax_x, ax_y = self._ax[0], self._ax[1]
        sub = self._probs[zmin:zmax]
        pz = sub.index_select(0, torch.from_numpy(z0)).lerp_(sub.index_select(0, torch.from_numpy(z1)),
                                                             torch.from_numpy(wz)[:, None, None, None])
        n_k, n_x, n_y, n_c = pz.shape
        x0, x1, wx = ax_x.i0[ii], ax_x.i1[ii], torch.from_numpy(ax_x.w[ii])[:, None]
        if 4 * len(ii) < 2 * n_x * len(ax_y.i0) * n_k:
            rows = pz.reshape(-1, n_c)
            y0, y1, wy = ax_y.i0[jj], ax_y.i1[jj], torch.from_numpy(ax_y.w[jj])[:, None]
            plane = kk * n_x

            def at(xs, ys):
                return rows.index_select(0, torch.from_numpy((plane + xs) * n_y + ys))

            low = at(x0, y0).lerp_(at(x1, y0), wx)
            return low.lerp_(at(x0, y1).lerp_(at(x1, y1), wx), wy).argmax(dim=1).numpy()
        pzy = pz.index_select(2, torch.from_numpy(ax_y.i0)).lerp_(
            pz.index_select(2, torch.from_numpy(ax_y.i1)), torch.from_numpy(ax_y.w)[None, None, :, None])
        rows = pzy.reshape(-1, n_c)
        n_j = pzy.shape[2]
        plane = kk * n_x
        a = rows.index_select(0, torch.from_numpy((plane + x0) * n_j + jj))
        return a.lerp_(rows.index_select(0, torch.from_numpy((plane + x1) * n_j + jj)), wx).argmax(dim=1).numpy()

    def _entropy_block(self, sub, z0, z1, wz) -> np.ndarray:
        import torch

        p = sub.clamp_min(1e-12)
        h = -(p * p.log()).sum(dim=3) / math.log(max(sub.shape[3], 2))  # (n, X, Y)
        ax_x, ax_y = self._ax[0], self._ax[1]
        h = h.index_select(0, torch.from_numpy(z0)).lerp_(h.index_select(0, torch.from_numpy(z1)),
                                                           torch.from_numpy(wz)[:, None, None])
        h = h.index_select(2, torch.from_numpy(ax_y.i0)).lerp_(
            h.index_select(2, torch.from_numpy(ax_y.i1)), torch.from_numpy(ax_y.w)[None, None, :])
        h = h.index_select(1, torch.from_numpy(ax_x.i0)).lerp_(
            h.index_select(1, torch.from_numpy(ax_x.i1)), torch.from_numpy(ax_x.w)[None, :, None])
        return h.permute(1, 2, 0).numpy()


def _uniform_cells(am: np.ndarray) -> np.ndarray:
    """True where a model cell's 4 corners in x/y agree, per plane.

    Cell ``(x, y)`` spans model indices ``x..x1`` and ``y..y1`` with ``x1 = min(x + 1, X - 1)``,
    the neighbours :func:`linear_weights` picks.
    """
    nx, ny = am.shape[0], am.shape[1]
    x1 = np.minimum(np.arange(nx) + 1, nx - 1)
    y1 = np.minimum(np.arange(ny) + 1, ny - 1)
    same_x = am == am[x1]
    return same_x & same_x[:, y1] & (am == am[:, y1])
