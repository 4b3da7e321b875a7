"""Plain MONAI against medseg on one 512x512x300 CT, 14-class UNet, 2 CPU threads, in one run.

    .venv/bin/python benchmarks/bench_inference.py [--repeats 2] [--arch unet|segresnet]

The volume is the real CT angiography ``totalsegmentator/aorta_report/example_ct.nii.gz`` from
``../shared/data`` (233x167x191 at 1.5 mm), resampled to 512x512x300 (0.68 x 0.68 x 0.96 mm;
the field of view is squared with air, as a scanner's is). The network is fitted for 150 steps to
14 classes of smoothed-HU intervals on that CT (organ-like blobs, class 0 = air), so its label map has real structure and agreement
is not vacuous. Both cached under ``$MEDSEG_BENCH_CACHE`` (default ``/tmp/medseg-bench``).

Each pipeline runs in its own subprocess (peak memory = its max RSS, imports included) from the
NIfTI file to a label array in memory:

* plain MONAI: LoadImaged -> EnsureChannelFirstd -> Orientationd -> Spacingd -> ScaleIntensityRanged
  -> sliding_window_inference (Gaussian, 4 windows per pass as MONAI's own bundles configure)
  -> softmax -> Invertd (bilinear) -> argmax;
* medseg: ``load_volume`` -> ``medseg.inference.segment`` (same model space and windows).

Prints wall-time ratio, peak-memory ratio and per-class Dice agreement (targets: time <= 0.6x,
memory <= 0.5x, agreement >= 0.99), and volumes per minute on a GPU when one is present.
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
import json, sys, time, resource, numpy as np, torch
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
                  "timings": {"preprocess": t1 - t0, "sliding_window": t2 - t1, "invert_argmax": seconds - (t2 - t0)}}))
"""

MEDSEG_CHILD = r"""
import json, sys, time, resource, numpy as np, torch
torch.set_num_threads(2)
from medseg.inference import segment
from medseg.io import load_volume
from medseg.models import resolve_model
cfg = json.loads(sys.argv[1])
model = resolve_model(cfg["model"])
t0 = time.perf_counter()
result = segment(load_volume(cfg["ct"]), model, device=cfg.get("device", "cpu"), precision=cfg.get("precision", "auto"),
                 crop=cfg.get("crop"), sw_batch_size=cfg.get("medseg_sw_batch_size"))
seconds = time.perf_counter() - t0
np.save(cfg["out"], result.labels.array)
print(json.dumps({"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "windows": result.provenance["windows"], "computed_fraction": result.provenance["computed_fraction"],
                  "mixed_voxel_fraction": result.provenance["mixed_voxel_fraction"], "timings": result.timings,
                  "predictor": result.provenance["predictor"]}))
"""


def run_child(code: str, cfg: dict, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO), **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dice_per_class(a: np.ndarray, b: np.ndarray, n_classes: int) -> dict[int, float]:
    out = {}
    for c in range(n_classes):
        x, y = a == c, b == c
        total = int(x.sum()) + int(y.sum())
        if total:
            out[c] = 2.0 * int((x & y).sum()) / total
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--arch", default="unet", choices=("unet", "segresnet"))
    parser.add_argument("--skip-monai", action="store_true", help="time medseg only (GPU runs)")
    parser.add_argument("--ablation", action="store_true",
                        help="also time medseg without each speed measure (malloc tuning, batching, crop) and in bf16")
    parser.add_argument("--monai-sw-batch-size", type=int, default=4,
                        help="windows per forward pass for plain MONAI (default 4, as MONAI's spleen, BTCV "
                             "and pediatric bundles configure their SlidingWindowInferer)")
    args = parser.parse_args()
    ct = make_volume()
    model = make_model(ct, args.arch)
    print(f"volume {ct} {SHAPE}, model {model.name}, {len(EDGES) + 1} classes, 2 threads, "
          f"spacing {SPACING_MM} mm, roi {ROI}, overlap {OVERLAP}, MONAI sw_batch_size {args.monai_sw_batch_size}")
    variants = [("medseg", MEDSEG_CHILD, {}, {})]
    if not args.skip_monai:
        variants.insert(0, ("monai", MONAI_CHILD, {"sw_batch_size": args.monai_sw_batch_size}, {}))
    if args.ablation:
        variants += [("no malloc tuning", MEDSEG_CHILD, {}, {"MEDSEG_MALLOC_TUNING": "0"}),
                     ("1 window per pass", MEDSEG_CHILD, {"medseg_sw_batch_size": 1}, {}),
                     ("no foreground crop", MEDSEG_CHILD, {"crop": False}, {}),
                     ("bf16 autocast", MEDSEG_CHILD, {"precision": "bf16"}, {})]
    runs: dict[str, list[dict]] = {name: [] for name, *_ in variants}
    dice: dict[str, dict[int, float]] = {}
    # Rounds of every variant back to back, in alternating order, so the load of this shared
    # machine (which swings by 3x within minutes) hits them alike; ratios are taken per round.
    for repeat in range(args.repeats):
        for name, code, cfg, env in (variants if repeat % 2 == 0 else variants[::-1]):
            out = CACHE / f"{name.replace(' ', '_')}.npy"
            result = run_child(code, {"ct": str(ct), "model": str(model), "out": str(out), **cfg}, env)
            runs[name].append(result)
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in result["timings"].items())
            print(f"  round {repeat + 1} {name:>18}: {result['seconds']:6.1f} s, peak RSS {result['maxrss_mb']:6.0f} MB "
                  f"({stages})" + (f"; {result['windows']} windows, computed {result['computed_fraction']:.0%} of the "
                                   f"model grid, mixed voxels {result['mixed_voxel_fraction']:.2%}, {result['predictor']}"
                                   if name == "medseg" else ""))
            if name != "monai" and "monai" in runs and repeat == 0:
                dice[name] = dice_per_class(np.load(CACHE / "monai.npy"), np.load(out), len(EDGES) + 1) \
                    if (CACHE / "monai.npy").exists() and runs["monai"] else {}
    summarise(runs, dice, args.repeats)
    gpu_minutes(ct, model)
    return 0


def summarise(runs: dict[str, list[dict]], dice: dict[str, dict[int, float]], repeats: int) -> None:
    if "monai" not in runs:
        return
    a, b = np.load(CACHE / "monai.npy"), np.load(CACHE / "medseg.npy")
    per_round = [m["seconds"] / r["seconds"] for m, r in zip(runs["medseg"], runs["monai"])]
    peak = {k: max(r["maxrss_mb"] for r in v) for k, v in runs.items()}
    print(f"time   medseg/monai = {np.median(per_round):.2f}x median of {repeats} rounds "
          f"({', '.join(f'{r:.2f}' for r in per_round)}; target <= 0.6x)")
    print(f"memory medseg/monai = {peak['medseg'] / peak['monai']:.2f}x ({peak['medseg']:.0f} MB vs "
          f"{peak['monai']:.0f} MB peak RSS; target <= 0.5x)")
    agreement = dice_per_class(a, b, len(EDGES) + 1)
    print(f"agreement per class (Dice): min {min(agreement.values()):.4f} (target >= 0.99); "
          + ", ".join(f"{c}:{d:.4f}" for c, d in agreement.items()))
    print(f"identical voxels: {np.mean(a == b):.7f}")
    for name, results in runs.items():
        if name in ("monai", "medseg"):
            continue
        ratios = [v["seconds"] / m["seconds"] for v, m in zip(results, runs["medseg"])]
        scores = dice.get(name) or {}
        print(f"  {name:<18}: {np.median(ratios):.2f}x medseg's time (rounds {', '.join(f'{r:.2f}' for r in ratios)}), "
              f"peak RSS {peak[name]:.0f} MB" + (f", min Dice vs MONAI {min(scores.values()):.4f}" if scores else ""))


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
