"""End to end: ``quantkit dashboard --demo`` in a subprocess, driven by headless Chromium."""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import ROOT
from playwright.sync_api import sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")

#: Reads the live figure's traces from the DOM: Plotly keeps them on the plot element.
TRACE_JS = """(meta) => {
  const g = document.querySelector('.js-plotly-plot');
  if (!g || !g.data) return null;
  const t = g.data.find(t => t.meta === meta);
  if (!t) return null;
  const arr = (a) => a ? Array.from(a, v => (v === null ? NaN : Number(v))) : [];
  return {x: arr(t.x), y: arr(t.y), close: arr(t.close)};
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(base: Path) -> dict[str, str]:
    """The test's private Jupyter dirs and HOME (the demo database goes under it)."""
    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        path = base / var.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    env["HOME"] = str(base / "home")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class Launched:
    """A running ``quantkit dashboard`` with its output collected in a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "quantkit.cli", "dashboard", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the output:\n" + "\n".join(self.lines))

    def kernels(self) -> list[psutil.Process]:
        """Live kernel processes under the command (Voila's children)."""
        out = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if "ipykernel_launcher" in " ".join(p.cmdline()):
                    out.append(p)
            except psutil.Error:  # exited (or a zombie not yet reaped) meanwhile
                pass
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def exchange_connections(status_url: str) -> int:
    with urllib.request.urlopen(status_url, timeout=10) as resp:
        return json.load(resp)["connections"]


def wait_charts(page, app: Launched) -> None:
    try:
        page.wait_for_function("() => { const g = document.querySelector('.js-plotly-plot');"
                               " return g && g.data && g.data.length > 18 &&"
                               " g.data[0].x && g.data[0].x.length > 0; }", timeout=60_000)
    except Exception as exc:  # noqa: BLE001 - re-raised with the page and the output
        raise AssertionError(f"no chart ({exc}); page: {page.inner_text('body')[:2000]!r}\n"
                             "output:\n" + "\n".join(app.lines)) from None


def test_dashboard_in_a_browser(tmp_path):
    artifacts = Path(os.environ.get("QUANTKIT_ARTIFACTS", tmp_path / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    app = Launched(["--no-browser", "--demo", "--port", str(port), "--cull-idle", "3"],
                   launch_env(tmp_path))
    try:
        status_url = app.wait_for(r"status: (http://127\.0\.0\.1:\d+/quantkit/status)").group(1)
        url = app.wait_for(r"dashboard at (http://127\.0\.0\.1:\d+/)").group(1)
        assert url == f"http://127.0.0.1:{port}/"
        external: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = browser.new_context(viewport={"width": 1440, "height": 1250})
            ctx.on("request", lambda r: None if r.url.startswith(LOCAL) else external.append(r.url))
            page = ctx.new_page()
            page.goto(url)
            wait_charts(page, app)
            trace = lambda meta: page.evaluate(TRACE_JS, meta)

            # Charts move as trades arrive: more rows read, the newest bar later or changed.
            rows0 = int(page.get_attribute(".qk-status", "data-rows-read"))
            y0 = trace("y-candles")
            page.wait_for_timeout(2500)
            rows1 = int(page.get_attribute(".qk-status", "data-rows-read"))
            y1 = trace("y-candles")
            assert rows1 > rows0
            assert y1["x"][-1] > y0["x"][-1]
            assert "● live" in page.inner_text(".qk-status")
            axes = page.evaluate("() => { const L = document.querySelector('.js-plotly-plot')"
                                 "._fullLayout; return [L.xaxis.type, L.xaxis8.type]; }")
            assert axes == ["date", "date"]  # still dates after many data updates

            # The user's zoom survives the live updates.
            zoom = ("() => { const L = document.querySelector('.js-plotly-plot').layout;"
                    " const a = [L.xaxis, L.xaxis8].find(a => a.autorange === false);"
                    " return a ? a.range : null; }")
            drag = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
            mid = drag["y"] + drag["height"] / 2
            for _ in range(3):  # a drag racing a redraw can be dropped: try again
                page.mouse.move(drag["x"] + drag["width"] * 0.3, mid)
                page.mouse.down()
                page.mouse.move(drag["x"] + drag["width"] * 0.5, mid, steps=5)
                page.mouse.move(drag["x"] + drag["width"] * 0.6, mid, steps=5)
                page.mouse.up()
                page.wait_for_timeout(300)
                if zoomed := page.evaluate(zoom):
                    break
            assert zoomed, "could not zoom by dragging"
            rows = int(page.get_attribute(".qk-status", "data-rows-read"))
            page.wait_for_timeout(2000)
            assert int(page.get_attribute(".qk-status", "data-rows-read")) > rows  # updated
            assert page.evaluate(zoom) == zoomed
            page.dblclick(".js-plotly-plot .nsewdrag")  # back to autorange

            # Window: 10 bars -> the rolling hedge ratio has exactly 9 bars of warm-up.
            box = page.locator(".widget-inline-hbox", has_text="window").locator("input")
            box.fill("10")
            box.press("Enter")
            page.wait_for_function(
                "() => { const g = document.querySelector('.js-plotly-plot');"
                " const b = g.data.find(t => t.meta === 'beta');"
                " return b && b.y && Array.from(b.y).slice(0, 12).filter(v => v === v).length"
                " >= 3; }", timeout=20_000)
            beta = trace("beta")["y"]
            lead = next(i for i, v in enumerate(beta) if not math.isnan(v))
            assert lead == 9

            # Timeframe: 5 s bars.
            page.locator(".widget-dropdown", has_text="timeframe").locator("select") \
                .select_option(label="5 s")
            page.wait_for_function(
                "() => { const g = document.querySelector('.js-plotly-plot');"
                " const x = g.data.find(t => t.meta === 'y-candles').x;"
                " return x.length > 1 && x[1] - x[0] === 5000; }", timeout=20_000)
            x = trace("y-candles")["x"]
            assert {b - a for a, b in itertools.pairwise(x)} <= {5000.0, 10000.0, 15000.0}

            # Pair: ETH against BTC; the top panel now shows ETH's prices.
            page.locator(".widget-dropdown", has_text="leg y").locator("select") \
                .select_option("ETHUSDT")
            page.locator(".widget-dropdown", has_text="leg x").locator("select") \
                .select_option("BTCUSDT")
            page.wait_for_function(
                "() => document.querySelector('.js-plotly-plot').layout.yaxis.title.text"
                " === 'ETHUSDT'", timeout=20_000)
            page.wait_for_timeout(1500)
            eth = trace("y-candles")["close"] + trace("y-open-candle")["close"]
            btc = trace("x-candles")["close"] + trace("x-open-candle")["close"]
            assert max(eth) < min(btc)  # ETH trades well below BTC in the simulator too

            # Nothing went wrong, and nothing was fetched from the internet.
            text = page.inner_text("body")
            assert "Traceback" not in text and "Error" not in text
            assert page.locator(".qk-error").count() == 0
            assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
            page.screenshot(path=str(artifacts / "dashboard.png"))
            assert (artifacts / "dashboard.png").stat().st_size > 50_000

            # Three tabs, three kernels: still one exchange connection (the CLI's ingester).
            tabs = [ctx.new_page() for _ in range(2)]
            for tab in tabs:
                tab.goto(url)
                wait_charts(tab, app)
            assert exchange_connections(status_url) == 1
            assert len(app.kernels()) >= 3
            assert not external, external

            # Tabs that vanish without saying goodbye: their kernels are culled.
            before = len(app.kernels())
            for tab in tabs:
                tab.close(run_before_unload=False)
            deadline = time.monotonic() + 40
            while len(app.kernels()) > before - 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len(app.kernels()) == before - 2
            assert "● live" in page.inner_text(".qk-status")  # the open tab is untouched
            browser.close()
        kernels = app.kernels()
    finally:
        code = app.stop()
    assert code == 0, "\n".join(app.lines)
    assert any("stopping" in line for line in app.lines)
    psutil.wait_procs(kernels, timeout=15)
    assert not [k for k in kernels if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]


def test_shared_dashboard_needs_its_token(tmp_path):
    """``--ip 0.0.0.0`` prints a URL with a token; without the token the page is refused."""
    port = free_port()
    app = Launched(["--no-browser", "--demo", "--ip", "0.0.0.0", "--port", str(port)],
                   launch_env(tmp_path))
    try:
        m = app.wait_for(r"dashboard at (http://\S+?):(\d+)/\?token=(\S+)  \(share this URL")
        assert int(m.group(2)) == port and len(m.group(3)) >= 24
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(f"http://127.0.0.1:{port}/", timeout=30)
        assert refused.value.code in (302, 401, 403)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?token={m.group(3)}",
                                    timeout=60) as resp:
            assert resp.status == 200 and b"jupyter-config-data" in resp.read()
    finally:
        code = app.stop()
    assert code == 0, "\n".join(app.lines)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
