"""``medseg cache info|clear``: the cache of exported networks (OpenVINO / ONNX Runtime back-ends).

``info`` lists each exported network (back-end, model, window, size, its agreement with torch),
the back-end choices measured on this machine and exports that failed; ``clear`` removes them all
(the next run exports, checks and measures again). The cache lives in the user's cache folder,
or in ``$MEDSEG_CACHE_DIR``; see docs/backends.md.
"""

from __future__ import annotations

import argparse
import json

HELP = "show or clear the cache of exported networks (OpenVINO / ONNX Runtime back-ends)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("info", "clear"),
                        help="info: list exported networks, verdicts and measured choices; clear: remove them")
    parser.add_argument("--json", action="store_true", help="info as JSON")


def run(args: argparse.Namespace) -> int:
    from medseg.inference.backends.cache import BackendCache

    cache = BackendCache()
    if args.action == "clear":
        entries, size = cache.clear()
        print(f"removed {entries} exported network(s), {size / 2**20:.1f} MB, from {cache.folder}")
        return 0
    info = cache.info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for line in info_lines(info):
        print(line)
    return 0


def info_lines(info: dict) -> list[str]:
    """Human-readable lines for ``medseg cache info``."""
    state = "writable" if info["writable"] else "read-only: new exports last one run"
    lines = [f"cache: {info['root']} ({state}), {len(info['entries'])} exported network(s), "
             f"{info['total_bytes'] / 2**20:.1f} MB (least recently used removed above "
             f"{info['max_bytes'] / 2**20:.0f} MB; MEDSEG_CACHE_MAX_MB)"]
    for row in info["entries"]:
        window = "x".join(str(v) for v in row["window"] or [])
        verdicts = ", ".join(f"{p} {'agrees' if v['passed'] else 'REFUSED'} ({v['argmax_agreement']:.5f} of voxels, "
                             f"logits within {v['max_abs_logit_diff']:.2g})" if v.get("argmax_agreement") is not None
                             else f"{p} {'agrees' if v['passed'] else 'REFUSED'}"
                             for p, v in row["verdicts"].items()) or "not checked yet"
        lines.append(f"  {row['backend']:<12} {row['model'] or '?':<28} window {window:<10} "
                     f"{row['size_bytes'] / 2**20:6.1f} MB  {row['created'] or ''}  {verdicts}")
    for decision in info["decisions"]:
        seconds = ", ".join(f"{k} {v:.3f}" for k, v in (decision.get("seconds_per_window") or {}).items())
        lines.append(f"  auto chose {decision.get('chosen')} for {', '.join(decision.get('models') or [])} "
                     f"({decision.get('precision')}, {decision.get('threads')} threads; s/window: {seconds})")
    for failure in info["failures"]:
        lines.append(f"  export failed: {failure['name']} ({failure.get('model_name', '')}): {failure.get('reason', '')}")
    return lines
