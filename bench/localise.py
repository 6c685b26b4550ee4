"""Cost of the lung-field segmentation and of one localisation score, on one CPU thread.

Targets (issue 19): segmenting one 256 px chest X-ray < 100 ms; scoring one map < 5 ms.
Both are timed as process CPU time (what this process used, so other jobs on a shared
machine do not inflate it) and as wall-clock time, median over the repeats.

    python bench/localise.py [--repeats 30] [--write]   # --write replaces its RESULTS.md section
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medmodels.data.images import load_image  # noqa: E402
from medmodels.explain.localise import PixelBox, box_score, box_to_view, lung_scores  # noqa: E402
from medmodels.lungs import load_lung_model, lung_model_available, segment_lungs  # noqa: E402
from medmodels.report.markdown import replace_section  # noqa: E402
from medmodels.zoo.registry import Preprocess  # noqa: E402

SECTION = "## Localisation"
ROOT = Path(__file__).resolve().parents[1]
XRAY = sorted((ROOT / "examples" / "covid" / "COVID-19").glob("*.jpg"))[0]


def timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> tuple[float, float]:
    """(median CPU ms, median wall ms) of ``fn``."""
    for _ in range(warmup):
        fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return statistics.median(cpu), statistics.median(wall)


def measure(repeats: int) -> dict[str, tuple[float, float]]:
    from medmodels.zoo.unet import unet_lite0

    model = load_lung_model()[0] if lung_model_available() else unet_lite0().eval()
    image = load_image(XRAY)
    square = image.convert("L").resize((256, 256))
    out = {
        "segment one 256 px X-ray (preprocess + forward + threshold)": timed(lambda: segment_lungs(square, model), repeats),
        f"segment one {image.width}x{image.height} X-ray (pad, resize to 256)": timed(lambda: segment_lungs(image, model), repeats),
    }
    found = segment_lungs(image, model)
    # time the full path (resize + dilation) even if this image's field were flagged implausible
    field = dataclasses.replace(found, plausible=True)
    rng = np.random.default_rng(0)
    for size in (128, 224):
        cam = rng.random((size, size)).astype(np.float32)
        out[f"lung scores of one {size} px map (plain + dilated field)"] = timed(
            lambda cam=cam: lung_scores(cam, field), repeats * 10)
    pre = Preprocess(input_size=100)
    view = box_to_view(PixelBox(20, 30, 150, 170), (180, 180), pre)
    cam = rng.random((100, 100)).astype(np.float32)
    out["cell-box score of one 100 px map"] = timed(lambda: box_score(cam, view), repeats * 10)
    out["_plausible"] = (float(found.plausible), found.area_fraction)
    out["_trained"] = (float(lung_model_available()), 0.0)
    return out


def render(rows: dict[str, tuple[float, float]], repeats: int) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    trained = "the shipped weights/lungs/unet_lite0" if rows["_trained"][0] else "an untrained unet_lite0 (same cost)"
    lines = [
        SECTION, "",
        f"`python bench/localise.py --repeats {repeats} --write` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {now}; "
        f"load average {load:.1f} at start (other jobs share the machine: CPU time is this process's own). "
        f"Lung model: {trained}. Median over {repeats} runs (scores: {10 * repeats}).",
        "",
        "| step | CPU ms | wall ms | target |",
        "|---|---:|---:|---|",
    ]
    for name, (cpu, wall) in rows.items():
        if name.startswith("_"):
            continue
        target = "< 100 ms" if name.startswith("segment") else "< 5 ms"
        limit = 100.0 if name.startswith("segment") else 5.0
        verdict = "met" if cpu < limit else "**missed**"
        lines.append(f"| {name} | {cpu:.2f} | {wall:.2f} | {target}: {verdict} (CPU) |")
    lines += ["", "The score's cost is the mask resize to the map, the dilation (a disc of 3 % of the side) "
              "and two masked sums; segmentation runs once per image and is shared by every map of it.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="replace the section in bench/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args.repeats)
    text = render(rows, args.repeats)
    print(text)
    if args.write:
        replace_section(Path(__file__).with_name("RESULTS.md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
