"""Start the dashboard on a free loopback port and wait for it: shared by the browser tests
and the load benchmark, so both exercise the server exactly the same way."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, headless, with nothing that reaches out to the network.
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def start_dashboard(env: dict[str, str], log: IO[str] | int = subprocess.DEVNULL,
                    timeout_s: float = 60.0) -> tuple[subprocess.Popen, str, float]:
    """(process, base URL, seconds until /_stcore/health answered); raises if it never does."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port)],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT,
    )
    while not healthy(url, timeout=1.0):
        if proc.poll() is not None or time.perf_counter() - t0 > timeout_s:
            stop(proc)
            raise RuntimeError(f"the dashboard did not become healthy within {timeout_s:.0f} s")
        time.sleep(0.1)
    return proc, url, time.perf_counter() - t0


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
