"""Socket to committed rows: quantkit's ingestor against a naive ingester, in one run.

Both read the same burst of aggTrade messages from the local exchange, which runs in a child
process (its own core) and pushes pre-encoded frames as fast as the client reads, so the client
is what is measured. The naive baseline is the obvious design: websocket-client with default
settings (UTF-8 validation on), ``json``, one INSERT and one commit per message, WAL with
synchronous=NORMAL, the same schema.

    python benchmarks/bench_ingest.py [--messages 500000]

Prints msgs/s for each, the ratio, the ingesting process's CPU time per wall second (one core
is 1.0) and its memory (RSS) over the run.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import psutil
import websocket

from quantkit import Settings
from quantkit.exchange import LocalExchange
from quantkit.ingest import Ingestor
from quantkit.storage import TickWriter

SYMBOLS = ("BTCUSDT", "ETHUSDT")


class RssSampler(threading.Thread):
    """Samples this process's resident memory every 100 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self._done = threading.Event()
        self._proc = psutil.Process()

    def run(self) -> None:
        while not self._done.wait(0.1):
            self.samples.append(self._proc.memory_info().rss)

    def stop(self) -> list[int]:
        self._done.set()
        self.join()
        return self.samples


def run_quantkit(ex, db: Path, n: int) -> dict:
    settings = Settings.load(env={}, db=db, ws_url=ex.ws_url, rest_url=ex.rest_url,
                             silence_timeout=600)
    ing = Ingestor(settings)
    sampler = RssSampler()
    sampler.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ing.start()
    while ing.stats()["rows_written"] < n:
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stats = ing.stats()
    ing.stop()
    rss = sampler.stop()
    return {"wall": wall, "cpu": cpu, "rss": rss, "gaps": stats["gaps_found"],
            "malformed": stats["malformed"]}


def run_naive(ex, db: Path, n: int) -> dict:
    TickWriter(db).close()  # same schema and pragmas (WAL, synchronous=NORMAL)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    url = f"{ex.ws_url}/market/stream?streams=" + "/".join(f"{s.lower()}@aggTrade" for s in SYMBOLS)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ws = websocket.create_connection(url)
    done = 0
    while done < n:
        d = json.loads(ws.recv())["data"]
        conn.execute("BEGIN")
        conn.execute("INSERT OR IGNORE INTO trades (symbol, id, trade_time, price, qty, first_id, "
                     "last_id, is_buyer_maker, recv_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (d["s"], d["a"], d["T"], float(d["p"]), float(d["q"]), d["f"], d["l"],
                      d["m"], int(time.time() * 1000)))
        conn.execute("COMMIT")
        done += 1
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    ws.close()
    conn.close()
    return {"wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--naive-messages", type=int, default=100_000,
                        help="the naive baseline is slow: measure it on fewer messages")
    args = parser.parse_args()
    n, n_naive = args.messages, min(args.naive_messages, args.messages)
    print(f"preparing a burst of {n:,} aggTrade messages in a child exchange process ...")
    ex = LocalExchange.spawn(symbols=SYMBOLS, burst=n, seed=1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fast = run_quantkit(ex, Path(tmp) / "quantkit.db", n)
            naive = run_naive(ex, Path(tmp) / "naive.db", n_naive)
    finally:
        ex.stop()
    fast_rate, naive_rate = n / fast["wall"], n_naive / naive["wall"]
    rss = fast["rss"] or [0]
    mib = 1024 * 1024
    third = max(len(rss) // 3, 1)
    print(f"quantkit ingestor : {fast_rate:>10,.0f} msgs/s  ({n:,} msgs in {fast['wall']:.2f} s, "
          f"CPU {fast['cpu'] / fast['wall']:.2f} cores, gaps {fast['gaps']}, "
          f"malformed {fast['malformed']})")
    print(f"naive baseline    : {naive_rate:>10,.0f} msgs/s  ({n_naive:,} msgs in "
          f"{naive['wall']:.2f} s, CPU {naive['cpu'] / naive['wall']:.2f} cores)")
    print(f"ratio             : {fast_rate / naive_rate:>10.1f}x   (target: >= 80,000 msgs/s "
          f"and >= 4x)")
    print(f"memory (RSS)      : first third {max(rss[:third]) / mib:.0f} MiB, last third "
          f"{max(rss[-third:]) / mib:.0f} MiB, peak {max(rss) / mib:.0f} MiB over {len(rss)} "
          f"samples")


if __name__ == "__main__":
    main()
