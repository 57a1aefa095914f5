"""End to end: the ingestor against the local exchange over real loopback sockets.

Every check compares the store with what the exchange actually served, id for id and value for
value: exactly once, gap-free across faults, kills and restarts.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import quantkit
from quantkit import Settings
from quantkit.errors import ConfigError, StorageError
from quantkit.exchange import LocalExchange
from quantkit.ingest import Ingestor
from quantkit.storage import TickStore, TickWriter

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def settings(exchange: LocalExchange, db: Path, **kw) -> Settings:
    base = dict(db=db, ws_url=exchange.ws_url, rest_url=exchange.rest_url, backoff_base=0.05,
                backoff_cap=0.3, silence_timeout=5.0)
    base.update(kw)
    return Settings.load(env={}, **base)


def wait_for(predicate, timeout: float = 20.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(every)


def stored(db: Path, symbol: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT id, trade_time, price, qty, first_id, last_id, is_buyer_maker "
                        "FROM trades WHERE symbol = ? ORDER BY id", (symbol,)).fetchall()
    conn.close()
    return rows


def served(exchange: LocalExchange, symbol: str, lo: int, hi: int) -> list[tuple]:
    return [(t.id, t.trade_time, t.price, t.qty, t.first_id, t.last_id, int(t.is_buyer_maker))
            for t in exchange.trades(symbol) if lo <= t.id <= hi]


def assert_complete(db: Path, exchange: LocalExchange, symbol: str) -> int:
    """The store holds a contiguous id run, equal field by field to what the exchange served."""
    rows = stored(db, symbol)
    assert rows, f"nothing stored for {symbol}"
    ids = [r[0] for r in rows]
    assert ids == list(range(ids[0], ids[-1] + 1)), f"{symbol}: hole in the stored ids"
    assert rows == served(exchange, symbol, ids[0], ids[-1])
    return len(rows)


@pytest.fixture
def exchange():
    with LocalExchange(symbols=SYMBOLS, rate=400.0, seed=7) as ex:
        yield ex


def test_every_message_stored_exactly_once(exchange, tmp_path):
    db = tmp_path / "t.db"
    with Ingestor(settings(exchange, db)) as ing:
        wait_for(lambda: ing.stats()["rows_written"] >= 600)
    st = ing.stats()
    assert st["state"] == "stopped"
    n = sum(assert_complete(db, exchange, s) for s in SYMBOLS)
    assert n == st["rows_written"] == st["messages"]
    assert (st["gaps_found"], st["malformed"], st["duplicates"], st["reconnects"]) == (0, 0, 0, 0)
    assert 0 <= st["lag_ms"] < 2000
    with TickStore(db) as store:
        assert store.meta()["origin"] == "simulated"
        kinds = store.events()["kind"].tolist()
        assert kinds[0] == "connect" and kinds[-1] == "disconnect"
        assert store.ingest_status()["state"] == "stopped"


def test_forced_disconnects_are_backfilled(exchange, tmp_path):
    db = tmp_path / "t.db"
    with Ingestor(settings(exchange, db)) as ing:
        wait_for(lambda: ing.stats()["rows_written"] >= 200)
        for k in range(2):
            exchange.drop_connections()
            wait_for(lambda k=k: ing.stats()["reconnects"] >= k + 1)
            wait_for(lambda: ing.stats()["state"] == "live")
        wait_for(lambda: ing.stats()["gaps_found"] >= 1
                 and ing.stats()["gaps_filled"] == ing.stats()["gaps_found"])
        rows_then = ing.stats()["rows_written"]
        wait_for(lambda: ing.stats()["rows_written"] >= rows_then + 100)
    st = ing.stats()
    for s in SYMBOLS:
        assert_complete(db, exchange, s)
    assert st["backfilled_rows"] > 0
    with TickStore(db) as store:
        gaps = store.gaps()
        assert len(gaps) == st["gaps_found"] and set(gaps["status"]) == {"filled"}
        assert (gaps["filled_rows"] == gaps["to_id"] - gaps["from_id"] + 1).all()
        assert store.events()["kind"].tolist().count("disconnect") >= 2


def test_lost_messages_without_disconnect_are_backfilled(exchange, tmp_path):
    db = tmp_path / "t.db"
    with Ingestor(settings(exchange, db)) as ing:
        wait_for(lambda: ing.stats()["rows_written"] >= 100)
        exchange.skip_messages(7)
        wait_for(lambda: ing.stats()["gaps_filled"] >= 1)
        wait_for(lambda: ing.stats()["rows_written"] >= 300)
    st = ing.stats()
    assert st["reconnects"] == 0 and st["gaps_found"] >= 1
    assert st["last_gap"]["status"] == "filled"
    for s in SYMBOLS:
        assert_complete(db, exchange, s)


def test_malformed_frames_are_counted_and_skipped(exchange, tmp_path):
    db = tmp_path / "t.db"
    with Ingestor(settings(exchange, db)) as ing:
        wait_for(lambda: ing.stats()["rows_written"] >= 100)
        exchange.send_malformed(3)
        wait_for(lambda: ing.stats()["malformed"] >= 3)
        rows = ing.stats()["rows_written"]
        wait_for(lambda: ing.stats()["rows_written"] >= rows + 100)
    st = ing.stats()
    assert st["malformed"] == 3 and st["reconnects"] == 0
    assert "malformed" in st["last_error"]
    for s in SYMBOLS:
        assert_complete(db, exchange, s)
    with TickStore(db) as store:
        assert store.events()["kind"].tolist().count("malformed") == 3


def test_silent_feed_is_noticed_and_reconnected(exchange, tmp_path):
    db = tmp_path / "t.db"
    with Ingestor(settings(exchange, db, silence_timeout=0.8)) as ing:
        wait_for(lambda: ing.stats()["rows_written"] >= 100)
        exchange.go_silent(2.0)
        wait_for(lambda: ing.stats()["reconnects"] >= 1, timeout=10)
        assert "no message for" in ing.stats()["last_error"]
        wait_for(lambda: ing.stats()["gaps_filled"] >= 1 and ing.stats()["state"] == "live",
                 timeout=15)
    for s in SYMBOLS:
        assert_complete(db, exchange, s)


def test_connection_rotated_before_its_age_limit(exchange, tmp_path):
    db = tmp_path / "t.db"
    with Ingestor(settings(exchange, db, max_connection_age=0.7)) as ing:
        wait_for(lambda: ing.stats()["reconnects"] >= 3, timeout=15)
        wait_for(lambda: ing.stats()["gaps_filled"] == ing.stats()["gaps_found"])
    with TickStore(db) as store:
        assert store.events()["detail"].tolist().count("rotate") >= 3
    for s in SYMBOLS:
        assert_complete(db, exchange, s)


def test_backfill_waits_out_rate_limits(exchange, tmp_path):
    db = tmp_path / "t.db"
    with Ingestor(settings(exchange, db)) as ing:
        wait_for(lambda: ing.stats()["rows_written"] >= 100)
        exchange.rate_limit(2)
        exchange.skip_messages(5)
        wait_for(lambda: ing.stats()["gaps_filled"] >= 1, timeout=30)
        assert ing._rest.throttled_s > 0  # it waited instead of hammering
    for s in SYMBOLS:
        assert_complete(db, exchange, s)


def test_unknown_symbol_is_refused_with_a_suggestion(exchange, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown symbol 'BTCUSD'.*Did you mean 'BTCUSDT'"):
        Ingestor(settings(exchange, tmp_path / "t.db", symbols="BTCUSD,ETHUSDT")).start()
    assert not (tmp_path / "t.db").exists()  # nothing written for a refused start


def test_simulated_trades_never_enter_a_real_database(exchange, tmp_path):
    db = tmp_path / "real.db"
    with TickWriter(db) as w:
        w.claim(origin="binance", stream="aggTrade", symbols=SYMBOLS)
    with pytest.raises(StorageError, match="simulated and real trades never mix"):
        Ingestor(settings(exchange, db)).start()


def test_one_ingester_per_database(exchange, tmp_path):
    db = tmp_path / "t.db"
    first = quantkit.start(settings(exchange, db))
    try:
        wait_for(lambda: first.status()["rows_written"] > 0)
        second = quantkit.start(settings(exchange, db))
        assert first.ingesting and not second.ingesting
        wait_for(lambda: (second.status() or {}).get("rows_written", 0) > 0)
        assert second.status()["heartbeat_age_s"] < 5
        assert exchange.connection_count() == 1
        second.stop()
    finally:
        first.stop()


def _ingest_cmd(exchange: LocalExchange, db: Path) -> list[str]:
    return [sys.executable, "-m", "quantkit.cli", "ingest", "--db", str(db), "--ws-url",
            exchange.ws_url, "--rest-url", exchange.rest_url, "--status-every", "0.5"]


def _row_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(db, timeout=5)
        n = conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]
        conn.close()
        return n
    except sqlite3.OperationalError:
        return 0


def test_sigkill_then_restart_fills_the_hole(exchange, tmp_path):
    db = tmp_path / "t.db"
    proc = subprocess.Popen(_ingest_cmd(exchange, db), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _row_count(db) >= 300)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    before = {s: conn.execute("SELECT MAX(id) FROM trades WHERE symbol=?", (s,)).fetchone()[0]
              for s in SYMBOLS}
    conn.close()
    time.sleep(1.0)  # trades go on while nobody listens
    with Ingestor(settings(exchange, db)) as ing:
        wait_for(lambda: ing.stats()["gaps_found"] >= 1
                 and ing.stats()["gaps_filled"] == ing.stats()["gaps_found"])
        wait_for(lambda: all(ing._last_id.get(s, 0) > before[s] + 50 for s in SYMBOLS))
    for s in SYMBOLS:
        assert_complete(db, exchange, s)


def test_sigterm_flushes_and_exits_zero(exchange, tmp_path):
    db = tmp_path / "t.db"
    proc = subprocess.Popen(_ingest_cmd(exchange, db), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: _row_count(db) >= 200)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "stopping: flushing" in out
    last = [line for line in out.splitlines() if line.startswith("stopped")][-1]
    written = int(last.split("rows ")[1].split()[0].replace(",", ""))
    assert written == _row_count(db)
    for s in SYMBOLS:
        assert_complete(db, exchange, s)


def test_cli_reports_bad_settings_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "quantkit.cli", "ingest", "--symbols", "BTC-USD",
                           "--db", str(tmp_path / "x.db")], capture_output=True, text=True,
                          timeout=60, env={**os.environ})
    assert proc.returncode == 2
    assert "not a Binance futures symbol" in proc.stderr and "Traceback" not in proc.stderr


def test_real_recorded_trades_replayed_end_up_tick_for_tick(binance_data, tmp_path):
    """Binance's own BTCUSDT and ETHUSDT @trade recordings, through the exchange, into the store."""
    from conftest import read_recorded_trades

    files = {"BTCUSDT": binance_data / "hftbacktest_usdm_btcusdt_20240808_trade.txt.gz",
             "ETHUSDT": binance_data / "hftbacktest_usdm_ethusdt_20240808_trade.txt.gz"}
    recorded = {s: read_recorded_trades(f) for s, f in files.items()}
    assert (len(recorded["BTCUSDT"]), len(recorded["ETHUSDT"])) == (21313, 14076)
    db = tmp_path / "replay.db"
    with LocalExchange(mode="replay", files=list(files.values()), speed=0) as ex:
        s = settings(ex, db, stream="trade")
        with Ingestor(s) as ing:
            wait_for(lambda: ing.stats()["rows_written"] >= 21313 + 14076, timeout=60)
        assert ing.stats()["gaps_found"] == 0 and ing.stats()["malformed"] == 0
    with TickStore(db) as store:
        assert store.meta()["origin"] == "replay"
        for sym, payloads in recorded.items():
            df = store.ticks(sym)
            assert len(df) == len(payloads)
            assert df["id"].tolist() == [p["t"] for p in payloads]
            assert df["price"].tolist() == [float(p["p"]) for p in payloads]
            assert df["qty"].tolist() == [float(p["q"]) for p in payloads]
            assert df["is_buyer_maker"].tolist() == [p["m"] for p in payloads]
            assert (df.index.asi8 // 1_000_000).tolist() == [p["T"] for p in payloads]


def test_pings_are_answered_so_the_exchange_keeps_us(tmp_path):
    db = tmp_path / "t.db"
    with LocalExchange(symbols=SYMBOLS, rate=50.0, ping_interval=0.3, pong_timeout=0.8) as ex:
        with Ingestor(settings(ex, db)) as ing:
            time.sleep(3.0)  # ten pings; one unanswered would have cost the connection
            assert ing.stats()["reconnects"] == 0 and ex.connection_count() == 1
        for s in SYMBOLS:
            assert assert_complete(db, ex, s) > 20


def test_trade_stream_gaps_are_filled_from_historical_trades(exchange, tmp_path):
    db = tmp_path / "t.db"
    with Ingestor(settings(exchange, db, stream="trade")) as ing:
        wait_for(lambda: ing.stats()["rows_written"] >= 200)
        exchange.skip_messages(6)
        wait_for(lambda: ing.stats()["gaps_filled"] >= 1)
        rows = ing.stats()["rows_written"]
        wait_for(lambda: ing.stats()["rows_written"] >= rows + 100)
    for s in SYMBOLS:
        rows = stored(db, s)
        ids = [r[0] for r in rows]
        assert ids == list(range(ids[0], ids[-1] + 1))
        assert all(r[4] == r[5] == r[0] for r in rows)  # single trades: first = last = id
        served_ = {t.id: t for t in exchange.trades(s, "trade")}
        assert all(served_[r[0]].price == r[2] and served_[r[0]].qty == r[3] for r in rows)
    with TickStore(db) as store:
        assert store.meta()["stream:BTCUSDT"] == "trade"
