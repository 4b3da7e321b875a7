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
  that lesion again on its box (``table_refresh_after_paint_ms``) against measuring the whole map again
  (``lesion_table``, the baseline).

* **corrections** (the Correct widget on a 512 x 512 x 300 organ map and lesion map, the same
  volume): interpolating a kidney over 20 erased slices, splitting a touching pair at two seeds,
  merging it back, deleting a lesion, each applied as one step of napari's history, and napari's
  undo of each (``interpolate_ms``, ``split_ms``, ``merge_ms``, ``delete_ms``, ``undo_ms``); the
  lesion table's refresh after the split (``table_refresh_ms``); the bytes napari's history holds
  for one step (``undo_entry_bytes``, the interpolation's) against a snapshot of the changed
  bounding box in the layer's dtype (``changed_bbox_bytes``), and both for every operation.

Ratios are medians over rounds of per-round ratios. ``--json FILE`` writes the numbers (keys:
``event_loop_max_gap_ms``, ``event_loop_idle_max_gap_ms``, ``event_loop_p99_gap_ms``,
``add_layers_ms``, ``napari_add_layers_ms``, ``add_layers_longest_step_ms``, ``add_layers_max_gap_ms``,
``table_refresh_after_paint_ms``, ``table_full_ms``, and the corrections' keys above). ``--part`` runs one part.
Results are recorded in ``docs/napari.md``.
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
    from napari_plugin._layers import (
        add_layers,
        layer_data_from_volume,
        layer_info,
        volume_from_layer,
    )
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


def bench_corrections(app, rounds: int, seed: int) -> dict:
    import napari
    from bench_lesions import SPACING, make_case

    from medseg.labels import DEFAULT_ORGANS
    from medseg.lesions import find_instances
    from medseg.volume import Volume
    from napari_plugin._edits import apply_labels_edit, undo
    from napari_plugin._layers import add_layers, layer_data_from_volume, layer_info
    from napari_plugin._view import show_plane
    from napari_plugin._widgets.correct import CorrectWidget
    from napari_plugin._widgets.lesion_table import LesionTableWidget

    mask, ct_array, organs, _ = make_case(seed)
    spacing = np.array(SPACING)
    affine = np.diag([*SPACING, 1.0])
    kidney = DEFAULT_ORGANS.value_of("kidney_right")
    grid = np.ogrid[tuple(slice(0, n) for n in organs.shape)]
    centre, semi = np.array([360, 200, 150]), np.array([30.0, 22.0, 50.0])  # mm: a kidney outside the liver
    organs[sum(((g - c) * s / a) ** 2 for g, c, s, a in zip(grid, centre, spacing, semi)) <= 1] = kidney
    lesion_map = find_instances(Volume(mask.astype(np.uint8), affine), any_nonzero=True).labels.array.astype(np.uint16)
    pair_id = int(lesion_map.max()) + 1
    a_centre, b_centre = np.array([400, 380, 60]), np.array([418, 380, 60])  # 14 mm apart
    box = tuple(slice(c - 25, c + 26) for c in a_centre)
    sub = np.stack(np.meshgrid(*[np.arange(b.start, b.stop) * s for b, s in zip(box, spacing)], indexing="ij"), -1)
    pair = (np.linalg.norm(sub - a_centre * spacing, axis=-1) <= 10.0) | (np.linalg.norm(sub - b_centre * spacing,
                                                                                          axis=-1) <= 7.0)
    lesion_map[box][pair] = pair_id
    viewer = napari.Viewer(show=False)
    _, organ_layer, lesion_layer = add_layers(viewer, [
        layer_data_from_volume(Volume(ct_array, affine, "CT"), "ct", kind="image"),
        layer_data_from_volume(Volume(organs, affine, label_set=DEFAULT_ORGANS), "organs", kind="labels"),
        layer_data_from_volume(Volume(lesion_map, affine), "lesions", kind="lesions")])
    show_plane(viewer, "axial")
    table = LesionTableWidget(viewer)
    wait(app, lambda: table.measuring is None and len(table.rows) > 0)
    correct = CorrectWidget(viewer)
    geometry = layer_info(organ_layer).geometry
    out: dict = {key: [] for key in ("interpolate_ms", "split_ms", "merge_ms", "delete_ms", "undo_ms", "table_refresh_ms",
                                     "napari_fill_ms", "napari_fill_entry_bytes")}

    def idle():
        """Let the event loop run (the table measures the lesions an edit touched), as between two
        clicks of a person."""
        from qtpy.QtWidgets import QApplication

        for _ in range(3):
            QApplication.instance().processEvents()
    entries: dict = {}

    def timed(function):
        t0 = time.perf_counter()
        result = function()
        return (time.perf_counter() - t0) * 1000, result

    def entry(name, layer, correction):
        session = layer_info(layer).session
        itemsize = layer.data.dtype.itemsize
        entries.setdefault(name, (session.last_nbytes, correction.delta.box_voxels * itemsize, correction.voxels))

    def world(ijk):
        return organ_layer.data_to_world(geometry.layer_index(np.asarray(ijk, dtype=float)))

    k0 = 125
    for _ in range(rounds):
        # A kidney missed on 20 slices, restored by interpolation around slice k0 - 1 (drawn).
        erase = np.zeros(organs.shape, bool)
        erase[:, :, k0:k0 + 20] = organs[:, :, k0:k0 + 20] == kidney
        apply_labels_edit(organ_layer, np.nonzero(erase), 0)
        correct.layer_choice.value = organ_layer
        organ_layer.selected_label = kidney
        viewer.dims.set_point(2, float(world([0, 0, k0 - 1])[2]))
        idle()
        ms, done = timed(lambda: correct.interpolate(preview=False))
        out["interpolate_ms"].append(ms)
        entry("interpolate", organ_layer, done)
        idle()
        out["undo_ms"].append(timed(lambda: undo(organ_layer))[0])
        undo(organ_layer)  # the erase
        idle()
        # The touching pair: split at the two centres, the table refreshed, undone; split, merged, undone.
        correct.layer_choice.value = lesion_layer
        idle()
        ms, done = timed(lambda: correct.split(seeds=[world(a_centre), world(b_centre)]))
        out["split_ms"].append(ms)
        entry("split", lesion_layer, done)
        table._flush_timer.stop()
        out["table_refresh_ms"].append(timed(table._flush)[0])
        idle()
        out["undo_ms"].append(timed(lambda: undo(lesion_layer))[0])
        idle()
        new_id = correct.split(seeds=[world(a_centre), world(b_centre)]).record["new_lesion"]
        idle()
        ms, merged = timed(lambda new_id=new_id: correct.merge([pair_id, new_id]))
        out["merge_ms"].append(ms)
        entry("merge", lesion_layer, merged)
        idle()
        out["undo_ms"].append(timed(lambda: undo(lesion_layer))[0])
        undo(lesion_layer)
        idle()
        ms, deleted = timed(lambda: correct.delete(pair_id))
        out["delete_ms"].append(ms)
        entry("delete", lesion_layer, deleted)
        idle()
        out["undo_ms"].append(timed(lambda: undo(lesion_layer))[0])
        idle()
        # Baseline: napari's own fill tool deleting the same lesion (3D, not contiguous: every voxel
        # of the id), one mask-based undo step.
        lesion_layer.n_edit_dimensions, lesion_layer.contiguous, lesion_layer.preserve_labels = 3, False, False
        voxel = layer_info(lesion_layer).geometry.layer_index(np.argwhere(lesion_map == pair_id)[0].astype(float))
        out["napari_fill_ms"].append(timed(lambda: lesion_layer.fill(voxel, 0))[0])
        out["napari_fill_entry_bytes"].append(layer_info(lesion_layer).session.last_nbytes)
        undo(lesion_layer)
        lesion_layer.n_edit_dimensions, lesion_layer.contiguous, lesion_layer.preserve_labels = 2, True, True
        idle()
        assert np.array_equal(layer_info(lesion_layer).geometry.to_volume(lesion_layer.data), lesion_map)
    out["entries"] = entries
    out["layer_bytes"] = {"organs": int(organ_layer.data.nbytes), "lesions": int(lesion_layer.data.nbytes)}
    viewer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--part", choices=("all", "corrections", "workstation"), default="all",
                        help="corrections: the Correct widget only; workstation: segmentation, layers, table")
    args = parser.parse_args(argv)
    app = None  # napari's first viewer creates the Qt application
    print(f"CPU: {_cpu()}, {platform.python_version()}")
    import os
    import tempfile

    # Recovery files of the benchmark's scans go to a scratch folder, not ~/.cache.
    os.environ.setdefault("MEDSEG_RECOVERY_DIR", tempfile.mkdtemp(prefix="medseg-bench-recovery-"))
    numbers: dict = {"cpu": _cpu()}
    if args.part in ("all", "corrections"):
        numbers.update(_report_corrections(bench_corrections(app, args.rounds, args.seed)))
    if args.part in ("all", "workstation"):
        numbers.update(_report_workstation(app, args))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


def _report_corrections(out: dict) -> dict:
    median = statistics.median
    numbers = {key: median(out[key]) for key in ("interpolate_ms", "split_ms", "merge_ms", "delete_ms", "undo_ms",
                                                   "table_refresh_ms")}
    numbers["undo_ms_max"] = max(out["undo_ms"])
    numbers["undo_entry_bytes"], numbers["changed_bbox_bytes"], _ = out["entries"]["interpolate"]
    numbers["entries"] = {name: {"undo_entry_bytes": e, "changed_bbox_bytes": b, "voxels_changed": v}
                          for name, (e, b, v) in out["entries"].items()}
    numbers["napari_fill_delete_ms"] = median(out["napari_fill_ms"])
    numbers["napari_fill_entry_bytes"] = median(out["napari_fill_entry_bytes"])
    numbers["layer_bytes"] = out["layer_bytes"]
    print("corrections on 512x512x300 (medians; target <= 100 ms each):")
    for key in ("interpolate_ms", "split_ms", "merge_ms", "delete_ms", "undo_ms", "table_refresh_ms"):
        print(f"  {key}: {numbers[key]:.0f} ms  (rounds: {[round(v) for v in out[key]]})")
    ratio = median(a / b for a, b in zip(out["delete_ms"], out["napari_fill_ms"]))
    print(f"  baseline, napari's own fill deleting the same lesion (3D, every voxel of the id): "
          f"{numbers['napari_fill_delete_ms']:.0f} ms, undo entry {numbers['napari_fill_entry_bytes']} bytes; "
          f"delete / fill: {ratio:.2f}x")
    print(f"  a whole-layer snapshot (what an undo by copy would hold): {numbers['layer_bytes']} bytes")
    for name, e in numbers["entries"].items():
        print(f"  undo entry of {name}: {e['undo_entry_bytes']} bytes for {e['voxels_changed']} voxels; changed box "
              f"{e['changed_bbox_bytes']} bytes: {e['undo_entry_bytes'] / max(e['changed_bbox_bytes'], 1):.2f}x")
    return numbers


def _report_workstation(app, args) -> dict:
    median = statistics.median
    table = bench_table(app, max(args.rounds, 5), args.seed)
    run = bench_run(app, args.rounds)
    numbers = {
        "event_loop_max_gap_ms": max(run["run_gap_ms"]), "event_loop_idle_max_gap_ms": max(run["idle_gap_ms"]),
        "event_loop_p99_gap_ms": median(run["p99_ms"]), "run_s": median(run["run_s"]),
        "add_layers_ms": median(run["add_ms"]), "napari_add_layers_ms": median(run["napari_add_ms"]),
        "add_layers_longest_step_ms": median(run["add_step_ms"]), "add_layers_max_gap_ms": max(run["add_gap_ms"]),
        "table_refresh_after_paint_ms": median(table["refresh_ms"]), "table_full_ms": median(table["full_ms"]),
        "n_lesions": table["n_lesions"],
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
    print(f"lesion table after an edit ({table['n_lesions']} lesions, 512x512x300): "
          f"{numbers['table_refresh_after_paint_ms']:.0f} ms, whole table {numbers['table_full_ms']:.0f} ms: "
          f"{ratio_table:.3f}x")
    return numbers


if __name__ == "__main__":
    raise SystemExit(main())
