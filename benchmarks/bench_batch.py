"""Benchmark: a batch of N cases in one process, on 2 Dask workers x 1 thread, and on 1 worker x 2
threads, against the same N bare ``run_case`` calls (the baseline), in one run.

The cases are synthetic phantoms (``medseg.phantom``, seeds 1..N, NIfTI), segmented by the shipped
default model with lesions and plots, as ``medseg batch`` does by default. Timed:

* ``bare``: ``run_case`` N times in this process, the model loaded before the clock starts
  (what a hand-written loop costs, without discovery, manifest, resume checks or report);
* ``in-process``: ``run_batch`` with no Dask (torch threads = cores);
* ``dask 2x1``: ``run_batch(workers=2, threads_per_worker=1)``, a LocalCluster;
* ``dask 1x2``: ``run_batch(workers=1, threads_per_worker=2)``.

For each: wall time, *start-up* (from the call to the first case starting: discovery, hashing,
model load, cluster start), *tail* (after the last case: cohort report, cluster shutdown), and
the steady part between them. ``per case`` is the steady part divided by N; ``overhead`` compares
it with the bare per-case time (the same parallelism for in-process and 1x2: the batch's and
Dask's own cost per case). ``throughput`` counts the whole wall time and the steady part.

Rounds run the four modes in rotated order, and ratios are taken within a round (the machine's
load swings by 2-3x over minutes), then their median is printed.

Run: ``python benchmarks/bench_batch.py [--cases 4] [--rounds 3] [--shape 112 96 56]``. Results are recorded in
``docs/batch.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path


def make_cases(folder: Path, n: int, shape: tuple[int, int, int]) -> Path:
    from medseg.phantom import make_phantom
    from medseg.phantom._write import write_phantom
    from medseg.volume import Volume  # noqa: F401 - medseg import before the clock

    root = folder / "scans"
    for seed in range(1, n + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            phantom = make_phantom(seed=seed, shape=shape, spacing_mm=(3.0, 3.0, 3.0))
        files = write_phantom(phantom, folder / f"ph{seed}")
        (root / f"case{seed:02d}").mkdir(parents=True)
        shutil.copy(files.folder / "ct.nii.gz", root / f"case{seed:02d}" / "ct.nii.gz")
    return root


def make_tiny_model(folder: Path) -> Path:
    """An untrained 2-level UNet with 32^3 windows: a case costs milliseconds of network, so what
    is left is what the batch itself costs per case."""
    import torch

    from medseg.labels import LabelSet
    from medseg.models.networks import build_network, default_network
    from medseg.models.spec import ModelSpec, Preprocessing
    from medseg.models.store import save_model

    torch.manual_seed(0)
    spec = ModelSpec("bench-tiny", default_network("unet", size="tiny"), LabelSet({0: "background", 1: "liver"}),
                     Preprocessing(spacing_mm=(6.0, 6.0, 6.0), roi_size=(32, 32, 32), overlap=0.0))
    return save_model(spec, build_network(spec.network, 2), folder / "tiny-model")


def run_bare(root: Path, out: Path, threads: int, model_ref: str | Path = "default") -> dict:
    import torch

    from medseg.models import resolve_model
    from medseg.pipeline import run_case

    torch.set_num_threads(threads)
    model = resolve_model(model_ref)
    inputs = sorted(root.glob("*/ct.nii.gz"))
    # No warm-up: every mode pays the first call's one-time costs (backend choice, compiled
    # graphs) once per process, as a user's own loop would.
    t0 = time.perf_counter()
    for path in inputs:
        run_case(path, model=model, output=out / path.parent.name, device="cpu")
    wall = time.perf_counter() - t0
    return {"wall": wall, "startup": 0.0, "tail": 0.0, "steady": wall}


def run_mode(root: Path, out: Path, **kwargs) -> dict:
    from medseg.batch.run import run_batch

    marks: dict[str, float] = {}

    def on_event(event) -> None:
        now = time.perf_counter()
        if event.kind == "started":
            marks.setdefault("first_start", now)
        if event.kind == "finished":
            marks["last_end"] = now

    t0 = time.perf_counter()
    result = run_batch(root, out, device="cpu", on_event=on_event, **kwargs)
    wall = time.perf_counter() - t0
    assert result.counts["done"] == result.counts["to_run"], result.to_dict()
    startup = marks["first_start"] - t0
    tail = t0 + wall - marks["last_end"]
    return {"wall": wall, "startup": startup, "tail": tail, "steady": marks["last_end"] - marks["first_start"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(112, 96, 56))
    parser.add_argument("--fixed-cost", action="store_true",
                        help="instead: what the batch adds per case, on cases of a tiny model")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.fixed_cost:
        with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
            make_cases(Path(tmp), 1, tuple(args.shape))
            fixed = fixed_costs(Path(tmp), cores, rounds=args.rounds)
        print(f"fixed cost per case (tiny model, {fixed['n']} cases, medians of {fixed['rounds']} rounds, load average "
              f"{os.getloadavg()[0]:.1f}): in-process batch {fixed['in-process'] * 1000:+.0f} ms, dask 1x2 "
              f"{fixed['dask 1x2'] * 1000:+.0f} ms over a bare run_case loop ({fixed['bare'] * 1000:.0f} ms per case)")
        return
    modes = {"bare": lambda root, out: run_bare(root, out, cores),
             "in-process": lambda root, out: run_mode(root, out, threads=cores),
             "dask 2x1": lambda root, out: run_mode(root, out, workers=2, threads_per_worker=1),
             "dask 1x2": lambda root, out: run_mode(root, out, workers=1, threads_per_worker=2)}
    rounds: list[dict[str, dict]] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        folder = Path(tmp)
        root = make_cases(folder, args.cases, tuple(args.shape))
        names = list(modes)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # rotated: no mode always first
            results = {}
            for name in order:
                results[name] = modes[name](root, folder / f"r{r}_{name.replace(' ', '_')}")
                loads.append(os.getloadavg()[0])
            rounds.append(results)
    report_rounds(rounds, args, cores, loads)


def fixed_costs(folder: Path, cores: int, n: int = 12, rounds: int = 3) -> dict:
    """What the batch adds to every case, apart from the case's own work: the same loop on cases
    that take a few hundred ms, where the difference is not lost in the network's noise."""
    model = make_tiny_model(folder)
    root = folder / "tiny_scans"
    small = min((folder / "scans").glob("*/ct.nii.gz"))
    for i in range(n):
        (root / f"t{i:02d}").mkdir(parents=True)
        shutil.copy(small, root / f"t{i:02d}" / "ct.nii.gz")
    per_round = []
    for r in range(rounds):
        bare = run_bare(root, folder / f"tb{r}", cores, model)["steady"] / n
        batch = run_mode(root, folder / f"ti{r}", threads=cores, model=str(model))["steady"] / n
        dask = run_mode(root, folder / f"td{r}", workers=1, threads_per_worker=cores, model=str(model))["steady"] / n
        per_round.append((bare, batch - bare, dask - bare))
    return {"n": n, "rounds": rounds, "bare": statistics.median(b for b, _, _ in per_round),
            "in-process": statistics.median(x for _, x, _ in per_round),
            "dask 1x2": statistics.median(x for _, _, x in per_round)}


def report_rounds(rounds: list[dict[str, dict]], args, cores: int, loads: list[float]) -> None:
    n = args.cases
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                   platform.processor())
    print(f"{n} phantom cases {'x'.join(map(str, args.shape))} @ 3 mm per round, {len(rounds)} rounds (modes "
          f"rotated), default model with lesions and plots, {cores} cores ({cpu}), load average "
          f"{min(loads):.1f}-{max(loads):.1f}")
    print(f"{'mode':<11} {'wall s':>7} {'start s':>8} {'tail s':>7} {'per case s':>11} {'x bare':>7} "
          f"{'cases/min':>10} {'steady/min':>11} {'x best 1-proc':>14}")
    for name in rounds[0]:
        def med(key, rs=rounds, name=name):
            return statistics.median(r[name][key] for r in rs)
        # Ratios within a round (the modes of a round ran minutes apart, not hours), then medians.
        x_bare = statistics.median(r[name]["steady"] / r["bare"]["steady"] for r in rounds)
        x_best = statistics.median(
            min(r[m]["steady"] for m in ("bare", "in-process", "dask 1x2")) / r[name]["steady"] for r in rounds)
        print(f"{name:<11} {med('wall'):7.1f} {med('startup'):8.1f} {med('tail'):7.1f} {med('steady') / n:11.2f} "
              f"{x_bare:7.2f} {n / med('wall') * 60:10.1f} {n / med('steady') * 60:11.1f} {x_best:14.2f}")
    print("per case s: time between the first case's start and the last case's end, / N (medians over rounds); "
          "x bare: that time over the bare loop's, per round, median; x best 1-proc: the best one-process "
          "throughput (bare, in-process, dask 1x2) over this mode's, per round, median (1.00 = as fast)")


if __name__ == "__main__":
    main()
