"""Plain MONAI against medseg (torch, OpenVINO, ONNX Runtime, auto) on one 512x512x300 CT, 2 CPU threads.

    .venv/bin/python benchmarks/bench_inference.py [--model unet14|default|segresnet14] [--repeats 2]
                                                   [--backends torch,openvino,onnxruntime,auto] [--ablation]

The volume is the real CT angiography ``totalsegmentator/aorta_report/example_ct.nii.gz`` from
``../shared/data`` (233x167x191 at 1.5 mm), resampled to 512x512x300 (0.68 x 0.68 x 0.96 mm;
the field of view is squared with air, as a scanner's is). The network is fitted for 150 steps to
14 classes of smoothed-HU intervals on that CT (organ-like blobs, class 0 = air), so its label map has real structure and agreement
is not vacuous. Both cached under ``$MEDSEG_BENCH_CACHE`` (default ``/tmp/medseg-bench``).

``--model default`` runs the shipped default model (11 classes, 3 mm, roi 64) instead.

Each pipeline runs in its own subprocess (peak memory = its max RSS, imports included) from the
NIfTI file to a label array in memory:

* plain MONAI: LoadImaged -> EnsureChannelFirstd -> Orientationd -> Spacingd -> ScaleIntensityRanged
  -> sliding_window_inference (Gaussian, 4 windows per pass as MONAI's own bundles configure)
  -> softmax -> Invertd (bilinear) -> argmax;
* medseg-BACKEND: ``load_volume`` -> ``medseg.inference.segment(..., backend=BACKEND,
  postprocess=False)`` (same model space and windows; the default model's largest-component
  clean-up is left out so every pipeline gives the network's own labels).

The back-ends run from a warm export cache (``$MEDSEG_BENCH_CACHE/backend-cache``): before the
rounds, one ``auto`` run on an emptied cache measures what a first use costs (export, agreement
check, timing of every back-end), and is reported apart. ``medseg-auto (no torch network)`` is
auto with the model described by its spec and weights hash only (what a cached export needs):
no MONAI import and no network build, so it also shows the start-up saved.

Prints, per variant, ratios within each round (median over rounds): total time against plain
MONAI and against medseg-torch, network time against medseg-torch, peak RSS, and per-class Dice
against medseg-torch and against MONAI. Targets (issue 15): auto <= 0.35x medseg-torch's network
time and <= 0.1x plain MONAI's total, Dice >= 0.999 per class, peak memory <= medseg-torch's.
Also volumes per minute on a GPU when one is present.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("MEDSEG_BENCH_CACHE", "/tmp/medseg-bench"))
BACKEND_CACHE = CACHE / "backend-cache"
SOURCE_CT = DATA / "totalsegmentator" / "aorta_report" / "example_ct.nii.gz"
SHAPE = (512, 512, 300)
#: 14 classes: intervals of HU smoothed over ~3 mm (class c = between EDGES[c-1] and EDGES[c]), so
#: classes are blobs with smooth borders, as organs are; class 0 is air (outside the body and lungs).
EDGES = [-500, -200, -100, -60, -30, 0, 20, 40, 60, 90, 130, 200, 400]
SMOOTH_MM = 3.0
SPACING_MM = (1.5, 1.5, 1.5)
ROI = (96, 96, 96)
OVERLAP = 0.25


def make_volume() -> Path:
    """The 512x512x300 CT (cached as uncompressed NIfTI so reading it costs both pipelines little)."""
    out = CACHE / "ct_512x512x300.nii"
    if out.exists():
        return out
    import nibabel as nib
    from scipy.ndimage import map_coordinates

    img = nib.load(str(SOURCE_CT))
    data = np.asarray(img.dataobj, dtype=np.float32)
    extent = np.array(data.shape) * np.linalg.norm(img.affine[:3, :3], axis=0)
    inplane = max(extent[:2]) / SHAPE[0]
    spacing = np.array([inplane, inplane, extent[2] / SHAPE[2]])
    # Output voxel centres, centred on the source field of view; outside it is air.
    centre = (np.array(data.shape) - 1) / 2 * np.linalg.norm(img.affine[:3, :3], axis=0)
    axes = [(np.arange(n) - (n - 1) / 2) * s + c for n, s, c in zip(SHAPE, spacing, centre)]
    src = [a / s for a, s in zip(axes, np.linalg.norm(img.affine[:3, :3], axis=0))]
    out_arr = np.empty(SHAPE, dtype=np.int16)
    for k in range(SHAPE[2]):
        grid = np.meshgrid(src[0], src[1], indexing="ij")
        coords = np.stack([grid[0], grid[1], np.full_like(grid[0], src[2][k])])
        out_arr[:, :, k] = np.round(map_coordinates(data, coords, order=1, mode="constant", cval=-1024))
    direction = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    first = img.affine[:3, :3] @ (np.array([a[0] for a in src])) + img.affine[:3, 3]
    affine[:3, 3] = first
    CACHE.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(out_arr, affine), str(out))
    return out


def make_model(ct_path: Path, arch: str) -> Path:
    """A 14-class network fitted briefly to smoothed HU intervals on the CT, saved as a model folder."""
    if arch == "default":
        from medseg.models import default_model_path

        return default_model_path()
    folder = CACHE / f"model_{arch}14_v2"
    if (folder / "medseg-model.json").exists():
        return folder
    import torch

    from medseg.inference import plan_grid
    from medseg.inference.preprocess import apply_intensity, resample_to_grid
    from medseg.io import load_volume
    from medseg.labels import LabelSet
    from medseg.models.networks import build_network
    from medseg.models.spec import IntensitySpec, ModelSpec, NetworkSpec, Preprocessing
    from medseg.models.store import save_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if arch == "unet":
        net_spec = NetworkSpec("unet", {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2],
                                        "num_res_units": 2, "norm": "batch"})
    else:
        net_spec = NetworkSpec("segresnet", {"init_filters": 16, "blocks_down": [1, 2, 2, 4],
                                             "blocks_up": [1, 1, 1]})
    labels = LabelSet({c: ("background" if c == 0 else f"hu_band_{c}") for c in range(len(EDGES) + 1)})
    pre = Preprocessing(orientation="RAS", spacing_mm=SPACING_MM, roi_size=ROI, overlap=OVERLAP,
                        intensity=IntensitySpec(kind="window", a_min=-1000, a_max=1000))
    spec = ModelSpec(f"bench-{arch}14", net_spec, labels, pre,
                     provenance={"fitted_to": f"HU intervals {EDGES} of the CT smoothed over {SMOOTH_MM} mm"})
    net = build_network(net_spec, len(labels))
    volume = load_volume(ct_path)
    grid = plan_grid(volume, pre)
    hu = resample_to_grid(volume, grid)
    from scipy.ndimage import gaussian_filter

    target = torch.from_numpy(np.digitize(gaussian_filter(hu, SMOOTH_MM / SPACING_MM[0]), EDGES).astype(np.int64))
    image = torch.from_numpy(apply_intensity(hu.copy(), pre.intensity))
    net.train()
    steps, size = 150, 64
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=steps)
    for step in range(steps):
        o = [rng.integers(0, n - size + 1) for n in image.shape]
        region = tuple(slice(a, a + size) for a in o)
        loss = torch.nn.functional.cross_entropy(net(image[region][None, None]), target[region][None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    net.eval()
    save_model(spec, net, folder)
    return folder


MONAI_CHILD = r"""
import json, sys, time, resource
T0 = time.perf_counter()
import numpy as np, torch
torch.set_num_threads(2)
from monai.inferers import sliding_window_inference
from monai.transforms import (Activationsd, AsDiscreted, Compose, EnsureChannelFirstd, Invertd, LoadImaged,
                              Orientationd, ScaleIntensityRanged, Spacingd)
from medseg.models.store import load_model
cfg = json.loads(sys.argv[1])
model = load_model(cfg["model"])
pre, it = model.spec.preprocessing, model.spec.preprocessing.intensity
t0 = time.perf_counter()
transform = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes=pre.orientation),
                     Spacingd("image", pixdim=pre.spacing_mm, mode="bilinear"),
                     ScaleIntensityRanged("image", a_min=it.a_min, a_max=it.a_max, b_min=it.b_min, b_max=it.b_max, clip=it.clip)])
data = transform({"image": cfg["ct"]})
t1 = time.perf_counter()
with torch.inference_mode():
    data["pred"] = sliding_window_inference(data["image"][None], pre.roi_size, cfg["sw_batch_size"], model.network,
                                            overlap=pre.overlap, mode="gaussian")[0]
t2 = time.perf_counter()
post = Compose([Activationsd("pred", softmax=True),
                Invertd("pred", transform=transform, orig_keys="image", nearest_interp=False, to_tensor=True),
                AsDiscreted("pred", argmax=True)])
labels = post(data)["pred"][0].numpy().astype(np.uint8)
seconds = time.perf_counter() - t0
np.save(cfg["out"], labels)
print(json.dumps({"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "startup": t0 - T0, "network": t2 - t1,
                  "timings": {"preprocess": t1 - t0, "sliding_window": t2 - t1, "invert_argmax": seconds - (t2 - t0)}}))
"""

MEDSEG_CHILD = r"""
import json, sys, time, resource
T0 = time.perf_counter()
import numpy as np, torch
torch.set_num_threads(2)
from medseg.inference import segment
from medseg.io import load_volume
cfg = json.loads(sys.argv[1])
if cfg.get("lazy"):  # the model as a cached export needs it: spec + weights hash, no network built
    from medseg.models import SegmentationModel
    from medseg.models.store import read_spec, sha256_file
    from pathlib import Path
    spec, weights = read_spec(cfg["model"])
    model = SegmentationModel(name=spec.name, version=spec.version, modality=spec.modality, network=None,
                              labels=spec.labels, preprocessing=spec.preprocessing, source="medseg-model",
                              path=cfg["model"], weights_sha256=sha256_file(Path(cfg["model"]) / weights["file"]),
                              spec=spec)
else:
    from medseg.models import resolve_model
    model = resolve_model(cfg["model"])
t0 = time.perf_counter()
result = segment(load_volume(cfg["ct"]), model, device=cfg.get("device", "cpu"), precision=cfg.get("precision", "auto"),
                 crop=cfg.get("crop"), sw_batch_size=cfg.get("medseg_sw_batch_size"),
                 backend=cfg.get("backend", "torch"), postprocess=False)
seconds = time.perf_counter() - t0
np.save(cfg["out"], result.labels.array)
backend = result.provenance["backend"]
print(json.dumps({"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "startup": t0 - T0, "network": result.timings["network"], "monai_imported": "monai" in sys.modules,
                  "windows": result.provenance["windows"], "computed_fraction": result.provenance["computed_fraction"],
                  "mixed_voxel_fraction": result.provenance["mixed_voxel_fraction"], "timings": result.timings,
                  "predictor": result.provenance["predictor"], "backend": backend["variant"], "how": backend["how"],
                  "calibration_seconds": backend["calibration_seconds"],
                  "seconds_per_window": backend["seconds_per_window"], "notes": result.provenance["notes"]}))
"""


def run_child(code: str, cfg: dict, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO), MEDSEG_CACHE_DIR=str(BACKEND_CACHE),
               **(env_extra or {}))
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - began  # interpreter start to exit
    return result


def dice_per_class(a: np.ndarray, b: np.ndarray, n_classes: int) -> dict[int, float]:
    out = {}
    for c in range(n_classes):
        x, y = a == c, b == c
        total = int(x.sum()) + int(y.sum())
        if total:
            out[c] = 2.0 * int((x & y).sum()) / total
    return out


def cpu_line() -> str:
    """CPU model and the instruction sets that decide back-end speed (lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "lscpu not available"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in flags]
    return (f"{fields.get('Model name', '?').strip()} (family {fields.get('CPU family', '?').strip()}, model "
            f"{fields.get('Model', '?').strip()}), {fields.get('CPU(s)', '?').strip()} CPUs, flags: {' '.join(wanted)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", "--arch", dest="model", default="unet14",
                        choices=("unet14", "segresnet14", "default", "unet", "segresnet"),
                        help="the 14-class benchmark UNet (or SegResNet), or the shipped default model")
    parser.add_argument("--backends", default="torch,openvino,onnxruntime,auto",
                        help="medseg back-ends to time (comma-separated; torch is always included)")
    parser.add_argument("--skip-monai", action="store_true", help="time medseg only (GPU runs)")
    parser.add_argument("--ablation", action="store_true",
                        help="also time medseg without each speed measure (malloc tuning, batching, crop) and in bf16")
    parser.add_argument("--monai-sw-batch-size", type=int, default=4,
                        help="windows per forward pass for plain MONAI (default 4, as MONAI's spleen, BTCV "
                             "and pediatric bundles configure their SlidingWindowInferer)")
    args = parser.parse_args()
    ct = make_volume()
    arch = {"unet14": "unet", "segresnet14": "segresnet", "unet": "unet", "segresnet": "segresnet",
            "default": "default"}[args.model]  # unet/segresnet: the --arch spelling of earlier runs
    model = make_model(ct, arch)
    from medseg.models.store import read_spec

    spec, _ = read_spec(model)
    n_classes = len(spec.labels)
    pre = spec.preprocessing
    print(f"CPU: {cpu_line()}")
    print(f"volume {ct} {SHAPE}, model {model.name} ({spec.network.arch}, {n_classes} classes), 2 threads, "
          f"spacing {pre.spacing_mm} mm, roi {pre.roi_size}, overlap {pre.overlap}, "
          f"MONAI sw_batch_size {args.monai_sw_batch_size}")
    backends = ["torch", *[b for b in args.backends.split(",") if b and b != "torch"]]
    variants = [(f"medseg-{b}", MEDSEG_CHILD, {"backend": b}, {}) for b in backends]
    if "auto" in backends:
        variants.append(("medseg-auto-lazy", MEDSEG_CHILD, {"backend": "auto", "lazy": True}, {}))
    if not args.skip_monai:
        variants.insert(0, ("monai", MONAI_CHILD, {"sw_batch_size": args.monai_sw_batch_size}, {}))
    if args.ablation:
        variants += [("no malloc tuning", MEDSEG_CHILD, {}, {"MEDSEG_MALLOC_TUNING": "0"}),
                     ("1 window per pass", MEDSEG_CHILD, {"medseg_sw_batch_size": 1}, {}),
                     ("no foreground crop", MEDSEG_CHILD, {"crop": False}, {}),
                     ("bf16 autocast", MEDSEG_CHILD, {"precision": "bf16"}, {})]
    base = {"ct": str(ct), "model": str(model)}
    if len(backends) > 1:
        import shutil

        shutil.rmtree(BACKEND_CACHE, ignore_errors=True)
        first = run_child(MEDSEG_CHILD, {**base, "out": str(CACHE / "first_use.npy"), "backend": "auto"})
        print(f"  first use of auto (empty cache): {first['seconds']:.1f} s (network + checks + timing "
              f"{first['network']:.1f} s, of which timing every back-end {first['calibration_seconds']:.1f} s; "
              f"export and compile {first['timings']['backend']:.1f} s) -> {first['backend']}, s/window "
              f"{first['seconds_per_window']}; notes {first['notes']}")
    runs: dict[str, list[dict]] = {name: [] for name, *_ in variants}
    labels: dict[str, np.ndarray] = {}
    # Rounds of every variant back to back, in alternating order, so the load of this shared
    # machine (which swings by 3x within minutes) hits them alike; ratios are taken per round.
    for repeat in range(args.repeats):
        for name, code, cfg, env in (variants if repeat % 2 == 0 else variants[::-1]):
            out = CACHE / f"{name.replace(' ', '_')}.npy"
            result = run_child(code, {**base, "out": str(out), **cfg}, env)
            runs[name].append(result)
            if repeat == 0:
                labels[name] = np.load(out)
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in result["timings"].items())
            extra = (f"; {result['backend']}, {result['windows']} windows, start-up {result['startup']:.1f} s, "
                     f"MONAI imported: {result['monai_imported']}" if "backend" in result else "")
            print(f"  round {repeat + 1} {name:>18}: {result['seconds']:6.1f} s, process {result['process_seconds']:5.1f} s, "
                  f"peak RSS {result['maxrss_mb']:6.0f} MB ({stages}){extra}")
    summarise(runs, labels, n_classes, args.repeats)
    gpu_minutes(ct, model)
    return 0


def _median_ratio(runs, name, base, key):
    pairs = [(v[key], b[key]) for v, b in zip(runs[name], runs[base])]
    ratios = [v / b for v, b in pairs]
    return float(np.median(ratios)), ratios


def summarise(runs: dict[str, list[dict]], labels: dict[str, np.ndarray], n_classes: int, repeats: int) -> None:
    peak = {k: max(r["maxrss_mb"] for r in v) for k, v in runs.items()}
    ref = "medseg-torch" if "medseg-torch" in runs else "medseg"
    print(f"\nmedians over {repeats} round(s); ratios taken within each round")
    print(f"{'variant':<20} {'time/MONAI':>10} {'time/torch':>10} {'net/torch':>10} {'RSS MB':>8} {'RSS/torch':>9} "
          f"{'minDice/torch':>13} {'minDice/MONAI':>13} {'same voxels':>11}")
    for name in runs:
        row = [f"{name:<20}"]
        row.append(f"{_median_ratio(runs, name, 'monai', 'seconds')[0]:>9.3f}x" if "monai" in runs else f"{'-':>10}")
        row.append(f"{_median_ratio(runs, name, ref, 'seconds')[0]:>9.3f}x" if name != "monai" else f"{'-':>10}")
        row.append(f"{_median_ratio(runs, name, ref, 'network')[0]:>9.3f}x" if name != "monai" else f"{'-':>10}")
        row.append(f"{peak[name]:>8.0f} {peak[name] / peak[ref]:>8.2f}x")
        vs_ref = dice_per_class(labels[ref], labels[name], n_classes) if name != ref else {}
        vs_monai = dice_per_class(labels["monai"], labels[name], n_classes) if "monai" in labels and name != "monai" else {}
        row.append(f"{min(vs_ref.values()):>13.5f}" if vs_ref else f"{'-':>13}")
        row.append(f"{min(vs_monai.values()):>13.5f}" if vs_monai else f"{'-':>13}")
        row.append(f"{np.mean(labels[ref] == labels[name]):>11.7f}")
        print(" ".join(row))
    for name in runs:
        if name.startswith("medseg-") and name != ref:
            scores = dice_per_class(labels[ref], labels[name], n_classes)
            print(f"  Dice per class {name} vs {ref}: " + ", ".join(f"{c}:{d:.5f}" for c, d in scores.items()))
    if "medseg-auto" in runs:
        net, net_rounds = _median_ratio(runs, "medseg-auto", ref, "network")
        print(f"targets: auto network {net:.3f}x medseg-torch's (<= 0.35x; rounds "
              f"{', '.join(f'{r:.3f}' for r in net_rounds)})", end="")
        if "monai" in runs:
            total, _ = _median_ratio(runs, "medseg-auto", "monai", "seconds")
            print(f"; auto total {total:.3f}x plain MONAI's (<= 0.1x)", end="")
        scores = dice_per_class(labels[ref], labels["medseg-auto"], n_classes)
        print(f"; min Dice vs torch {min(scores.values()):.5f} (>= 0.999); peak RSS {peak['medseg-auto']:.0f} MB vs "
              f"torch {peak[ref]:.0f} MB (<= 1x)")
    if "medseg-auto-lazy" in runs:
        lazy = [r["startup"] for r in runs["medseg-auto-lazy"]]
        full = [r["startup"] for r in runs["medseg-auto"]]
        print(f"start-up (imports + model, before segment): auto with a torch network {np.median(full):.2f} s, "
              f"from the cached export only {np.median(lazy):.2f} s; process wall {np.median([r['process_seconds'] for r in runs['medseg-auto']]):.1f} "
              f"vs {np.median([r['process_seconds'] for r in runs['medseg-auto-lazy']]):.1f} s; MONAI imported: "
              f"{runs['medseg-auto'][0]['monai_imported']} vs {runs['medseg-auto-lazy'][0]['monai_imported']}")


def gpu_minutes(ct: Path, model: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        print("GPU: none here (volumes per minute on GPU not measured)")
        return
    from medseg.inference import segment
    from medseg.io import load_volume
    from medseg.models import resolve_model

    volume, net = load_volume(ct), resolve_model(model)
    segment(volume, net, device="cuda")  # warm-up (cuDNN autotune, allocator)
    start, n = time.perf_counter(), 3
    for _ in range(n):
        segment(volume, net, device="cuda")
    seconds = (time.perf_counter() - start) / n
    print(f"GPU {torch.cuda.get_device_name()}: {seconds:.2f} s per volume = {60 / seconds:.1f} volumes per minute "
          f"(fp16 autocast, volume already in memory)")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
