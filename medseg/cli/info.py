"""``medseg info PATH [--json]``: list every series/image found, with geometry and problems."""

from __future__ import annotations

import argparse
import json

HELP = "list every series or image at PATH (UID, modality, shape, spacing, orientation, problems)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="DICOM file or folder (searched recursively), NIfTI, NRRD or MHA")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from medseg.io import scan

    infos = scan(args.path)
    if args.json:
        print(json.dumps([info.to_dict() for info in infos], indent=2, default=str))
        return 0
    print(f"{args.path}: {len(infos)} series")
    for info in infos:
        print(info.one_line())
        print(f"      {info.n_slices} slices from {info.n_files} file(s), format {info.format}, "
              f"path {info.path}")
        for problem in info.problems:
            print(f"      problem: {problem}")
        for note in info.notes:
            print(f"      note: {note}")
    return 0
