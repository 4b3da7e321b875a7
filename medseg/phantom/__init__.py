"""A synthetic abdominal CT phantom with exact organ and lesion truth, made by medseg's own code.

The project ships no third-party images: the demo and the tests with known answers use this
phantom. ``make_phantom(seed=0)`` is the shipped sample in ``sample_data/phantom``; other
seeds vary body and organ sizes and positions, tissue HU, noise and lesions, and serve as
extra training images. Everything is deterministic: same seed, same bytes.

>>> from medseg.phantom import make_phantom, write_phantom      # doctest: +SKIP
>>> ph = make_phantom(seed=0)                                   # doctest: +SKIP
>>> ph.truth["lesion_count"], ph.ct.orientation                 # doctest: +SKIP
(5, 'LPS')
>>> write_phantom(ph, "out")        # out/phantom/{ct_dicom/, ct.nii.gz, ...}  # doctest: +SKIP

Command line: ``python -m medseg.phantom OUTDIR [--seed N]``.
"""

from medseg.phantom._generate import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING_MM,
    GENERATOR_VERSION,
    Phantom,
    make_phantom,
    phantom_affine,
)

__all__ = ["Phantom", "make_phantom", "phantom_affine", "GENERATOR_VERSION", "DEFAULT_SHAPE",
           "DEFAULT_SPACING_MM"]
