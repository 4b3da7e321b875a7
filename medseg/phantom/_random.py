"""Random numbers that stay the same across numpy versions, so a seed means the same phantom.

numpy keeps its bit generators (PCG64) and ``SeedSequence`` stable across releases, but not
the distributions of ``Generator`` (NEP 19). Uniforms are therefore made from the raw 64-bit
words here, and normals from them by the Box-Muller transform.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Stream"]

_TWO_POW_53 = float(2**53)


class Stream:
    """An independent random stream for one purpose (anatomy, lesions, noise) of one seed.

    Parameters
    ----------
    seed : int
        The phantom seed (>= 0).
    purpose : int
        Distinguishes streams of one seed, so adding draws to one purpose leaves the others'
        numbers unchanged.
    """

    def __init__(self, seed: int, purpose: int) -> None:
        self._bits = np.random.PCG64(np.random.SeedSequence([int(seed), int(purpose)]))

    def _unit(self, n: int) -> np.ndarray:
        """``n`` uniform doubles in (0, 1] (never 0, so ``log`` is safe)."""
        raw = self._bits.random_raw(n)
        return ((raw >> np.uint64(11)).astype(np.float64) + 1.0) / _TWO_POW_53

    def uniform(self, low: float = 0.0, high: float = 1.0, size: int | tuple[int, ...] | None = None):
        """Uniform draws in (low, high]; a float when ``size`` is None."""
        n = 1 if size is None else int(np.prod(size))
        values = low + (high - low) * self._unit(n)
        return float(values[0]) if size is None else values.reshape(size)

    def normal(self, mean: float = 0.0, sd: float = 1.0, size: int | tuple[int, ...] | None = None):
        """Normal draws (Box-Muller); a float when ``size`` is None."""
        n = 1 if size is None else int(np.prod(size))
        half = (n + 1) // 2
        # Both Box-Muller outputs are used: n normals from n uniforms.
        radius = np.sqrt(-2.0 * np.log(self._unit(half)))
        angle = 2.0 * np.pi * self._unit(half)
        values = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
        values = mean + sd * values
        return float(values[0]) if size is None else values.reshape(size)

    def integer(self, n: int) -> int:
        """A uniform integer in ``0..n-1``."""
        return min(int(self._unit(1)[0] * n), n - 1)

    def jitter(self, scale: float, variation: float, size: int | None = None):
        """A centred uniform deviation in ``[-scale, scale] * variation`` (0 when variation is 0)."""
        return self.uniform(-1.0, 1.0, size) * scale * variation

    def unit_vectors(self, n: int) -> np.ndarray:
        """``n`` random directions, shape (n, 3)."""
        v = self.normal(size=(n, 3))
        return v / np.linalg.norm(v, axis=1, keepdims=True)
