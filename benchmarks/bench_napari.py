"""Benchmark: the napari review workstation against napari's own costs and a whole-table recompute.

Runs inside a real napari viewer (use Xvfb: ``xvfb-run -a python benchmarks/bench_napari.py``).
Measured in one run, baselines alongside:

* **event loop during a segmentation**: a 10 ms Qt timer on the GUI thread while the Segment
  widget runs ``run_case`` (the shipped default model on the phantom) in its worker; the longest
  gap between ticks is the longest the viewer was frozen. Baseline: the same timer with the viewer
  idle for as long, which shows what the shared machine alone costs.
* **adding a result's layers**: what the widget spends adding organ labels and lesions
  (``add_result_layers``: names, colours, geometry) against napari's own ``add_labels`` of the
  same arrays with no options.
* **lesion table after an edit**: a 512 x 512 x 300 lesion map (the ``bench_lesions.py`` volume,
  ~50 lesions); one lesion grows by a painted ball (one undoable napari edit); the widget measures
  that lesion again on its box (``table_refresh_ms``) against measuring the whole map again
  (``lesion_table``, the baseline).

Ratios are medians over rounds of per-round ratios. ``--json FILE`` writes the numbers (keys:
``event_loop_max_gap_ms``, ``event_loop_idle_max_gap_ms``, ``event_loop_p99_gap_ms``,
``add_layers_ms``, ``napari_add_layers_ms``, ``add_layers_longest_step_ms``, ``add_layers_max_gap_ms``,
``table_refresh_ms``, ``table_full_ms``). Results are
recorded in ``docs/napari.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                    platform.processor())
    except (OSError, subprocess.SubprocessError):
        return platform.processor()


class LoopWatch:
    """Ticks of a 10 ms timer on the GUI thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def gaps_ms(self, start: float, stop: float) -> np.ndarray:
        ticks = [t for t in self.ticks if start <= t <= stop]
        return np.diff([start, *ticks, stop]) * 1000.0


def wait(app, condition, timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    stop = time.perf_counter() + timeout
    while not condition():
        app.processEvents()
        time.sleep(0.002)
        if time.perf_counter() > stop:
            raise TimeoutError("benchmark step did not finish")


def bench_run(app, rounds: int) -> dict:
    import napari

    from napari_plugin._layers import add_layers
    from napari_plugin._sample_data import phantom_sample
    from napari_plugin._widgets.segment import SegmentWidget, add_result_layers

    viewer = napari.Viewer(show=False)
    add_layers(viewer, phantom_sample()[:1])
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.device.value = "cpu"
    wait(app, lambda: widget.ready)
    watch = LoopWatch()
    out = {"run_gap_ms": [], "idle_gap_ms": [], "p99_ms": [], "add_ms": [], "napari_add_ms": [], "run_s": [],
           "add_step_ms": [], "add_gap_ms": []}
    results = []
    widget.run_function = None
    for _ in range(rounds):
        start = time.perf_counter()
        wait(app, lambda start=start: time.perf_counter() - start > 3.0)
        out["idle_gap_ms"].append(float(watch.gaps_ms(start, time.perf_counter()).max()))
        seen = []
        worker = widget.run()
        worker.yielded.connect(lambda p, seen=seen: seen.append(time.perf_counter()))
        worker.returned.connect(lambda r: results.append(r))
        start = time.perf_counter()
        wait(app, lambda: not widget.running)
        gaps = watch.gaps_ms(start, seen[-1])
        out["run_gap_ms"].append(float(gaps.max()))
        out["p99_ms"].append(float(np.percentile(gaps, 99)))
        out["run_s"].append(seen[-1] - start)
        out["add_step_ms"].append(widget.add_layers_s * 1000)
        out["add_gap_ms"].append(float(watch.gaps_ms(seen[-1], time.perf_counter()).max()))
        for layer in widget.added:
            viewer.layers.remove(layer)
        # Adding the same result again, timed, against napari's bare add_labels of the same arrays.
        result = results[-1]
        t0 = time.perf_counter()
        added = add_result_layers(viewer, result, "again")
        out["add_ms"].append((time.perf_counter() - t0) * 1000)
        for layer in added:
            viewer.layers.remove(layer)
        t0 = time.perf_counter()
        plain = [viewer.add_labels(result.labels.array.copy())]
        if result.lesions is not None:
            plain.append(viewer.add_labels(result.lesions.labels.array.copy()))
        out["napari_add_ms"].append((time.perf_counter() - t0) * 1000)
        for layer in plain:
            viewer.layers.remove(layer)
    watch.timer.stop()
    viewer.close()
    return out


def bench_table(app, rounds: int, seed: int) -> dict:
    import napari
    from bench_lesions import SPACING, make_case

    from medseg.lesions import find_instances, lesion_table
    from medseg.volume import Volume
    from napari_plugin._edits import apply_labels_edit
    from napari_plugin._layers import add_layers, layer_data_from_volume, layer_info, volume_from_layer
    from napari_plugin._widgets.lesion_table import LesionTableWidget

    case = make_case(seed)
    mask, ct_array = case[0], case[1]
    affine = np.diag([*SPACING, 1.0])
    ct = Volume(ct_array, affine, "CT")
    instances = find_instances(Volume(mask.astype(np.uint8), affine), any_nonzero=True)
    table = lesion_table(instances, image=ct)
    lesions = Volume(instances.labels.array.astype(np.uint16), affine)
    viewer = napari.Viewer(show=False)
    ct_layer, lesion_layer = add_layers(viewer, [layer_data_from_volume(ct, "ct", kind="image"),
                                                 layer_data_from_volume(lesions, "lesions", kind="lesions")])
    layer_info(lesion_layer).lesion_rows = list(table.rows)
    widget = LesionTableWidget(viewer)
    wait(app, lambda: widget.measuring is None and len(widget.rows) == len(table))
    geometry = layer_info(lesion_layer).geometry
    refresh, full = [], []
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        row = table.rows[int(rng.integers(0, len(table)))]
        edge = np.round(row.centroid_ijk)
        edge[0] = row.bbox_stop_ijk[0]  # a ball on the lesion's border: it grows
        centre = geometry.layer_index(edge).astype(int)
        r = 6
        grid = np.ogrid[tuple(slice(max(c - r, 0), c + r + 1) for c in centre)]
        ball = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, lesion_layer.scale)) <= (r * 0.78) ** 2
        where = np.nonzero(ball)
        indices = tuple(w + max(c - r, 0) for w, c in zip(where, centre))
        if not apply_labels_edit(lesion_layer, indices, row.id):
            continue
        t0 = time.perf_counter()
        widget._flush_timer.stop()
        widget._flush()
        refresh.append((time.perf_counter() - t0) * 1000)
        assert widget.remeasured[-1] == row.id
        t0 = time.perf_counter()
        lesion_table(volume_from_layer(lesion_layer), image=volume_from_layer(ct_layer))
        full.append((time.perf_counter() - t0) * 1000)
    viewer.close()
    return {"refresh_ms": refresh, "full_ms": full, "n_lesions": len(table)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    app = None  # napari's first viewer creates the Qt application
    print(f"CPU: {_cpu()}, {platform.python_version()}")
    table = bench_table(app, max(args.rounds, 5), args.seed)
    run = bench_run(app, args.rounds)
    median = statistics.median
    numbers = {
        "event_loop_max_gap_ms": max(run["run_gap_ms"]), "event_loop_idle_max_gap_ms": max(run["idle_gap_ms"]),
        "event_loop_p99_gap_ms": median(run["p99_ms"]), "run_s": median(run["run_s"]),
        "add_layers_ms": median(run["add_ms"]), "napari_add_layers_ms": median(run["napari_add_ms"]),
        "add_layers_longest_step_ms": median(run["add_step_ms"]), "add_layers_max_gap_ms": max(run["add_gap_ms"]),
        "table_refresh_ms": median(table["refresh_ms"]), "table_full_ms": median(table["full_ms"]),
        "n_lesions": table["n_lesions"], "cpu": _cpu(),
    }
    ratio_add = median(a / b for a, b in zip(run["add_ms"], run["napari_add_ms"]))
    ratio_table = median(a / b for a, b in zip(table["refresh_ms"], table["full_ms"]))
    print(f"segmentation of the phantom (default model, {numbers['run_s']:.1f} s): longest event-loop gap "
          f"{numbers['event_loop_max_gap_ms']:.0f} ms (idle viewer, same run: "
          f"{numbers['event_loop_idle_max_gap_ms']:.0f} ms); p99 {numbers['event_loop_p99_gap_ms']:.0f} ms")
    print(f"rounds: run {[round(g) for g in run['run_gap_ms']]} ms, idle {[round(g) for g in run['idle_gap_ms']]} ms")
    print(f"adding the result's layers: {numbers['add_layers_ms']:.0f} ms, napari's bare add_labels "
          f"{numbers['napari_add_layers_ms']:.0f} ms: {ratio_add:.2f}x; in the widget one layer per event-loop turn, "
          f"longest turn {numbers['add_layers_longest_step_ms']:.0f} ms, longest gap "
          f"{numbers['add_layers_max_gap_ms']:.0f} ms")
    print(f"lesion table after an edit ({table['n_lesions']} lesions, 512x512x300): {numbers['table_refresh_ms']:.0f} ms,"
          f" whole table {numbers['table_full_ms']:.0f} ms: {ratio_table:.3f}x")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
