"""``medseg batch INPUT OUTPUT_DIR``: every scan of a folder tree (or a list) into one case folder each.

Resumable by default (cases whose folder is complete and matches are skipped), one bad case never
stops the rest, in this process or on Dask (``--workers N``, ``--scheduler ADDR``). Parsing and
printing only: the work is :func:`medseg.batch.run.run_batch`. Exit 0 when every case is done,
1 when some failed (listed with their reasons), 2 for a usage error (nothing run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from medseg.cli._options import add_lesion_options, add_model_options

HELP = "run many scans (a folder tree or a list) into one case folder each; resumable; in-process or on Dask"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="folder of scans (NIfTI/NRRD/MHA files and DICOM series, searched recursively), "
                                      "one image, or a CSV (column input[, case_id, series]) or text list of inputs")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR",
                        help="one case folder per scan (OUTPUT_DIR/<case_id>/), batch.sqlite, cohort.csv and plots")
    parser.add_argument("--pattern", action="append", default=[], metavar="GLOB",
                        help="only inputs whose path or name matches (repeatable), e.g. '*_0000.nii.gz'")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="leave these inputs out")
    where = parser.add_argument_group("where cases run (default: one after another in this process)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="start a local Dask cluster of N worker processes, one case at a time each")
    where.add_argument("--threads-per-worker", type=int, metavar="T",
                       help="torch threads per worker (default: the cores shared out between the workers)")
    where.add_argument("--scheduler", metavar="ADDR",
                       help="submit to a running Dask cluster, e.g. tcp://10.0.0.5:8786 (see docs/batch.md for SLURM)")
    where.add_argument("--memory-limit", metavar="SIZE",
                       help="memory per local worker, e.g. 8GB (default: the machine's memory shared out); a "
                            "worker over it is restarted and its case retried once")
    parser.add_argument("--restart", action="store_true", help="run every case again (default: resume)")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed case")
    add_model_options(parser)
    add_lesion_options(parser)
    parser.add_argument("--no-lesions", action="store_true", help="no lesion instances or tables")
    parser.add_argument("--no-plots", action="store_true", help="no lesion plots in the case folders")
    parser.add_argument("--save-image", action="store_true", help="store each image in its case (image.nii.gz)")
    parser.add_argument("--replace-corrections", action="store_true",
                        help="run cases a person has corrected again too (default: keep them)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-case lines")


class _Display:
    """A tqdm bar (done/failed/running, ETA) on a terminal; one line per finished case otherwise."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar = None

    def __call__(self, event) -> None:
        from medseg.cli._signals import raise_if_requested

        raise_if_requested()  # every event is a checkpoint: a swallowed SIGTERM still stops the batch
        if self.quiet:
            return
        if event.kind == "note":
            self._write(f"medseg batch: {event.message}")
            return
        counts = event.counts
        line = (f"done {counts['done']}, failed {counts['failed']}, running {counts['running']}"
                + (f", retried {counts['retried']}" if counts["retried"] else ""))
        if not self.tty:
            if event.kind in ("finished", "retry"):
                n = counts["done"] + counts["failed"]
                self._write(f"[{n}/{counts['to_run']}] {event.message}")
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=counts["to_run"], desc="batch", unit="case", file=sys.stderr,
                            ncols=shutil.get_terminal_size((100, 20)).columns)
        # The width asked each time (a resized terminal); tqdm's own probe misses some terminals.
        self.bar.ncols = shutil.get_terminal_size((100, 20)).columns
        self.bar.n = counts["done"] + counts["failed"]
        self.bar.set_postfix_str(line, refresh=False)
        self.bar.refresh()
        if event.kind == "retry" or (event.kind == "finished" and ": failed" in event.message):
            self.bar.write(event.message, file=sys.stderr)

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def summary_lines(result) -> list[str]:
    """The final table: cases per status with times, the failed ones with their reasons, where things are."""
    import statistics

    counts = result.counts
    ran = counts["done"] + counts["failed"]
    rate = f", {ran / result.elapsed_s * 60:.1f} cases/min" if ran and result.elapsed_s > 0 else ""
    lines = [f"medseg batch: {counts['total']} cases in {_duration(result.elapsed_s)} ({result.executor}{rate})",
             f"  {'status':<10} {'cases':>6} {'median s':>9} {'max s':>8}"]
    for status, label in (("done", "done"), ("failed", "failed"), ("skipped", "skipped"), ("kept", "kept"),
                          ("pending", "pending")):
        cases = [c for c in result.cases if c.status == status]
        if not cases and status not in ("done", "failed"):
            continue
        times = [c.seconds for c in cases if c.seconds is not None]
        median = f"{statistics.median(times):9.1f}" if times else f"{'':9}"
        longest = f"{max(times):8.1f}" if times else f"{'':8}"
        note = {"skipped": "  already done (complete, same input, model and options)",
                "kept": "  corrected by a person", "pending": "  not run (stopped early)"}.get(status, "")
        lines.append(f"  {label:<10} {len(cases):>6} {median} {longest}{note}")
    if counts.get("retried"):
        lines.append(f"  {counts['retried']} attempt(s) lost and retried (see the manifest's attempts table)")
    if result.failed:
        lines.append("failed:")
        lines += [f"  {c.case_id}: {c.reason}" for c in result.failed]
    lines.append(f"results: {result.output_dir}/<case_id>/; manifest {result.manifest}")
    if result.report:
        lines.append(f"cohort report: {result.report.get('csv')} and {len(result.report) - 1} plots")
    return lines


def run(args: argparse.Namespace) -> int:
    from medseg.batch.run import run_batch
    from medseg.cli._options import cli_flag, command_line, lesion_options, model_kwargs
    from medseg.cli._signals import Terminated

    kwargs = model_kwargs(args)
    model = kwargs.pop("model", "default")
    device = kwargs.pop("device", "auto")
    trust_bundle = kwargs.pop("trust_bundle", False)
    run_options = dict(kwargs, lesions=False if args.no_lesions else lesion_options(args), plots=not args.no_plots,
                       save_image=args.save_image, allow_replacing_corrections=args.replace_corrections)
    display = _Display(quiet=args.quiet)
    try:
        result = run_batch(args.input, args.output_dir, model=model, device=device, trust_bundle=trust_bundle,
                           threads=args.threads, run_options=run_options, workers=args.workers,
                           threads_per_worker=args.threads_per_worker or (args.threads if args.workers else None),
                           scheduler=args.scheduler, memory_limit=args.memory_limit, restart=args.restart,
                           fail_fast=args.fail_fast, patterns=args.pattern, exclude=args.exclude,
                           command=command_line("batch"), error_style=cli_flag, on_event=display)
    except (KeyboardInterrupt, Terminated) as exc:
        display.close()
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated (SIGTERM)"
        print(f"medseg batch: {what}; every case recorded done is complete, nothing partial was left. Run the "
              "same command again to resume", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 143
    finally:
        display.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in summary_lines(result):
            print(line)
    return result.exit_code
