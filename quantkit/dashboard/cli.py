"""``quantkit dashboard``: one ingesting process, and Voila serving the dashboard notebook.

This process holds the only exchange connection (ingestion runs in a background thread);
Voila runs as a child process whose kernels, one per browser tab, only read the tick store.
``--demo`` adds an in-process local exchange and a database of its own.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import webbrowser
from pathlib import Path
from typing import Any

import psutil

from ..config import Settings
from ..demo import default_demo_db, reset_demo_db
from ..errors import ConfigError, QuantkitError

__all__ = ["configure_parser", "run", "voila_command"]

PACKAGE_DIR = Path(__file__).resolve().parent
#: Prepended to JUPYTER_PATH so Voila finds the offline "quantkit" template.
JUPYTER_DIR = PACKAGE_DIR / "jupyter"
REPO_NOTEBOOK = PACKAGE_DIR.parents[1] / "notebooks" / "dashboard.ipynb"
#: Kernels of closed tabs are shut down after this long without a browser attached.
CULL_IDLE_S = 60


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``quantkit dashboard`` flags to ``parser``."""
    parser.add_argument("--port", type=int, default=8866, help="HTTP port (default 8866)")
    parser.add_argument("--ip", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 shares it on the network, "
                             "protected by a token (default 127.0.0.1)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--db", help="SQLite tick store (env QUANTKIT_DB)")
    parser.add_argument("--symbols", help="comma-separated, default BTCUSDT,ETHUSDT")
    parser.add_argument("--ws-url", help="WebSocket base URL (default Binance)")
    parser.add_argument("--rest-url", help="REST base URL (default Binance)")
    parser.add_argument("--demo", action="store_true",
                        help="run offline against a local simulated exchange, into its own "
                             "database (~/.quantkit/demo.db, emptied at each start)")
    parser.add_argument("--cull-idle", type=int, default=CULL_IDLE_S, metavar="S",
                        help=f"shut down the kernel of a closed tab after S seconds "
                             f"(default {CULL_IDLE_S})")
    parser.add_argument("--indicators", action="append", metavar="FILE.py",
                        help="a Python file defining @quantkit.indicator functions (e.g. saved "
                             "from a notebook cell); every dashboard offers them; repeatable")
    parser.add_argument("--demo-rate", type=float, default=200.0, metavar="N",
                        help="simulated trades per second with --demo (default 200)")


def _port_free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def _lan_address() -> str:
    """An address other machines may reach this one at: the first non-loopback IPv4."""
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return addr.address
    return socket.gethostname()


def _notebook(runtime: Path) -> Path:
    """The dashboard notebook: the repository's, or the same two cells written afresh."""
    if REPO_NOTEBOOK.exists():
        return REPO_NOTEBOOK
    path = runtime / "dashboard.ipynb"
    cells = ["from quantkit.dashboard import Dashboard\n\napp = Dashboard.from_env()",
             "app.container"]
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}",
                     "metadata": {}, "outputs": [], "source": src}
                    for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                      "name": "python3"}, "title": "quantkit dashboard"},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb, indent=1))
    return path


def voila_command(notebook: Path, *, port: int, ip: str, config_dir: Path) -> list[str]:
    """The Voila command line: offline template, one preheated kernel, culling of closed tabs."""
    return [
        sys.executable, "-m", "voila", str(notebook), "--no-browser",
        f"--port={port}", f"--Voila.ip={ip}", "--Voila.port_retries=0",
        f"--Voila.config_file_paths={config_dir}", "--Voila.log_level=ERROR",
        "--template=quantkit", "--theme=light", "--strip_sources=True",
        "--preheat_kernel=True", "--pool_size=1",
    ]


def _voila_config(token: str | None, cull_idle: float) -> dict[str, Any]:
    return {
        "Voila": {"token": token} if token else {},
        "VoilaConfiguration": {
            "multi_kernel_manager_class": "quantkit.dashboard.kernels.TabKernelManager"},
        "MappingKernelManager": {"cull_idle_timeout": cull_idle,
                                 "cull_interval": max(1, min(15, int(cull_idle // 3)))},
    }


def _wait_listening(ip: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    host = "127.0.0.1" if ip in ("0.0.0.0", "") else ip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise QuantkitError(f"Voila exited with code {proc.returncode} before serving; "
                                "see its messages above")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise QuantkitError(f"Voila did not listen on {host}:{port} within {timeout:.0f} s")


def run(args: argparse.Namespace) -> int:
    """Serve the dashboard until Ctrl-C or SIGTERM.

    Starts Voila (offline template, one preheated kernel, culling of closed tabs), then the
    local exchange with ``--demo``, then ingestion in a background thread of this process.

    Returns
    -------
    int
        0 when stopped by Ctrl-C/SIGTERM (everything flushed and shut down), 1 if Voila died.

    Raises
    ------
    ConfigError
        For a port in use, a ``--db`` that is not simulated with ``--demo``, bad symbols.
    """
    from ..ingest import start

    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    if args.cull_idle < 2:
        raise ConfigError(f"--cull-idle: {args.cull_idle} s is too short; give 2 or more")
    if not _port_free(args.ip, args.port):
        raise ConfigError(f"--port {args.port} is in use on {args.ip}: pick another port")
    exchange = None
    feed = None
    proc: subprocess.Popen | None = None
    runtime: Path | None = None

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        db = args.db
        if args.demo:
            db = Path(args.db).expanduser() if args.db else default_demo_db()
            reset_demo_db(db, is_default=args.db is None)
        settings = Settings.load(symbols=args.symbols, db=db and str(db), ws_url=args.ws_url,
                                 rest_url=args.rest_url)
        indicator_files = [str(Path(f).expanduser().resolve()) for f in args.indicators or ()]
        if indicator_files:  # fail here, with the file's error, not in every visitor's kernel
            from ..analytics import load_indicators

            print(f"indicators from files: {', '.join(load_indicators(indicator_files))}",
                  flush=True)

        # Voila first: its preheated kernel imports and renders while the exchange connects
        # (a kernel that finds no database yet waits for it), so the first chart comes sooner.
        runtime = Path(tempfile.mkdtemp(prefix="quantkit-dashboard-"))  # mode 0700
        token = secrets.token_urlsafe(24) if args.ip not in ("127.0.0.1", "localhost") else None
        (runtime / "voila.json").write_text(json.dumps(_voila_config(token, args.cull_idle)))
        env = dict(os.environ)
        env.update(QUANTKIT_DB=str(settings.db), QUANTKIT_SYMBOLS=",".join(settings.symbols),
                   QUANTKIT_DASHBOARD_READONLY="1",
                   QUANTKIT_INDICATORS=os.pathsep.join(indicator_files),
                   JUPYTER_PATH=os.pathsep.join(
                       p for p in (str(JUPYTER_DIR), os.environ.get("JUPYTER_PATH")) if p))
        cmd = voila_command(_notebook(runtime), port=args.port, ip=args.ip,
                            config_dir=runtime)
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)

        if args.demo:
            from ..exchange import LocalExchange

            exchange = LocalExchange(symbols=settings.symbols, rate=args.demo_rate).start()
            settings = dataclasses.replace(settings, ws_url=exchange.ws_url,
                                           rest_url=exchange.rest_url)
            print(f"demo: simulated exchange at {exchange.ws_url} (status: "
                  f"{exchange.rest_url}/quantkit/status)", flush=True)
        feed = start(settings)
        if feed.ingesting:
            print(f"ingesting {', '.join(settings.symbols)} into {settings.db}", flush=True)
        else:
            print(f"another process ingests into {settings.db}: the dashboard reads it",
                  flush=True)
        _wait_listening(args.ip, args.port, proc, timeout=60)
        host = "127.0.0.1" if args.ip in ("127.0.0.1", "localhost") else _lan_address()
        url = f"http://{host}:{args.port}/" + (f"?token={token}" if token else "")
        print(f"dashboard at {url}" + ("  (share this URL: the token is the password)"
                                       if token else ""), flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        code = proc.wait()
        print(f"Voila exited with code {code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if proc is not None and proc.poll() is None:
            proc.terminate()  # Voila shuts its kernels down on SIGTERM
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if feed is not None:
            feed.stop()
        if exchange is not None:
            exchange.stop()
        if runtime is not None:
            shutil.rmtree(runtime, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
