"""One whole case, process start to last file: ``medseg run`` against ``segment`` + ``lesions``.

    .venv/bin/python benchmarks/bench_pipeline.py [--repeats 2] [--json FILE] [-- extra run options]

The input is the inference benchmark's 512x512x300 CT (``benchmarks/bench_inference.py`` builds
it from a real CT angiography in ``../shared/data`` and caches it as uncompressed NIfTI under
``$MEDSEG_BENCH_CACHE``); the model is the shipped default model. In interleaved rounds:

* ``medseg run CT -o CASE`` (one process: read once, segment, lesions, report, one case folder);
* the two-command way it was done before ``run`` existed: ``medseg segment CT -o SEG`` then
  ``medseg lesions SEG/labels.nii.gz --image CT -o LES`` (two processes, the CT read twice).

Each command runs in its own process with a small wrapper that records its peak RSS
(``getrusage``) and the time from the wrapper's first line to ``main()`` (interpreter and CLI
start-up). Wall time is taken around the process, from before it starts to after it exits, so
start-up and the last file are included. ``medseg run``'s own stage timings (``provenance.json``)
split the rest: read, load_model (includes importing torch and MONAI), model_space, network,
restore, cleanup, lesions, report. Prints per round and the median, the ratio run / (segment +
lesions), and the two issue targets: the whole case <= 15 s, everything outside the network
<= 30 % of the network's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

WRAPPER = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from medseg.cli.main import main
t_main = time.perf_counter()
code = main(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
with open(sys.argv[1], "w") as handle:
    json.dump({"code": code, "startup_s": t_main - t0, "peak_rss_mb": peak}, handle)
sys.exit(code)
"""


def run_command(args: list[str], workdir: Path) -> dict:
    stats = workdir / f"stats-{time.monotonic_ns()}.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(stats), *args], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    record = json.loads(stats.read_text())
    record["wall_s"] = wall
    return record


def one_round(ct: Path, workdir: Path, extra: list[str]) -> dict:
    case = workdir / "case"
    run = run_command(["run", str(ct), "-o", str(case), "--quiet", *extra], workdir)
    provenance = json.loads((case / "provenance.json").read_text())
    stages = dict(provenance["timings_s"])
    # provenance.json is written with the report, so its timings stop before it: the report and
    # the process exit are the rest of the wall time.
    before_report = stages.pop("total_before_report", stages.get("total", 0.0))
    stages.pop("report", None)
    stages.pop("total", None)
    stages["report_and_exit"] = max(run["wall_s"] - run["startup_s"] - before_report, 0.0)
    stages["startup"] = run["startup_s"]
    run["stages_s"] = stages
    n_lesions = len(json.loads((case / "lesions" / "lesions.json").read_text())["lesions"])
    seg = run_command(["segment", str(ct), "-o", str(workdir / "seg"), "--quiet", *extra], workdir)
    les = run_command(["lesions", str(workdir / "seg" / "labels.nii.gz"), "--image", str(ct), "--min-volume", "100",
                       "-o", str(workdir / "les")], workdir)
    return {"run": run, "segment": seg, "lesions": les, "n_lesions": n_lesions}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("extra", nargs="*", help="options passed to run and segment (after --)")
    args = parser.parse_args()
    import bench_inference

    ct = bench_inference.make_volume()
    workdir = Path(tempfile.mkdtemp(prefix="medseg-bench-pipeline-"))
    rounds = []
    try:
        for index in range(args.repeats):
            result = one_round(ct, workdir, args.extra)
            rounds.append(result)
            run, seg, les = result["run"], result["segment"], result["lesions"]
            before = seg["wall_s"] + les["wall_s"]
            stages = ", ".join(f"{k} {v:.2f}" for k, v in run["stages_s"].items())
            print(f"round {index + 1}: run {run['wall_s']:.1f} s (peak {run['peak_rss_mb']:.0f} MB, start-up "
                  f"{run['startup_s']:.2f} s; {stages}) | segment {seg['wall_s']:.1f} s + lesions {les['wall_s']:.1f} s "
                  f"= {before:.1f} s (peak {max(seg['peak_rss_mb'], les['peak_rss_mb']):.0f} MB) | ratio "
                  f"{run['wall_s'] / before:.2f}x", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    median = statistics.median
    run_wall = median(r["run"]["wall_s"] for r in rounds)
    before = median(r["segment"]["wall_s"] + r["lesions"]["wall_s"] for r in rounds)
    network = median(r["run"]["stages_s"]["network"] for r in rounds)
    outside = median(r["run"]["wall_s"] - r["run"]["stages_s"]["network"] for r in rounds)
    summary = {
        "cpu": platform.processor() or platform.machine(), "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "extra_options": args.extra, "rounds": rounds, "run_wall_s": run_wall, "segment_plus_lesions_wall_s": before,
        "ratio": run_wall / before, "network_s": network, "outside_network_s": outside,
        "outside_over_network": outside / network,
        "stages_median_s": {k: median(r["run"]["stages_s"][k] for r in rounds) for k in rounds[0]["run"]["stages_s"]},
        "peak_rss_mb": {"run": median(r["run"]["peak_rss_mb"] for r in rounds),
                        "segment": median(r["segment"]["peak_rss_mb"] for r in rounds),
                        "lesions": median(r["lesions"]["peak_rss_mb"] for r in rounds)},
    }
    print(f"median: medseg run {run_wall:.1f} s vs segment + lesions {before:.1f} s ({run_wall / before:.2f}x); "
          f"network {network:.1f} s, everything else {outside:.1f} s = {outside / network:.0%} of the network")
    print(f"targets: whole case <= 15 s: {'met' if run_wall <= 15 else 'NOT met'} ({run_wall:.1f} s); outside the "
          f"network <= 30 %: {'met' if outside / network <= 0.30 else 'NOT met'} ({outside / network:.0%})")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
