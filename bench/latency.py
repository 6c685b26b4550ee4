"""CPU inference latency of every registered architecture, measured in one run, as ratios.

Latency depends on the architecture and input size, not on the trained values, so each
architecture is timed once with random weights at its registered input size. Ratios are
taken against references timed in the same process, so machine load cancels out as far
as it can: the paper comparisons (shallow vs VGG-16/ResNet-50, student vs teacher) are
read off the ratio columns.

    python bench/latency.py [--threads 1] [--repeats 7] [--out bench/RESULTS.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medmodels.inference import time_inference  # noqa: E402
from medmodels.report.markdown import replace_section  # noqa: E402
from medmodels.zoo.registry import build_arch, count_parameters, list_models  # noqa: E402

SECTION = "## Latency"
COMPARISONS = (  # (task, fast model, slow model): the papers' speed claims
    ("malaria", "shallow_cnn3", "vgg16"),
    ("malaria", "shallow_cnn3", "resnet50"),
    ("malaria", "shallow_cnn2", "vgg16"),
    ("malaria", "shallow_cnn2", "resnet50"),
    ("covid", "mobilenet_v2_kd", "kd_teacher"),
    ("wbc", "wbc_cnn", "vgg16"),
)


def measure(repeats: int) -> dict[tuple[str, str], dict[str, float]]:
    """ms/image at batch 1 and 32 for every distinct (task, arch); variants share their arch's time."""
    by_arch: dict[tuple[str, str], dict[str, float]] = {}
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for entry in list_models():
        key = (entry.task, entry.arch)
        if key not in by_arch:
            torch.manual_seed(0)
            model = build_arch(entry).eval()
            timing = time_inference(model, entry.preprocess, (1, 32), repeats=repeats, min_seconds=1.0)
            by_arch[key] = {**timing, "parameters": count_parameters(model)}
            print(f"{entry.task:10s} {entry.arch:16s} {timing['ms_per_image_batch1']:9.2f} ms/img", file=sys.stderr)
        rows[(entry.task, entry.name)] = by_arch[key]
    return rows


def render(rows: dict[tuple[str, str], dict[str, float]], threads: int) -> str:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [
        SECTION, "",
        f"`python bench/latency.py --threads {threads}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {threads} thread(s), {now}. Random weights "
        "(latency does not depend on the trained values), each model at its registered input size; "
        "median of repeated runs after a warm-up.", "",
        "### The papers' speed claims (ratios measured in this run)", "",
        "| task | fast model | slow model | fast ms/img (batch 1) | slow ms/img (batch 1) | slow / fast |",
        "|---|---|---|---:|---:|---:|",
    ]
    for task, fast, slow in COMPARISONS:
        f, s = rows[(task, fast)], rows[(task, slow)]
        lines.append(f"| {task} | {fast} | {slow} | {f['ms_per_image_batch1']:.2f} | "
                     f"{s['ms_per_image_batch1']:.2f} | {s['ms_per_image_batch1'] / f['ms_per_image_batch1']:.1f}x |")
    lines += ["", "### Every model", "",
              "| task | model | parameters | ms/img batch 1 | ms/img batch 32 | ratio to the task's fastest (batch 1) |",
              "|---|---|---:|---:|---:|---:|"]
    fastest: dict[str, float] = {}
    for (task, _), r in rows.items():
        fastest[task] = min(fastest.get(task, float("inf")), r["ms_per_image_batch1"])
    for (task, name), r in rows.items():
        lines.append(f"| {task} | {name} | {int(r['parameters']):,} | {r['ms_per_image_batch1']:.2f} | "
                     f"{r['ms_per_image_batch32']:.2f} | {r['ms_per_image_batch1'] / fastest[task]:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    section = render(measure(args.repeats), args.threads)
    print(section)
    replace_section(args.out, section)


if __name__ == "__main__":
    main()
