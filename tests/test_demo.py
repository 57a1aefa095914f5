"""The offline demo's database: one run only, simulated trades only, never while in use."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from quantkit import Settings
from quantkit.demo import reset_demo_db
from quantkit.errors import ConfigError
from quantkit.exchange import LocalExchange
from quantkit.ingest import Ingestor, ingesting_pid
from quantkit.storage import TickStore, TickWriter


def test_reset_refuses_real_data_and_empties_simulated(tmp_path):
    real = tmp_path / "real.db"
    with TickWriter(real) as w:
        w.claim(origin="binance", stream="aggTrade", symbols=["BTCUSDT"])
    with pytest.raises(ConfigError, match="not simulated"):
        reset_demo_db(real, is_default=False)
    assert real.exists()
    sim = tmp_path / "sim.db"
    with TickWriter(sim) as w:
        w.claim(origin="simulated", stream="aggTrade", symbols=["BTCUSDT"])
    reset_demo_db(sim, is_default=False)
    assert not sim.exists() and not (tmp_path / "sim.db-wal").exists()


def test_reset_refuses_a_database_being_ingested(tmp_path):
    db = tmp_path / "demo.db"
    with LocalExchange(rate=100, seed=1) as ex:
        s = Settings.load(env={}, db=db, ws_url=ex.ws_url, rest_url=ex.rest_url)
        with Ingestor(s):
            assert ingesting_pid(db) is not None
            with pytest.raises(ConfigError, match="ingests into"):
                reset_demo_db(db, is_default=True)
        assert ingesting_pid(db) is None


def _demo_run(db, seconds: float) -> str:
    proc = subprocess.Popen([sys.executable, "-m", "quantkit.cli", "ingest", "--demo", "--db",
                             str(db), "--status-every", "0.5"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    time.sleep(seconds)
    proc.send_signal(2)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_each_demo_run_starts_afresh(tmp_path):
    db = tmp_path / "demo.db"
    _demo_run(db, 3.0)
    with TickStore(db) as store:
        first = store.count()
        assert first > 0 and store.meta()["origin"] == "simulated"
    out = _demo_run(db, 3.0)
    assert "starts empty" in out
    with TickStore(db) as store:
        # the second run's trades alone: none of its ids were dropped as duplicates of the first
        assert store.ingest_status()["duplicates"] == 0
        assert store.count() == store.ingest_status()["rows_written"]
