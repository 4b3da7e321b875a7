"""Options shared by the commands that run a model (``run``, ``segment``, ``batch``).

Parsing only: every default lives in the API (:func:`medseg.pipeline.run_case`,
:class:`medseg.pipeline.LesionOptions`); an option the user leaves out is not passed on. Error
messages name API options (:func:`medseg.errors.option`); :func:`cli_flag` renders them as flags.
"""

from __future__ import annotations

import argparse
from typing import Any

#: API option -> how the CLI spells it, where it is not ``--`` + the name with dashes.
FLAGS = {
    "source": "INPUT",
    "output": "-o",
    "min_volume_mm3": "--min-volume",
    "split_h_mm": "--split",
    "label": "--lesion-label",
    "lesion_label": "--lesion-label",
    "spacing_mm": "--spacing",
    "learning_rate": "--lr",
    "nsd_tolerance_mm": "--nsd-tolerance",
    "allow_replacing_corrections": "--replace-corrections",
    "initial": "--from",
    "parent": "--from",
    "lesions": "--lesion-label",
}


def cli_flag(name: str, value: str | None = None) -> str:
    """Render an API option the way the CLI spells it: ``roi_size`` -> ``--roi-size``."""
    flag = FLAGS.get(name, "--" + name.replace("_", "-"))
    if value == "True" and flag.startswith("-"):  # a switch: --allow-gaps, not --allow-gaps True
        return flag
    if value is None or flag.isupper():
        return flag if value is None else str(value)
    return f"{flag} {value}"


def add_case_arguments(parser: argparse.ArgumentParser, *, output_help: str) -> None:
    """INPUT, ``-o CASE``, ``--series``, ``--replace-corrections`` and ``--quiet`` (run, segment)."""
    parser.add_argument("input", help="DICOM file or folder, NIfTI, NRRD or MHA")
    parser.add_argument("-o", "--output", required=True, metavar="CASE", help=output_help)
    parser.add_argument("--series", help="series index or UID when INPUT holds several (see `medseg info`)")
    parser.add_argument("--replace-corrections", action="store_true",
                        help="let this run replace a case holding a person's corrections (default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Which model, where and how it runs (the options of :func:`medseg.inference.segment`)."""
    parser.add_argument("--model", default=None,
                        help="'default', a medseg model folder, or a MONAI bundle folder/config (default: default)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--backend", default=None, choices=("auto", "torch", "openvino", "onnxruntime"),
                        help="what runs the network on the CPU: auto picks the fastest installed one that agrees "
                             "with torch, measured once per model and machine (default: auto; see `medseg cache info`)")
    parser.add_argument("--tta", action="store_true", help="average over 8 mirrorings (8x slower, smoother)")
    parser.add_argument("--trust-bundle", action="store_true",
                        help="let a MONAI bundle run its own Python code (only for bundles you trust)")
    parser.add_argument("--overlap", type=float, help="window overlap in [0, 1) (default: the model's)")
    parser.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: fp16 autocast on CUDA, fp32 on CPU (default: auto)")
    parser.add_argument("--roi-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="window size in model voxels (default: the model's; keep the network's divisibility)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-crop", action="store_true", help="compute the whole image, not just the body")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write uncertainty.nii.gz (normalised entropy, 0..1)")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="keep every island the network predicts (default: the model's clean-up, e.g. "
                             "each organ's largest connected component)")


def add_lesion_options(parser: argparse.ArgumentParser) -> None:
    """How lesions are separated (the fields of :class:`medseg.pipeline.LesionOptions`)."""
    parser.add_argument("--lesion-label", metavar="NAME_OR_VALUE",
                        help="the lesion class (default: the model's class named lesion/tumour/...)")
    parser.add_argument("--min-volume", type=float, metavar="MM3",
                        help="components smaller than this are dust (default: 100 mm^3)")
    parser.add_argument("--split", type=float, metavar="H_MM",
                        help="split touching lesions at necks at least H_MM narrower than the parts "
                             "(1-3 mm typical; default: no splitting)")
    parser.add_argument("--connectivity", type=int, choices=(6, 18, 26), help="default 26")
    parser.add_argument("--order", choices=("volume", "position"), help="id order (default: volume, largest first)")


def set_threads(args: argparse.Namespace) -> None:
    from medseg.errors import MedsegError, option

    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise MedsegError(option("threads", args.threads), "is not a thread count", "use 1 or more")
        import torch

        torch.set_num_threads(args.threads)


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """run_case/segment keyword arguments from the parsed model options (given ones only)."""
    out: dict[str, Any] = {}
    for name in ("model", "device", "backend", "overlap", "precision"):
        if getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    if args.roi_size is not None:
        out["roi_size"] = tuple(args.roi_size)
    if args.tta:
        out["tta"] = True
    if args.trust_bundle:
        out["trust_bundle"] = True
    if args.no_crop:
        out["crop"] = False
    if args.uncertainty:
        out["uncertainty"] = True
    if args.no_postprocess:
        out["postprocess"] = False
    return out


def lesion_options(args: argparse.Namespace):
    """A :class:`LesionOptions` with the given fields; API defaults for the rest."""
    from medseg.pipeline import LesionOptions

    given: dict[str, Any] = {}
    if args.lesion_label is not None:
        text = str(args.lesion_label).strip()
        given["label"] = int(text) if text.lstrip("-").isdigit() else text
    for field, name in (("min_volume_mm3", "min_volume"), ("split_h_mm", "split"),
                        ("connectivity", "connectivity"), ("order", "order")):
        if getattr(args, name, None) is not None:
            given[field] = getattr(args, name)
    return LesionOptions(**given)


def command_line(name: str) -> str:
    import sys

    return f"medseg {name} " + " ".join(sys.argv[2:]) if sys.argv[1:2] == [name] else ""
