"""The case folder: the one on-disk form of a segmented or corrected scan.

``medseg run``, ``medseg segment``, batch, the napari plugin and training all read and write
this layout (documented in ``docs/case.md``)::

    CASE/
      case.json            manifest, written last: format, version number, kind, every file with
                           its size and sha256, and the versions kept in history/
      labels.nii.gz        class labels on the input's exact grid
      labels.json          value -> class name
      provenance.json      where it came from and how (schema "medseg.provenance", below)
      uncertainty.nii.gz   optional: normalised entropy of the class probabilities
      image.nii.gz         optional: a copy of the image (else provenance names ``source_image``)
      lesions/             optional: lesions.nii.gz (instance ids), lesions.csv, lesions.json,
                           lesion_sizes.png, lesion_montage.png
      exports/             optional: files for other tools (DICOM SEG, RTSTRUCT, colour tables)
      history/v1/ ...      earlier versions (a model's proposal under a person's correction)

**Atomic as a whole.** A case is built in a hidden sibling folder and swapped into place in one
step (:func:`medseg.io._atomic.atomic_folder`): a reader, or a run killed at any instant, sees the
earlier complete case or the new complete case, never a mix. ``case.json`` is the last file
written inside the new folder; a folder without it is not a case.

**Nothing lost.** A correction never replaces a proposal: the previous version moves to
``history/v<N>/`` inside the new case (hard links, no copy). A new model run refuses to replace a
case that holds corrections, and no case replaces a folder holding files medseg did not write.

This module imports no torch and no MONAI.
"""

from medseg.case._format import (
    CASE_FILE,
    CASE_FORMAT,
    CASE_FORMAT_VERSION,
    FILES,
    KINDS,
    PROVENANCE_SCHEMA,
    PROVENANCE_SCHEMA_VERSION,
    input_sha256,
    now_utc,
    sha256_of,
)
from medseg.case._read import Case, is_case, read_case
from medseg.case._write import write_case, write_lesions

__all__ = ["Case", "CASE_FILE", "CASE_FORMAT", "CASE_FORMAT_VERSION", "PROVENANCE_SCHEMA", "PROVENANCE_SCHEMA_VERSION",
           "FILES", "KINDS", "read_case", "write_case", "write_lesions", "is_case", "sha256_of", "input_sha256",
           "now_utc"]
