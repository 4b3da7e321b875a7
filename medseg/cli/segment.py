"""``medseg segment INPUT -o CASE``: organ labels only (``medseg run`` without lesions).

Writes a case folder (``docs/case.md``): ``labels.nii.gz`` on the input's exact grid,
``labels.json`` (value -> name), ``provenance.json``, ``case.json`` and, with
``--uncertainty``, ``uncertainty.nii.gz``; atomically, as one unit.
"""

from __future__ import annotations

import argparse

from medseg.cli._options import add_model_options

HELP = "segment organs in a CT/MR volume; writes labels.nii.gz on the input's grid and labels.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="DICOM file or folder, NIfTI, NRRD or MHA")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                        help="case folder for the results (replaced as a whole)")
    parser.add_argument("--series", help="series index or UID when INPUT holds several (see `medseg info`)")
    add_model_options(parser)
    parser.add_argument("--replace-corrections", action="store_true",
                        help="let this run replace a case holding a person's corrections (default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from medseg.cli import run as run_command

    return run_command.run(args, lesions=False)
