"""``medseg`` entry point: dispatch to one module per command and turn errors into one line.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``.
Modules must stay cheap to import (no torch/MONAI at module level) so ``medseg --help`` and
``medseg info`` start fast; they import the heavy API inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from medseg import __version__

#: Command name -> module, in the order ``--help`` lists them.
COMMANDS = {
    "info": "medseg.cli.info",
    "convert": "medseg.cli.convert",
    "segment": "medseg.cli.segment",
    "lesions": "medseg.cli.lesions",
    "evaluate": "medseg.cli.evaluate",
    "train": "medseg.cli.train",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg",
        description="Segment CT/MR volumes into organs, separate lesions, measure and evaluate them.",
    )
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command not part of this build
            if exc.name == module_name:
                continue
            raise
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show full tracebacks on errors")
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    from medseg.errors import MedsegError

    try:
        return int(args._run(args) or 0)
    except MedsegError as exc:
        if debug:
            traceback.print_exc()
        print(f"medseg {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # `medseg info DIR | head`: the reader went away; that is not an error of ours. Point
        # stdout at /dev/null so Python's exit-time flush does not raise again.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a process killed by a closed pipe
    except KeyboardInterrupt:
        print(f"medseg {args.command}: interrupted; no partial output was left", file=sys.stderr)
        return 130
    except MemoryError:
        if debug:
            traceback.print_exc()
        print(f"medseg {args.command}: error: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if debug:
            traceback.print_exc()
        print(f"medseg {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for the traceback and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
