"""How the live dashboard performs: launch, latency, memory, CPU, exchange connections.

Starts ``quantkit dashboard --demo --no-browser`` (simulated exchange at the demo rate),
opens it in headless Chromium and prints:

- launch to first chart (process start -> candles drawn in the browser), against a naive
  baseline: the same notebook served by Voila without a preheated kernel;
- trade-to-browser latency: trade time (exchange clock) -> the page showing that trade;
- the cost of one kernel refresh: incremental (``read_new``) vs naive (re-read and
  re-resample everything) on the same database;
- the tab kernel's memory (RSS) over the run, and CPU of kernel, Voila and the ingesting
  command;
- exchange connections with three tabs open (must be 1).

Usage::

    python benchmarks/bench_dashboard.py            # 10-minute run
    python benchmarks/bench_dashboard.py --minutes 1
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CHART_READY = ("() => { const g = document.querySelector('.js-plotly-plot');"
               " return g && g.data && g.data.length > 18 && g.data[0].x &&"
               " g.data[0].x.length > 0; }")
#: Runs in the page: each time the status bar shows a newer trade, note how old it is.
LATENCY_PROBE = """() => {
  window.__qk_lat = [];
  let last = 0;
  setInterval(() => {
    const el = document.querySelector('.qk-status');
    const ms = el ? Number(el.dataset.lastTradeMs) : 0;
    if (ms > last) { if (last) window.__qk_lat.push(Date.now() - ms); last = ms; }
  }, 5);
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        (base / var.lower()).mkdir(parents=True, exist_ok=True)
        env[var] = str(base / var.lower())
    env["HOME"] = str(base / "home")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class Proc:
    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.t0 = time.perf_counter()
        self.popen = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.popen.stdout:  # type: ignore[union-attr]
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.popen.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"no {pattern!r}:\n" + "\n".join(self.lines[-30:]))

    def kernels(self) -> list[psutil.Process]:
        out = []
        for p in psutil.Process(self.popen.pid).children(recursive=True):
            try:
                if "ipykernel_launcher" in " ".join(p.cmdline()):
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(60)


def first_chart(browser, url: str, t0: float) -> tuple[float, object]:
    page = browser.new_page(viewport={"width": 1440, "height": 1250})
    page.goto(url)
    page.wait_for_function(CHART_READY, timeout=120_000, polling=20)
    return time.perf_counter() - t0, page


def naive_launch(browser, tmp: Path, db: Path) -> float:
    """The same notebook served by plain Voila: no preheated kernel (a cold kernel per visit)."""
    from quantkit.dashboard.cli import JUPYTER_DIR, REPO_NOTEBOOK

    port = free_port()
    env = private_env(tmp / "naive")
    env.update(QUANTKIT_DB=str(db), QUANTKIT_DASHBOARD_READONLY="1",
               JUPYTER_PATH=str(JUPYTER_DIR))
    proc = Proc([sys.executable, "-m", "voila", str(REPO_NOTEBOOK), "--no-browser",
                 f"--port={port}", "--template=quantkit", "--Voila.log_level=ERROR"], env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        took, page = first_chart(browser, f"http://127.0.0.1:{port}/", proc.t0)
        page.close()
        return took
    finally:
        proc.stop()


def refresh_costs(db: Path, repeats: int = 20) -> tuple[float, float, int]:
    """Median ms of an incremental Dashboard refresh vs a naive full re-read, same store."""
    from quantkit.analytics import pair_stats, resample_ohlcv
    from quantkit.dashboard import Dashboard
    from quantkit.storage import TickStore

    store = TickStore(db)
    app = Dashboard(store, autostart=False)
    app.refresh()
    inc = []
    for _ in range(repeats):
        time.sleep(0.1)  # let a few trades arrive, as between two live refreshes
        t = time.perf_counter()
        app.refresh()
        inc.append(time.perf_counter() - t)
    naive = []
    for _ in range(max(3, repeats // 4)):
        t = time.perf_counter()
        bars = {s: resample_ohlcv(store.ticks(s), "1s") for s in ("BTCUSDT", "ETHUSDT")}
        idx = bars["BTCUSDT"].index.intersection(bars["ETHUSDT"].index)
        pair_stats(bars["BTCUSDT"]["close"][idx], bars["ETHUSDT"]["close"][idx],
                   window=min(60, len(idx) // 2))
        naive.append(time.perf_counter() - t)
    rows = store.count()
    app.stop()
    store.close()
    return statistics.median(inc) * 1e3, statistics.median(naive) * 1e3, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="length of the memory/CPU run (default 10)")
    parser.add_argument("--rate", type=float, default=200.0, help="demo trades/s (default 200)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    env = private_env(tmp)
    port = free_port()
    app = Proc([sys.executable, "-m", "quantkit.cli", "dashboard", "--demo", "--no-browser",
                "--port", str(port), "--demo-rate", str(args.rate)], env)
    try:
        url = app.wait_for(r"dashboard at (http://\S+)").group(1)
        status_url = app.wait_for(r"status: (http://\S+/quantkit/status)").group(1)
        served = time.perf_counter() - app.t0
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=CHROMIUM_ARGS)
            launch, page = first_chart(browser, url, app.t0)
            print(f"launch to first chart: {launch:.2f} s (server listening after "
                  f"{served:.2f} s, preheated kernel)")

            page.evaluate(LATENCY_PROBE)
            time.sleep(2)
            kernels = {k.pid: k for k in app.kernels()}
            # The tab's kernel is the oldest one (the pool's fresh one came after it).
            tab_kernel = min(kernels.values(), key=lambda p: p.create_time())
            voila = psutil.Process(app.popen.pid).children()[0]
            me = psutil.Process(app.popen.pid)
            for p in (tab_kernel, voila, me):
                p.cpu_percent(None)
            rss = []
            t_start = time.monotonic()
            t_end = t_start + args.minutes * 60
            while time.monotonic() < t_end:
                rss.append(tab_kernel.memory_info().rss / 2**20)
                time.sleep(min(10.0, max(1.0, args.minutes * 6)))
            rss.append(tab_kernel.memory_info().rss / 2**20)
            step = args.minutes / (len(rss) - 1)
            cpu = {name: p.cpu_percent(None) for name, p in
                   (("tab kernel", tab_kernel), ("voila server", voila),
                    ("quantkit dashboard (exchange + ingestion)", me))}
            lat = page.evaluate("window.__qk_lat")
            errors = page.locator(".qk-error").count()

            db = tmp / "home" / ".quantkit" / "demo.db"
            inc_ms, naive_ms, rows = refresh_costs(db)

            tabs, visits = [], []
            for _ in range(2):
                t = time.perf_counter()
                took, tab = first_chart(browser, url, t)
                tabs.append(tab)
                visits.append(took)
            with urllib.request.urlopen(status_url, timeout=10) as resp:
                connections = json.load(resp)["connections"]
            naive = naive_launch(browser, tmp, db)
            browser.close()
    finally:
        code = app.stop()

    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]  # noqa: E731
    half = len(rss) // 2
    print(f"launch to first chart, naive (Voila, no preheated kernel): {naive:.2f} s")
    print(f"a visit to the running dashboard (preheated kernel ready): "
          f"{', '.join(f'{v:.2f} s' for v in visits)}")
    print(f"trade-to-browser latency at {args.rate:.0f} trades/s: median {q(0.5):.0f} ms, "
          f"p95 {q(0.95):.0f} ms, max {lat[-1]:.0f} ms ({len(lat)} updates seen)")
    print(f"kernel refresh on {rows:,} stored rows: incremental {inc_ms:.2f} ms (median), "
          f"naive full re-read {naive_ms:.1f} ms")
    every = max(1, round(1 / step))  # about one sample a minute
    print("tab kernel RSS (MiB) by minute: " + " ".join(f"{v:.0f}" for v in rss[::every]))
    print(f"tab kernel RSS over {args.minutes:g} min: start {rss[0]:.1f} MiB, "
          f"mid {rss[half]:.1f} MiB, end {rss[-1]:.1f} MiB, max {max(rss):.1f} MiB "
          f"(second half drift {rss[-1] - rss[half]:+.1f} MiB)")
    for name, pct in cpu.items():
        print(f"CPU {name}: {pct:.1f} % of one core")
    print(f"exchange WebSocket connections with 3 tabs open: {connections}")
    print(f"update-loop errors on the page: {errors}; command exit code: {code}")
    return 0 if connections == 1 and code == 0 and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
