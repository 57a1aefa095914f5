"""``quantkit exchange``: run the local Binance-compatible exchange in the foreground.

Prints the URLs and the environment that points ingestion at it, a status line every few
seconds, and exits 0 on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

from .server import LocalExchange

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``quantkit exchange`` options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9999, help="port (0 picks a free one)")
    parser.add_argument("--symbols", default=None,
                        help="comma-separated symbols (synthetic default BTCUSDT,ETHUSDT; "
                             "replay default: all symbols in the files)")
    parser.add_argument("--mode", choices=("synthetic", "replay"), default="synthetic")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="synthetic: mean aggTrade messages per second across symbols")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    parser.add_argument("--burst", type=int, default=0,
                        help="synthetic: send N pre-generated trades to each subscriber as fast "
                             "as it reads (throughput tests), nothing else")
    parser.add_argument("--files", nargs="+", default=[],
                        help="replay: hftbacktest / cryptofeed recordings, data.binance.vision "
                             "aggTrades or trades CSVs (.csv, .zip, .gz)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="replay: 1 real time, 10 ten times faster, 0 as fast as possible")
    parser.add_argument("--ping-interval", type=float, default=180.0, help="seconds")
    parser.add_argument("--pong-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument("--max-connection-age", type=float, default=24 * 3600.0, help="seconds")
    parser.add_argument("--weight-limit", type=int, default=2400,
                        help="REST request weight allowed per minute")
    parser.add_argument("--status-every", type=float, default=10.0,
                        help="seconds between status lines (0: none)")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": args.host, "port": args.port, "mode": args.mode, "rate": args.rate,
        "seed": args.seed, "burst": args.burst, "files": args.files, "speed": args.speed,
        "symbols": args.symbols.split(",") if args.symbols else None,
        "ping_interval": args.ping_interval, "pong_timeout": args.pong_timeout,
        "max_connection_age": args.max_connection_age, "weight_limit": args.weight_limit,
    }


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM; returns 0."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    exchange = LocalExchange(**_options(args)).start()
    try:
        kind = exchange.stream_kind()
        streams = "/".join(f"{s.lower()}@{kind}" for s in exchange.symbols)
        print(f"local exchange ({exchange.mode}, {', '.join(exchange.symbols)}) listening on "
              f"{exchange.host}:{exchange.port}", flush=True)
        print(f"  websocket  {exchange.ws_url}/market/stream?streams={streams}")
        print(f"  REST       {exchange.rest_url}/fapi/v1/exchangeInfo")
        print(f"  faults     POST {exchange.rest_url}/quantkit/fault "
              '{"fault": "drop_connections"}')
        if exchange.mode == "replay":
            print("  the replay starts when the first client subscribes to a recorded stream")
        print("point ingestion at it with:")
        print(f"  QUANTKIT_WS_URL={exchange.ws_url} QUANTKIT_REST_URL={exchange.rest_url} "
              f"quantkit ingest --symbols {','.join(exchange.symbols)}"
              + (" --stream trade" if kind == "trade" else ""), flush=True)
        last_sent, last_t = 0, time.monotonic()
        while not stop.wait(args.status_every or None):
            st = exchange.status()
            now = time.monotonic()
            rate = (st["sent_messages"] - last_sent) / max(now - last_t, 1e-9)
            last_sent, last_t = st["sent_messages"], now
            trades = sum(k["count"] for s in st["trades"].values() for k in s.values())
            print(f"{time.strftime('%H:%M:%S')} connections={st['connections']} "
                  f"sent={st['sent_messages']} ({rate:,.0f} msgs/s) trades={trades} "
                  f"rest_requests={st['rest_requests']}", flush=True)
    finally:
        exchange.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("local exchange stopped", flush=True)
    return 0
