"""Cost of each explanation method against the floor measured in the same run.

Run on demand (not in CI):

    python bench/explain.py                   # one model per architecture, all methods
    python bench/explain.py --models malaria/shallow_cnn3 covid/kd_teacher --write

The floor at batch size b is one forward plus one backward to the input at that batch
size (``torch.autograd.grad`` of the arg-max logits); a method's ratio divides its time
by the time of as many consecutive floors as it needs in principle: 1 for Grad-CAM and Saliency, 2 for
Guided Grad-CAM (Grad-CAM + Guided Backprop), ``n_steps`` for IG, ``samples`` for
SmoothGrad; Occlusion is compared with one forward-only pass per occluded position.
Floors and methods are timed interleaved, best of ``--repeats``; on CPU the clock is the
process's CPU time with one thread by default (``--threads``), so that other jobs on a
shared machine do not enter the numbers. Models are randomly initialised: cost does not depend on the weights.
If ``pytorch_grad_cam`` (PyPI ``grad-cam``) imports, its GradCAM is timed on the same
model, layer and images as the peer reference. ``--write`` replaces the
cost part of the ``## Explanations`` section of bench/RESULTS.md and leaves the rest alone.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medmodels.explain import METHODS, ExplainSettings, explain, occlusion_geometry  # noqa: E402
from medmodels.zoo.registry import (  # noqa: E402
    ModelEntry,
    build_arch,
    count_parameters,
    get_entry,
    list_models,
)

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Explanations"
COST_TITLE = "Cost against the forward+backward floor"


@dataclass
class Row:
    model: str
    method: str
    ms_b1: float
    ratio_b1: float
    ms_bn: float
    ratio_bn: float
    units: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of ``fn``: CPU time of this process on CPU, wall time on a GPU.

    On a CPU shared with other jobs, wall time mostly measures the other jobs; the process's
    CPU time (one intra-op thread, and CPU autograd runs in the calling thread) does not.
    """
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    _sync(device)
    start = clock()
    fn()
    _sync(device)
    return clock() - start


def floor_fn(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """One forward and one backward to the input, for the arg-max class."""

    def run() -> object:
        xi = x.detach().clone().requires_grad_(True)
        logits = model(xi)
        picked = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        return torch.autograd.grad(picked, xi)

    return run


def forward_fn(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return model(x)

    return run


def repeat(fn: Callable[[], object], times: int) -> Callable[[], object]:
    """``fn`` run ``times`` times in one timed block, so that a long method is compared with
    an equally long stretch of floors (on a shared CPU, long runs are preempted more)."""

    def run() -> object:
        for _ in range(times):
            fn()
        return None

    return run


def units(method: str, entry: ModelEntry, s: ExplainSettings) -> tuple[float, str]:
    """How many floors (or forward passes, for occlusion) a method needs in principle."""
    if method == "guided_gradcam":
        return 2.0, "2 floors"
    if method == "ig":
        return float(s.ig_steps), f"{s.ig_steps} floors"
    if method == "smoothgrad":
        n = s.smoothgrad_samples * (s.ig_steps if s.smoothgrad_base == "ig" else 1)
        return float(n), f"{n} floors"
    if method == "occlusion":
        size = entry.preprocess.input_size
        window, stride = occlusion_geometry(size, s)
        positions = ((size - window) // stride + 1) ** 2
        return float(positions), f"{positions} forwards"
    return 1.0, "1 floor"


def best_pair(
    floor: Callable[[], object],
    method: Callable[[], object],
    repeats: int,
    device: torch.device,
    long_s: float,
) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of ``floor`` and ``method``, timed alternately.

    The minimum, not the median: on a machine shared with other jobs, contention only ever
    adds time, so the fastest run is the best estimate of the cost itself. The first call of
    each is a warm-up; when the method's warm-up takes longer than ``long_s`` seconds, one
    timed pair is enough (first-call effects are negligible at that length).
    """
    warm = _timed(method, device)
    floor()
    if warm > long_s:
        repeats = 1
    tf, tm = [], []
    for _ in range(repeats):
        tf.append(_timed(floor, device))
        tm.append(_timed(method, device))
    return min(tf), min(tm)


def peer_gradcam(model: torch.nn.Module, entry: ModelEntry) -> Callable[[torch.Tensor], object] | None:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except Exception:  # noqa: BLE001 - the peer is optional
        return None
    layer = model.get_submodule(entry.default_cam_layer)

    def run(x: torch.Tensor) -> object:
        with torch.no_grad():
            classes = model(x).argmax(1).tolist()
        with GradCAM(model=model, target_layers=[layer]) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])

    return run


def bench_model(
    entry: ModelEntry, methods: list[str], batch: int, repeats: int, device: torch.device,
    settings: ExplainSettings,
    long_s: float = 5.0,
    heavy_params: float = float("inf"),
    heavy_skip: tuple[str, ...] = (),
) -> list[Row]:
    torch.manual_seed(0)
    model = build_arch(entry).eval().to(device)
    size = entry.preprocess.input_size
    xs = {b: torch.randn(b, 3, size, size, device=device) for b in (1, batch)}
    rows = []
    heavy = count_parameters(model) > heavy_params
    for method in methods:
        if heavy and method in heavy_skip:
            log_skip = f"skipped: over {heavy_params / 1e6:.0f}M parameters"
            rows.append(Row(entry.key, method, float("nan"), float("nan"), float("nan"),
                            float("nan"), log_skip))
            continue
        n_units, label = units(method, entry, settings)
        result = []
        for b, x in xs.items():
            one = forward_fn(model, x) if method == "occlusion" else floor_fn(model, x)
            t_floors, t_method = best_pair(
                repeat(one, int(n_units)),
                lambda x=x: explain(model, entry, x, None, method, settings),
                repeats,
                device,
                long_s,
            )
            result += [1000 * t_method / b, t_method / t_floors]
        rows.append(Row(entry.key, method, result[0], result[1], result[2], result[3], label))
    peer = peer_gradcam(model, entry)
    if peer is not None and "gradcam" in methods:
        result = []
        for b, x in xs.items():
            t_floor, t_peer = best_pair(
                floor_fn(model, x), lambda x=x: peer(x), repeats, device, long_s
            )
            result += [1000 * t_peer / b, t_peer / t_floor]
        rows.append(Row(entry.key, "gradcam (pytorch-grad-cam)", *result, "1 floor"))
    return rows


def _num(value: float, digits: int) -> str:
    return "–" if value != value else f"{value:.{digits}f}"  # NaN: not measured


def table(rows: list[Row], batch: int) -> str:
    head = (f"| model | method | ms/img b=1 | ratio b=1 | ms/img b={batch} | ratio b={batch} | "
            "ratio unit |\n|---|---|---:|---:|---:|---:|---|\n")
    body = "".join(
        f"| {r.model} | {r.method} | {_num(r.ms_b1, 1)} | {_num(r.ratio_b1, 2)} | "
        f"{_num(r.ms_bn, 1)} | {_num(r.ratio_bn, 2)} | {r.units} |\n"
        for r in rows
    )
    return head + body


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{name}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"python {platform.python_version()}; load average at start {load:.1f}")


def write_subsection(title: str, text: str) -> None:
    """Replace (or add) the ``### title`` part of the ``## Explanations`` section.

    Other sections of bench/RESULTS.md (e.g. ``## Load``) and the other subsections of
    this one are kept as they are.
    """
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = section.search(old)
    body = found.group(0) if found else f"{SECTION}\n\n"
    sub = re.compile(rf"^### {re.escape(title)}\n.*?(?=^### |^## |\Z)", re.S | re.M)
    new_sub = f"### {title}\n\n{text.strip()}\n\n"
    body = sub.sub(lambda _m: new_sub, body, count=1) if sub.search(body) else body.rstrip() + "\n\n" + new_sub
    if found:
        updated = old[: found.start()] + body + old[found.end():]
    else:
        updated = old.rstrip() + "\n\n" + body
    RESULTS.write_text(updated.rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="task/name (default: one per architecture)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-s", type=float, default=5.0,
                        help="a method slower than this is timed once after its warm-up")
    parser.add_argument("--heavy-params", type=float, default=10e6,
                        help="models with more parameters skip the --heavy-skip methods")
    parser.add_argument("--heavy-skip", nargs="*", default=["occlusion"], choices=list(METHODS))
    parser.add_argument("--threads", type=int, default=None, help="default: 1 on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--notes", default="", help="text added under the table")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    if args.models:
        entries = [get_entry(*m.split("/", 1)) for m in args.models]
    else:
        entries = list({e.arch: e for e in list_models()}.values())
    settings = ExplainSettings()
    header = machine(device)
    print(header, flush=True)
    rows: list[Row] = []
    for done, entry in enumerate(entries, 1):
        new = bench_model(entry, args.methods, args.batch, args.repeats, device, settings,
                          args.long_s, args.heavy_params, tuple(args.heavy_skip))
        rows += new
        print(table(new, args.batch), flush=True)
        if args.write:  # after every model, so that an interrupted run still leaves its rows
            partial = "" if done == len(entries) else f"Partial run: {done} of {len(entries)} models.\n\n"
            write_subsection(COST_TITLE, report(rows, args, argv, header, settings, device, partial))
    if args.write:
        print(f"wrote {RESULTS}")
    return 0


def report(rows: list[Row], args: argparse.Namespace, argv: list[str] | None, header: str,
           settings: ExplainSettings, device: torch.device, partial: str) -> str:
    return (
        partial
        + f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`python bench/explain.py {' '.join(argv if argv is not None else sys.argv[1:])}`.\n"
        f"Machine: {header}.\n\n"
        f"Settings: {settings}. Ratio = method time / (units x floor at the same batch size); "
        "floor = one forward + one backward to the input; occlusion's unit is one forward. "
        f"Clock: {'process CPU time' if device.type == 'cpu' else 'wall time (synchronised)'}, "
        f"best of {args.repeats} (1 for calls over {args.long_s:g} s).\n"
        "Targets: Grad-CAM <= 1.3, IG <= 1.2 (batched through internal_batch_size).\n\n"
        + table(rows, args.batch)
        + (f"\n{args.notes}\n" if args.notes else "")
    )


if __name__ == "__main__":
    raise SystemExit(main())
