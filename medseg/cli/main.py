"""``medseg`` entry point: dispatch to one module per command and turn errors into one line.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``.
Modules must stay cheap to import (no torch/MONAI at module level) so ``medseg --help`` and
``medseg info`` start fast; they import the heavy API inside ``run``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import sys
import traceback
from collections.abc import Sequence

from medseg import __version__
from medseg.cli._signals import Terminated, on_sigterm

#: Command name -> module, in the order ``--help`` lists them (a module missing from this build
#: is left out of the list).
COMMANDS = {
    "info": "medseg.cli.info",
    "convert": "medseg.cli.convert",
    "run": "medseg.cli.run",
    "segment": "medseg.cli.segment",
    "lesions": "medseg.cli.lesions",
    "evaluate": "medseg.cli.evaluate",
    "batch": "medseg.cli.batch",
    "export-seg": "medseg.cli.export_seg",
    "import-seg": "medseg.cli.import_seg",
    "export-rtstruct": "medseg.cli.export_rtstruct",
    "import-rtstruct": "medseg.cli.import_rtstruct",
    "train": "medseg.cli.train",
    "cache": "medseg.cli.cache",
}

#: errno -> what to do about it (OS errors are the user's environment, not medseg's bugs).
_OS_HINTS = {
    errno.EACCES: "check the permissions of the file or folder",
    errno.EPERM: "check the permissions of the file or folder",
    errno.ENOSPC: "free some disk space or write elsewhere; nothing partial was kept",
    errno.EDQUOT: "free some of your disk quota or write elsewhere",
    errno.EROFS: "write to a writable location",
    errno.ELOOP: "a symbolic link points back to itself; fix or remove it",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "give a file, not a folder",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.EIO: "the disk or network share reported an error; check it",
}


def _os_error_line(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "medseg"
    what = exc.strerror or str(exc)
    hint = _OS_HINTS.get(exc.errno or -1, "")
    line = f"{where}: {what}"
    if exc.filename2:
        line += f" ({exc.filename2})"
    return line + (f". {hint[:1].upper()}{hint[1:]}" if hint else "")


def _interrupted_line(command: str, what: str) -> str:
    """Say truthfully what an interrupted command left: nothing, or which results are complete."""
    from medseg.io._atomic import published

    done = published()
    if not done:
        return f"medseg {command}: {what}; no partial output was left (earlier results are unchanged)"
    return (f"medseg {command}: {what} after writing {', '.join(str(p) for p in done)} (complete); "
            "nothing partial was left")


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage before an error; medseg's rule is one line (and --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="medseg",
        description="Segment CT/MR volumes into organs, separate lesions, measure and evaluate them.",
    )
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
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
    from medseg.cli._options import cli_flag
    from medseg.errors import MedsegError

    # Libraries log problems medseg reports itself (nibabel: "pixdim[1,2,3] should be non-zero");
    # they would break the one-line rule. --debug shows them.
    logging.basicConfig(level=logging.DEBUG if debug else logging.CRITICAL, format="%(name)s: %(message)s")
    logging.getLogger("nibabel").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    previous = signal.signal(signal.SIGTERM, on_sigterm) if hasattr(signal, "SIGTERM") else None
    try:
        return int(args._run(args) or 0)
    except MedsegError as exc:
        if debug:
            traceback.print_exc()
        print(f"medseg {args.command}: error: {exc.render(cli_flag)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # `medseg info DIR | head`: the reader went away; that is not an error of ours. Point
        # stdout at /dev/null so Python's exit-time flush does not raise again.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a process killed by a closed pipe
    except KeyboardInterrupt:
        print(_interrupted_line(args.command, "interrupted"), file=sys.stderr)
        return 130
    except Terminated:
        print(_interrupted_line(args.command, "terminated (SIGTERM)"), file=sys.stderr)
        return 143
    except MemoryError:
        if debug:
            traceback.print_exc()
        print(f"medseg {args.command}: error: out of memory", file=sys.stderr)
        return 1
    except OSError as exc:  # the environment: permissions, a full disk, a symlink loop
        if debug:
            traceback.print_exc()
        print(f"medseg {args.command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"medseg {args.command}: internal error: {type(exc).__name__}: {first} "
              "(run with --debug for the traceback and please report it)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
