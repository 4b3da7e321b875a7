"""Is a candidate default model as fast as v1? Both on the 512x512x300 benchmark CT, one process, alternating.

::

    python -m medseg.recipes.speed --candidate runs/v2 [--repeats 3] [--threads 2] [--json out.json]

The CT is ``benchmarks/bench_inference.py``'s (the real CT angiography resampled to 512x512x300,
cached in ``$MEDSEG_BENCH_CACHE``). Each repeat segments it with v1 (``medseg.recipes.default_v2.v1_model``)
and the candidate in turn (the order alternates between repeats), after one warm-up run each, with
``segment(..., backend="torch", device="cpu")`` as ``medseg segment`` runs it. The machine is shared
and noisy, so what counts is the median of the per-repeat ratios candidate / v1, measured side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["benchmark_ct", "compare", "main"]

REPO = Path(__file__).resolve().parents[2]


def benchmark_ct() -> Path:
    """The 512x512x300 CT of ``benchmarks/bench_inference.py`` (built and cached by its ``make_volume``)."""
    spec = importlib.util.spec_from_file_location("bench_inference", REPO / "benchmarks" / "bench_inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.make_volume())


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def compare(candidate: str, *, repeats: int = 3, threads: int = 2, cache: Path | None = None, log=print) -> dict:
    """Seconds per segmentation of v1 and ``candidate`` and the median ratio (candidate / v1)."""
    import torch

    from medseg.inference import segment
    from medseg.io import load_volume
    from medseg.models import resolve_model
    from medseg.recipes.default_v2 import v1_model

    torch.set_num_threads(threads)
    ct = load_volume(benchmark_ct())
    models = {"v1": resolve_model(v1_model(cache or Path("/tmp/medseg-bench"))), "candidate": resolve_model(candidate)}
    times: dict[str, list[dict]] = {"v1": [], "candidate": []}
    for name, model in models.items():  # warm-up: first-use costs are not the model's speed
        segment(ct, model, device="cpu", backend="torch")
    for repeat in range(repeats):
        order = ("v1", "candidate") if repeat % 2 == 0 else ("candidate", "v1")
        for name in order:
            started = time.perf_counter()
            result = segment(ct, models[name], device="cpu", backend="torch")
            times[name].append({"total": time.perf_counter() - started, "network": result.timings["network"]})
            seconds = times[name][-1]
            log(f"repeat {repeat + 1}: {name} {seconds['total']:.1f} s (network {seconds['network']:.1f} s)")
    ratios = [c["total"] / v["total"] for c, v in zip(times["candidate"], times["v1"])]
    network = [c["network"] / v["network"] for c, v in zip(times["candidate"], times["v1"])]
    return {"ct": list(ct.shape), "cpu": _cpu(), "threads": threads, "repeats": repeats, "seconds": times,
            "median_ratio_total": float(np.median(ratios)), "median_ratio_network": float(np.median(network)),
            "models": {k: m.describe() for k, m in models.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medseg.recipes.speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", default="default", help="model folder to compare with v1 (default: shipped)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    found = compare(args.candidate, repeats=args.repeats, threads=args.threads)
    print(f"{found['cpu']}, {args.threads} threads, {found['ct']} CT: candidate / v1 = "
          f"{found['median_ratio_total']:.2f}x total, {found['median_ratio_network']:.2f}x network (median of "
          f"{args.repeats})")
    if args.json:
        Path(args.json).write_text(json.dumps(found, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
