"""Load test of the dashboard: N concurrent users exploring with Grad-CAM, bounded in count and time.

Two parts, both measured on this machine:

1. **Library path** (in process): the dashboard's own cached model objects
   (``dashboard.common.trained_model``) are shared by N threads; each request decodes an
   image, predicts, explains it with Grad-CAM and renders the overlay, exactly the calls the
   Explore page makes. User ``i`` works with shallow model ``i mod k``. Each request uses a
   freshly perturbed image so that no result cache can answer it. Resident memory is sampled
   as requests complete, to show whether it stays flat.
2. **Server**: ``streamlit run dashboard/app.py`` on 127.0.0.1 (headless); the time until
   ``/_stcore/health`` answers, optionally the time until a headless Chromium shows the first
   page, then N threads hitting ``/_stcore/health`` and ``/`` under load.

    python bench/load.py --users 8 --requests 500 --write-results

When ``weights/`` has no trained shallow model, untrained folders are written to a
temporary directory (the timings do not depend on the weights' values) and the report says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The dashboard's own setting (dashboard/app.py), before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard.devserver import CHROMIUM, CHROMIUM_ARGS, start_dashboard, stop  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
log = logging.getLogger("bench.load")


# --------------------------------------------------------------------------- measurement


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


@dataclass
class Run:
    """Latencies and errors of one load phase."""

    name: str
    users: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    memory_mb: list[tuple[int, float]] = field(default_factory=list)  # (requests done, RSS)

    def summary(self) -> dict[str, object]:
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        out: dict[str, object] = {
            "phase": self.name,
            "users": self.users,
            "requests": len(self.latencies) + len(self.errors),
            "errors": len(self.errors),
            "seconds": round(self.seconds, 2),
            "throughput_rps": round(len(self.latencies) / self.seconds, 2) if self.seconds else None,
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(lat, 95)) * 1000, 1),
            "max_ms": round(float(lat.max()) * 1000, 1),
        }
        if self.memory_mb:
            out["rss_mb_first"] = round(self.memory_mb[0][1], 1)
            out["rss_mb_last"] = round(self.memory_mb[-1][1], 1)
            # after warm-up (a fifth of the run): growth from here on would be a leak
            done = self.memory_mb[-1][0]
            warm = next((m for n, m in self.memory_mb if n >= done // 5), self.memory_mb[0][1])
            out["rss_mb_after_warmup"] = round(warm, 1)
        if self.errors:
            out["first_error"] = self.errors[0]
        return out


def drive(
    run: Run,
    total: int,
    deadline_s: float,
    job: Callable[[int, int], None],
    memory: Callable[[], float] | None = None,
    sample_every: int = 25,
) -> Run:
    """``total`` calls of ``job(user, i)`` from ``run.users`` threads, stopping at the deadline."""
    counter = iter(range(total))
    lock = threading.Lock()
    start = time.perf_counter()

    def user(u: int) -> None:
        while time.perf_counter() - start < deadline_s:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                job(u, i)
            except Exception as err:  # noqa: BLE001 - every failure is counted, none stops the run
                with lock:
                    run.errors.append(f"{type(err).__name__}: {err}")
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                run.latencies.append(elapsed)
                done = len(run.latencies)
                if memory is not None and (done == 1 or done % sample_every == 0):
                    run.memory_mb.append((done, memory()))

    with ThreadPoolExecutor(run.users) as pool:
        list(pool.map(user, range(run.users)))
    run.seconds = time.perf_counter() - start
    return run


# --------------------------------------------------------------------------- phase 1: library path


def shallow_models(weights_dir: Path | None) -> tuple[str, list[str], str]:
    """(task, shallow model names with weights, where the weights come from)."""
    from medmodels.hub import weights_status
    from medmodels.zoo.registry import list_models

    task = "malaria"
    names = [e.name for e in list_models(task) if e.family == "shallow"]
    if weights_dir is None:
        ready = [n for n in names if weights_status(task, n)[0]]
        if ready:
            return task, ready, "trained weights from weights/"
    from dashboard.sample_weights import write_untrained_folder

    folder = weights_dir or Path(tempfile.mkdtemp(prefix="bench-weights-"))
    picked = names[:3]
    for name in picked:
        write_untrained_folder(folder, task, name)
    os.environ["MEDMODELS_WEIGHTS_DIR"] = str(folder)
    return task, picked, f"untrained folders in {folder} (no trained shallow model yet)"


def library_phase(users: int, total: int, deadline_s: float, weights_dir: Path | None) -> tuple[Run, dict]:
    import io

    import torch
    from PIL import Image

    from dashboard.common import trained_model
    from medmodels.data.images import load_image
    from medmodels.data.transforms import model_view, preprocess_batch
    from medmodels.explain import explain, model_lock, render_overlay
    from medmodels.inference import predict_proba

    task, names, source = shallow_models(weights_dir)
    models = [trained_model(task, n) for n in names]  # the dashboard's shared, cached objects
    examples = sorted((ROOT / "examples" / task).glob("*/*.png"))
    payloads = [p.read_bytes() for p in examples]

    def job(user: int, i: int) -> None:
        model, card = models[user % len(models)]
        rng = np.random.default_rng(i)
        base = np.asarray(load_image(payloads[i % len(payloads)]), dtype=np.int16)
        noisy = np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="PNG")  # what an upload would be
        image = load_image(buffer.getvalue(), "upload.png")
        batch = preprocess_batch([image], card.entry.preprocess)
        with model_lock(model):
            probs = predict_proba(model, batch)
        exp = explain(model, card.entry, batch, method="gradcam")
        render_overlay(model_view(image, card.entry.preprocess), exp.maps[0])
        if not np.isfinite(probs).all() or not np.isfinite(exp.maps).all():
            raise RuntimeError("non-finite output")

    job(0, 0)  # warm-up: first forward passes allocate
    run = drive(Run("library: predict + Grad-CAM + overlay", users), total, deadline_s, job, rss_mb)
    info = {
        "task": task,
        "models": names,
        "weights": source,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    return run, info


# --------------------------------------------------------------------------- phase 2: the server


def get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return response.read()


def first_page_seconds(url: str) -> tuple[float, float] | None:
    """Seconds until headless Chromium shows the start page, and then the Explore page's file
    uploader after a click (None: no browser here)."""
    if not CHROMIUM.is_file():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
        )
        page = context.new_page()
        t0 = time.perf_counter()
        page.goto(url)
        page.get_by_text("not for diagnosis").first.wait_for(timeout=60_000)
        page.get_by_role("heading").first.wait_for(timeout=60_000)
        start_page = time.perf_counter() - t0
        t1 = time.perf_counter()
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Explore").click()
        page.locator("input[type=file]").first.wait_for(state="attached", timeout=60_000)
        explore = time.perf_counter() - t1
        context.close()
    return start_page, explore


def server_phase(users: int, total: int, deadline_s: float, env: dict[str, str]) -> tuple[list[Run], dict]:
    proc, url, seconds_to_health = start_dashboard({**os.environ, **env})
    info: dict[str, object] = {}
    runs = []
    try:
        info["seconds_to_health"] = round(seconds_to_health, 2)
        pages = first_page_seconds(url)
        info["seconds_to_first_page_in_browser"] = None if pages is None else round(pages[0], 2)
        info["seconds_to_explore_after_click"] = None if pages is None else round(pages[1], 2)
        info["server_rss_mb_before"] = round(rss_mb(proc.pid), 1)
        for path in ("/_stcore/health", "/"):
            run = drive(
                Run(f"server: GET {path}", users),
                total,
                deadline_s,
                lambda _u, _i, path=path: get(url + path),
                lambda: rss_mb(proc.pid),
            )
            runs.append(run)
        info["server_rss_mb_after"] = round(rss_mb(proc.pid), 1)
    finally:
        stop(proc)
    return runs, info


# --------------------------------------------------------------------------- report


def markdown(runs: Sequence[Run], info: dict, args: argparse.Namespace) -> str:
    import platform

    import torch

    lines = [
        "## Load",
        "",
        f"`python bench/load.py --users {args.users} --requests {args.requests} "
        f"--max-seconds {args.max_seconds:g}` "
        f"on {os.cpu_count()} CPU core(s), Python {platform.python_version()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine shared with background jobs: "
        f"{info.get('background', 'unknown')}.",
        "",
        f"Library phase: models {', '.join(info['library']['models'])} ({info['library']['weights']}); "
        f"{info['library']['torch_threads']} torch thread(s). Each request = decode a perturbed PNG, "
        "predict, Grad-CAM, overlay; user *i* uses shallow model *i* mod k.",
        "",
        "| phase | users | requests | errors | seconds | throughput (req/s) | p50 (ms) | p95 (ms) | max (ms) "
        "| RSS first → last (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        s = run.summary()
        mem = f"{s.get('rss_mb_first', '–')} → {s.get('rss_mb_last', '–')}"
        lines.append(
            f"| {s['phase']} | {s['users']} | {s['requests']} | {s['errors']} | {s['seconds']} | "
            f"{s['throughput_rps']} | {s['p50_ms']} | {s['p95_ms']} | {s['max_ms']} | {mem} |"
        )
    srv = info.get("server", {})
    lib = runs[0].summary()
    lines += [
        "",
        f"- Peak resident memory of the load process: {info['library']['peak_rss_mb']} MB.",
        f"- Dashboard start: `/_stcore/health` answered {srv.get('seconds_to_health', '–')} s after "
        f"launch; headless Chromium then showed the start page in "
        f"{srv.get('seconds_to_first_page_in_browser', 'n/a')} s, and the Explore page (uploader ready, "
        f"model library imported) {srv.get('seconds_to_explore_after_click', 'n/a')} s after the click.",
        f"- Server memory {srv.get('server_rss_mb_before', '–')} MB before and "
        f"{srv.get('server_rss_mb_after', '–')} MB after the HTTP load.",
        f"- Target (8 users, Grad-CAM on shallow models): zero errors and p95 < 2 s: "
        f"**{'met' if lib['errors'] == 0 and float(lib['p95_ms']) < 2000 else 'not met'}** "
        f"(errors {lib['errors']}, p95 {lib['p95_ms']} ms); memory over the run "
        f"{lib.get('rss_mb_first', '–')} → {lib.get('rss_mb_last', '–')} MB, of which "
        f"{lib.get('rss_mb_after_warmup', '–')} → {lib.get('rss_mb_last', '–')} MB after the first fifth "
        "of the requests (allocator and model warm-up before that).",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace (or add) the ``## Load`` section of RESULTS.md, leaving other sections alone."""
    from medmodels.report.markdown import replace_section

    replace_section(path, text)

def background_load() -> str:
    try:
        load1, _load5, _load15 = os.getloadavg()
    except OSError:
        return "unknown"
    return f"load average {load1:.2f} at start"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="requests per phase (bounded)")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="time limit per phase")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        help="write untrained shallow models here instead of using weights/",
    )
    parser.add_argument("--no-server", action="store_true", help="only the library phase")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    parser.add_argument(
        "--write-results", action="store_true", help="update the ## Load section of bench/RESULTS.md"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info: dict[str, object] = {"background": background_load()}
    lib_run, info["library"] = library_phase(args.users, args.requests, args.max_seconds, args.weights_dir)
    runs = [lib_run]
    if not args.no_server:
        env = {k: os.environ[k] for k in ("MEDMODELS_WEIGHTS_DIR", "HF_HUB_OFFLINE") if k in os.environ}
        server_runs, info["server"] = server_phase(args.users, args.requests, args.max_seconds, env)
        runs += server_runs
    report = markdown(runs, info, args)
    print(report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": [r.summary() for r in runs],
                    "info": info,
                    "memory": {r.name: r.memory_mb for r in runs},
                },
                indent=2,
            )
        )
    if args.write_results:
        write_section(report)
    return 0 if all(not r.errors for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
