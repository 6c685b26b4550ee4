"""Hostile-size uploads against a real ``streamlit run`` on 127.0.0.1: time and server memory.

Scenarios (issue 22), each driven through Debian's headless Chromium like a user would:

1. **big zip**: 150 black 6300 x 6300 PNGs in class folders on the Evaluate page. Target:
   evaluated or refused with a message in under 30 s, peak server RSS growth under 1.5 GB.
   A second run with 70 such images (under the per-upload pixel cap) is evaluated in full.
2. **explore**: 20 of those PNGs uploaded on the Explore page; memory while they are shown and
   after the page is closed.
3. **concurrent**: four pages upload the same ~157 MB zip of noise PNGs at once on Evaluate and
   wait for the metrics; then the pages close. Target: RSS back within 20 % of its level
   before them (measured after the session TTL in .streamlit/config.toml and the janitor).

The server's resident memory (VmRSS of the streamlit process) is sampled every 0.1 s; each
scenario starts after a warm-up run that loaded the models, so model loading is not counted.

    python bench/uploads.py --write-results     # updates the '## Uploads' section of RESULTS.md
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard.devserver import CHROMIUM, CHROMIUM_ARGS, start_dashboard, stop  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
WAIT_MS = 600_000
SETTLE_S = 75.0  # session TTL (30 s) + janitor period (30 s) + margin
DONE_JS = """() => {
  const alerts = Array.from(document.querySelectorAll('[data-testid=stAlertContentError]'));
  if (alerts.length) return 'error: ' + alerts.map(a => a.innerText).join(' | ');
  const roc = Array.from(document.querySelectorAll('.js-plotly-plot')).some(p => p.textContent.includes('ROC curve'));
  if (roc && document.body.innerText.includes('Most confident mistakes first')) return 'evaluated';
  return null;
}"""
EXPLORE_DONE_JS = """(n) => {
  const imgs = Array.from(document.querySelectorAll('[data-testid=stImageContainer] img'))
    .filter(i => i.complete && i.naturalWidth > 0);
  const alerts = document.querySelectorAll('[data-testid=stAlertContentError]').length;
  return (imgs.length >= 2 && document.body.innerText.includes('Predictions')) || alerts > 0 ? 'shown' : null;
}"""


# --------------------------------------------------------------------------- measurement


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Sampler:
    """Samples a process's RSS in a thread; ``peak`` since the last ``reset``."""

    pid: int
    peak: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.peak = rss_mb(self.pid)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            time.sleep(0.1)

    def reset(self) -> float:
        now = rss_mb(self.pid)
        self.peak = now
        return now

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- inputs


def black_png(side: int = 6300) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def class_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def black_zip(n: int, png: bytes) -> bytes:
    return class_zip({f"set/{('Parasitized', 'Uninfected')[i % 2]}/{i:03d}.png": png for i in range(n)})


def noise_zip(target_mb: float = 157.0, side: int = 1024) -> bytes:
    """Class folders of random-noise PNGs (incompressible) adding up to about ``target_mb``."""
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    total = 0
    i = 0
    while total < target_mb * 1e6:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, format="PNG")
        files[f"set/{('Parasitized', 'Uninfected')[i % 2]}/{i:03d}.png"] = buffer.getvalue()
        total += len(buffer.getvalue())
        i += 1
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


# --------------------------------------------------------------------------- driving pages


def open_page(context: object, url: str, name: str) -> object:
    page = context.new_page()
    page.goto(url)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name).wait_for(timeout=WAIT_MS)
    page.locator("input[type=file]").first.wait_for(state="attached", timeout=WAIT_MS)
    return page


def evaluate_upload(page: object, name: str, data: bytes) -> tuple[str, float]:
    t0 = time.perf_counter()
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": name, "mimeType": "application/zip", "buffer": data}]
    )
    outcome = page.wait_for_function(DONE_JS, timeout=WAIT_MS).json_value()
    return str(outcome), time.perf_counter() - t0


def settle(sampler: Sampler, seconds: float) -> float:
    time.sleep(seconds)
    return rss_mb(sampler.pid)


# --------------------------------------------------------------------------- scenarios


def run(args: argparse.Namespace) -> list[str]:
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEDMODELS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = open(Path(tempfile.gettempdir()) / "bench_uploads_streamlit.log", "w")  # noqa: SIM115
    proc, url, _ = start_dashboard(env, log)
    lines: list[str] = []
    png = black_png()
    try:
        sampler = Sampler(proc.pid)
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS),
                viewport={"width": 1400, "height": 1000},
            )
            # warm-up: the models the Evaluate and Explore pages load by default
            page = open_page(context, url, "Evaluate")
            small = class_zip({
                f"set/{q.parent.name}/{q.name}": q.read_bytes()
                for q in sorted((ROOT / "examples" / "malaria").glob("*/*.png"))
            })
            evaluate_upload(page, "warmup.zip", small)
            page.close()
            page = open_page(context, url, "Explore")
            page.locator("input[type=file]").first.set_input_files(
                str(next((ROOT / "examples" / "malaria" / "Uninfected").glob("*.png")))
            )
            page.wait_for_function(EXPLORE_DONE_JS, arg=1, timeout=WAIT_MS)
            page.close()
            base = settle(sampler, SETTLE_S)
            lines.append(f"Server RSS after warm-up (models loaded, pages closed): {base:,.0f} MB.")
            lines.append("")
            lines.append("| scenario | outcome | seconds | RSS before (MB) | peak growth (MB) | "
                         f"RSS {SETTLE_S:.0f} s after pages closed (MB) | change vs before |")
            lines.append("|---|---|---:|---:|---:|---:|---:|")

            def row(label: str, outcome: str, seconds: float, before: float, peak: float, after: float) -> None:
                outcome = re.sub(r"\s+", " ", outcome)[:160].replace("|", "/")
                lines.append(
                    f"| {label} | {outcome} | {seconds:.1f} | {before:,.0f} | {peak - before:+,.0f} | "
                    f"{after:,.0f} | {100 * (after - before) / before:+.0f}% |"
                )
                print(lines[-1], flush=True)

            for n in args.big:
                data = black_zip(n, png)
                before = sampler.reset()
                page = open_page(context, url, "Evaluate")
                outcome, seconds = evaluate_upload(page, f"black_{n}.zip", data)
                peak = sampler.peak
                page.close()
                after = settle(sampler, SETTLE_S)
                row(f"Evaluate: zip of {n} black 6300² PNGs ({len(data) / 1e6:.1f} MB)",
                    outcome, seconds, before, peak, after)

            for _ in range(1 if args.explore else 0):
                explore_20(context, url, sampler, png, row)
            for _ in range(args.concurrent_rounds if args.concurrent else 0):
                concurrent_4(context, url, sampler, Path(profile), args.concurrent_mb, row)
            context.close()
        sampler.stop()
    finally:
        stop(proc)
        log.close()
    return lines


def explore_20(context: object, url: str, sampler: Sampler, png: bytes, row: object) -> None:
    """20 black 6300 x 6300 PNGs on one Explore page, then the page closes."""
    before = sampler.reset()
    page = open_page(context, url, "Explore")
    t0 = time.perf_counter()
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": f"black_{i}.png", "mimeType": "image/png", "buffer": png} for i in range(20)]
    )
    outcome = str(page.wait_for_function(EXPLORE_DONE_JS, arg=20, timeout=WAIT_MS).json_value())
    page.get_by_text("Explanations").first.wait_for(timeout=WAIT_MS)
    seconds = time.perf_counter() - t0
    peak = sampler.peak
    page.close()
    after = settle(sampler, SETTLE_S)
    row("Explore: 20 black 6300² PNGs", outcome, seconds, before, peak, after)


def concurrent_4(context: object, url: str, sampler: Sampler, folder: Path, mb: float, row: object) -> None:
    """Four Evaluate pages upload the same large zip at once, then all close."""
    data = noise_zip(mb)
    zip_path = folder / "noise.zip"  # Playwright passes buffers only up to 50 MB
    zip_path.write_bytes(data)
    before = sampler.reset()
    pages = [open_page(context, url, "Evaluate") for _ in range(4)]
    t0 = time.perf_counter()
    for page in pages:  # the uploads start together; each page evaluates on the server
        page.locator("input[type=file]").first.set_input_files(str(zip_path))
    outcomes = [str(page.wait_for_function(DONE_JS, timeout=WAIT_MS).json_value()) for page in pages]
    seconds = time.perf_counter() - t0
    peak = sampler.peak
    for page in pages:
        page.close()
    after = settle(sampler, SETTLE_S)
    row(f"Evaluate: 4 pages at once, each a {len(data) / 1e6:.0f} MB zip of noise PNGs",
        ", ".join(sorted(set(outcomes))), seconds, before, peak, after)


def write_section(lines: list[str], path: Path = RESULTS) -> None:
    """Replace (or add) the ``## Uploads`` section of RESULTS.md, leaving other sections alone."""
    section = (
        "## Uploads\n\n"
        "`python bench/uploads.py --write-results`: a real `streamlit run` on 127.0.0.1 driven by headless "
        f"Chromium on this machine ({os.cpu_count()} CPU cores shared with other jobs), the shipped weights, "
        "OMP_NUM_THREADS=1. Targets (issue 22): the 150-image zip evaluated or refused in under 30 s with "
        "peak RSS growth under 1.5 GB; after the concurrent uploads' pages close, RSS within 20% of before.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    from medmodels.report.markdown import replace_section

    replace_section(path, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, nargs="*", default=[150, 70],
                        help="image counts of the black-PNG zips on Evaluate")
    parser.add_argument("--concurrent-mb", type=float, default=157.0)
    parser.add_argument("--no-explore", dest="explore", action="store_false")
    parser.add_argument("--no-concurrent", dest="concurrent", action="store_false")
    parser.add_argument("--concurrent-rounds", type=int, default=2,
                        help="repeat the concurrent uploads: the second round shows the steady state")
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the RESULTS.md to update")
    args = parser.parse_args()
    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    lines = run(args)
    print("\n".join(lines))
    if args.write_results:
        write_section(lines, args.results)


if __name__ == "__main__":
    main()
