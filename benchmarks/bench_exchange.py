"""Delivery rate of the local exchange to one WebSocket client on loopback.

Runs each server in its own process (its own core) and reads with a minimal websocket-client
loop (``skip_utf8_validation=True``), the fastest Python client measured in FIELD_NOTES:

1. burst fast path: N pre-generated aggTrades, frames pre-encoded and written ~2000 per socket
   write (``LocalExchange(burst=N)``), read by websocket-client and by a raw-socket frame counter
   (the server's own ceiling, with a cheaper reader);
2. naive baseline, same N trades: a tornado handler that ``await``s ``write_message(json.dumps(
   payload))`` per message, as most servers are written;
3. live synthetic mode at ``--live-rate`` msgs/s for ``--live-seconds``.

    python benchmarks/bench_exchange.py [--n 500000] [--live-rate 50000] [--live-seconds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time

import websocket

from quantkit.exchange import LocalExchange

STREAMS = "btcusdt@aggTrade/ethusdt@aggTrade"


def read_websocket_client(url: str, n: int) -> float:
    """Seconds for websocket-client to receive ``n`` messages (from the first one)."""
    ws = websocket.create_connection(url, timeout=30, skip_utf8_validation=True)
    ws.recv()
    t0 = time.perf_counter()
    for _ in range(n - 1):
        ws.recv()
    elapsed = time.perf_counter() - t0
    ws.close()
    return elapsed


def read_raw_frames(port: int, path: str, n: int) -> float:
    """Seconds to receive ``n`` frames over a bare socket that only walks frame headers."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                 f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    data = bytearray(head.split(b"\r\n\r\n", 1)[1])
    t0 = time.perf_counter()
    count = pos = 0
    while count < n:
        data += sock.recv(1 << 20)
        while len(data) - pos >= 4:
            size = data[pos + 1] & 0x7F
            header = 2
            if size == 126:
                size, header = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
            elif size == 127:
                size, header = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
            if len(data) - pos < header + size:
                break
            pos += header + size
            count += 1
        del data[:pos]
        pos = 0
    elapsed = time.perf_counter() - t0
    sock.close()
    return elapsed


def naive_server(n: int) -> None:
    """Child process: serve the same burst the naive way, one awaited write_message each."""
    import tornado.netutil
    import tornado.web
    import tornado.websocket

    from quantkit.wire import trade_to_agg_payload

    ex = LocalExchange(burst=n)
    ex._prepare()  # only to get the same trades; nothing is served from it
    trades = sorted(ex.trades("BTCUSDT") + ex.trades("ETHUSDT"), key=lambda t: t.trade_time)

    class Naive(tornado.websocket.WebSocketHandler):
        async def open(self) -> None:
            for t in trades:
                await self.write_message(json.dumps(
                    {"stream": t.symbol.lower() + "@aggTrade", "data": trade_to_agg_payload(t)}))

    async def main() -> None:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/stream", Naive)]))
        server.add_sockets(sockets)
        print(sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    import tornado.httpserver
    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500_000, help="messages in the burst")
    parser.add_argument("--live-rate", type=float, default=50_000.0)
    parser.add_argument("--live-seconds", type=float, default=5.0)
    parser.add_argument("--naive-server", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        naive_server(args.naive_server)
        return
    n = args.n
    print(f"local exchange delivery to one client on loopback, {n:,} aggTrade messages")
    t0 = time.perf_counter()
    with LocalExchange.spawn(burst=n) as ex:
        print(f"  burst prepared (generate + pre-encode) in {time.perf_counter() - t0:.1f} s")
        url = f"{ex.ws_url}/market/stream?streams={STREAMS}"
        wsc = [n / read_websocket_client(url, n) for _ in range(2)]
        raw = n / read_raw_frames(ex.port, f"/market/stream?streams={STREAMS}", n)
    print(f"  fast path -> websocket-client reader : {max(wsc):>10,.0f} msgs/s "
          f"(runs: {', '.join(f'{r:,.0f}' for r in wsc)})")
    print(f"  fast path -> raw frame counter       : {raw:>10,.0f} msgs/s (server ceiling)")

    proc = subprocess.Popen([sys.executable, __file__, "--naive-server", str(n)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        naive = n / read_raw_frames(port, "/stream", n)
    finally:
        proc.kill()
        proc.wait()
    print(f"  naive server  -> raw frame counter    : {naive:>10,.0f} msgs/s")
    print(f"  fast path / naive (same reader)       : {raw / naive:>10.1f} x")

    with LocalExchange.spawn(rate=args.live_rate) as ex:
        ws = websocket.create_connection(f"{ex.ws_url}/market/stream?streams={STREAMS}",
                                         timeout=10, skip_utf8_validation=True)
        ws.recv()
        t0, got = time.perf_counter(), 0
        while time.perf_counter() - t0 < args.live_seconds:
            ws.recv()
            got += 1
        live = got / (time.perf_counter() - t0)
        ws.close()
    print(f"  live synthetic at --rate {args.live_rate:,.0f}  : {live:>10,.0f} msgs/s delivered "
          "(Hawkes arrivals: the rate is a mean)")


if __name__ == "__main__":
    main()
