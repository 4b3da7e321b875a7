"""``medseg segment INPUT -o CASE``: organ labels only (``medseg run`` without lesions).

Writes a case folder (``docs/case.md``): ``labels.nii.gz`` on the input's exact grid,
``labels.json`` (value -> name), ``provenance.json``, ``case.json`` and, with
``--uncertainty``, ``uncertainty.nii.gz``; atomically, as one unit.
"""

from __future__ import annotations

import argparse

from medseg.cli._options import add_case_arguments, add_model_options

HELP = "segment organs in a CT/MR volume; writes labels.nii.gz on the input's grid and labels.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_case_arguments(parser, output_help="case folder for the results (replaced as a whole)")
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    from medseg.cli import run as run_command

    return run_command.run(args, lesions=False)
