"""The tick store on a real SQLite file: schema, dedup, reads, cursors, origins, concurrency."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3

import numpy as np
import pandas as pd
import pytest

from quantkit.errors import StorageError
from quantkit.storage import TickStore, TickWriter
from quantkit.wire import Trade

T0 = 1723161256322


def make(sym: str, ids, t0: int = T0) -> list[Trade]:
    return [Trade(sym, i, t0 + 10 * (i - ids[0]), 100.0 + i * 0.1, 0.001 * (i % 7 + 1), 2 * i,
                  2 * i + 1, i % 3 == 0, None) for i in ids]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "ticks.db"
    with TickWriter(path) as w:
        w.claim(origin="simulated", stream="aggTrade", symbols=["BTCUSDT", "ETHUSDT"])
        w.insert(make("BTCUSDT", range(100, 200)))
        w.insert(make("ETHUSDT", range(5000, 5050)))
    return path


def test_wal_mode_and_schema(db):
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "trades", "gaps", "events", "status"} <= tables
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_ticks_frame_shape_and_values(db):
    with TickStore(db) as store:
        df = store.ticks("btcusdt")
        assert list(df.columns) == ["price", "qty", "is_buyer_maker", "id", "first_id", "last_id"]
        assert isinstance(df.index, pd.DatetimeIndex) and str(df.index.tz) == "UTC"
        assert len(df) == 100 and df["id"].tolist() == list(range(100, 200))
        assert df.index[0] == pd.Timestamp(T0, unit="ms", tz="UTC")
        assert df["price"].iloc[5] == 100.0 + 105 * 0.1
        assert df["is_buyer_maker"].dtype == bool and df["is_buyer_maker"].sum() == 33
        assert (df["last_id"] - df["first_id"] + 1).sum() == 200
        # half-open range [start, end): 10 ms apart, so 20 rows in 200 ms
        part = store.ticks("BTCUSDT", start=T0 + 100, end=pd.Timestamp(T0 + 300, unit="ms"))
        assert part["id"].tolist() == list(range(110, 130))
        naive = store.ticks("BTCUSDT", start=pd.Timestamp(T0 + 100, unit="ms").tz_localize(None))
        assert len(naive) == 90  # naive times are UTC
        assert store.symbols() == ["BTCUSDT", "ETHUSDT"]
        assert store.count() == 150 and store.count("ETHUSDT") == 50


def test_duplicates_are_ignored_and_counted(db):
    with TickWriter(db) as w:
        assert w.insert(make("BTCUSDT", range(150, 250))) == 50
        assert w.last_ids() == {"BTCUSDT": 249, "ETHUSDT": 5049}
    with TickStore(db) as store:
        assert store.count("BTCUSDT") == 150


def test_incremental_read_sees_backfilled_rows(db):
    with TickStore(db) as store:
        cursor = store.last_cursor()
        assert store.read_new(cursor).frame.empty
        with TickWriter(db) as w:
            w.insert(make("BTCUSDT", range(200, 203)))
            w.insert(make("BTCUSDT", range(50, 52)))  # older, e.g. a backfill
        batch = store.read_new(cursor)
        assert batch.frame["id"].tolist() == [200, 201, 202, 50, 51]
        assert batch.frame["symbol"].unique().tolist() == ["BTCUSDT"]
        assert batch.cursor == cursor + 5
        assert store.read_new(cursor, symbols=["ethusdt"]).frame.empty
        limited = store.read_new(0, limit=7)
        assert len(limited.frame) == 7 and limited.cursor == 7


def test_clear_errors(tmp_path, db):
    with pytest.raises(StorageError, match="no tick store at"):
        TickStore(tmp_path / "missing.db")
    with TickStore(db) as store:
        with pytest.raises(StorageError, match=r"no trades for 'BTCUSD'.*Did you mean 'BTCUSDT'"):
            store.ticks("BTCUSD")
        with pytest.raises(StorageError, match="cannot read"):
            store.ticks("BTCUSDT", start="yesterday-ish")
    with TickWriter(db) as w:
        with pytest.raises(StorageError, match="simulated and real trades never mix"):
            w.claim(origin="binance", stream="aggTrade", symbols=["BTCUSDT"])
        with pytest.raises(StorageError, match="holds aggTrade ids for BTCUSDT.*would collide"):
            w.claim(origin="simulated", stream="trade", symbols=["BTCUSDT"])


def test_empty_store(tmp_path):
    path = tmp_path / "empty.db"
    TickWriter(path).close()
    with TickStore(path) as store:
        assert store.symbols() == [] and store.count() == 0 and store.last_cursor() == 0
        assert store.ingest_status() is None and store.gaps().empty
        with pytest.raises(StorageError, match="nothing yet"):
            store.ticks("BTCUSDT")


def test_status_and_gaps_round_trip(db):
    with TickWriter(db) as w:
        w.write_status({"state": "live", "messages": 7})
        with w.transaction() as conn:
            gid = w.open_gap(conn, "BTCUSDT", 200, 204)
        assert w.open_gaps() == [(gid, "BTCUSDT", 200, 204)]
        with w.transaction() as conn:
            w.close_gap(conn, gid, 5)
        assert w.open_gaps() == []
    with TickStore(db) as store:
        st = store.ingest_status()
        assert st["state"] == "live" and st["messages"] == 7 and 0 <= st["heartbeat_age_s"] < 5
        gaps = store.gaps()
        assert gaps[["symbol", "from_id", "to_id", "filled_rows", "status"]].iloc[0].tolist() == [
            "BTCUSDT", 200, 204, 5, "filled"]


def _reader(path: str, n: int, out: mp.Queue) -> None:
    errors, counts = 0, []
    store = TickStore(path)
    for _ in range(n):
        try:
            counts.append(store.count())
        except StorageError:
            errors += 1
    out.put((errors, counts[0], counts[-1]))


def test_readers_in_other_processes_never_see_locked(db):
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(str(db), 400, out)) for _ in range(2)]
    for r in readers:
        r.start()
    with TickWriter(db) as w:
        for k in range(60):  # a writer committing constantly while the readers poll
            w.insert(make("BTCUSDT", range(1000 + 500 * k, 1500 + 500 * k)))
    results = [out.get(timeout=60) for _ in readers]
    for r in readers:
        r.join(10)
    assert all(errors == 0 for errors, _, _ in results)
    assert all(first <= last <= 150 + 30000 for _, first, last in results)
    with TickStore(db) as store:
        ids = np.sort(store.ticks("BTCUSDT")["id"].to_numpy())
        expected = np.concatenate([np.arange(100, 200), np.arange(1000, 31000)])
        assert np.array_equal(ids, expected)
