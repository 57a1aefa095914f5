"""The synthetic market: deterministic, cointegrated, bursty, with Binance-like ids and sizes;
and the ``quantkit exchange`` command."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import orjson
import pytest
import websocket
from statsmodels.tsa.stattools import coint

from quantkit.errors import ConfigError
from quantkit.exchange.synthetic import SyntheticMarket
from quantkit.exchange.tape import Events

START = 1_723_161_256_000


def concat(parts: list[Events]) -> Events:
    return Events(*(np.concatenate(cols) for cols in zip(*parts)))


def test_same_seed_same_trades_whatever_the_chunking():
    one = SyntheticMarket(["BTCUSDT", "ETHUSDT"], rate=300, seed=4, start_ms=START)
    whole = one.advance(START + 5000)
    two = SyntheticMarket(["BTCUSDT", "ETHUSDT"], rate=300, seed=4, start_ms=START)
    chunks = concat([two.advance(START + t) for t in [*range(0, 5000, 37), 5000]])
    assert len(whole) > 1000
    assert all(np.array_equal(a, b) for a, b in zip(whole, chunks))
    other = SyntheticMarket(["BTCUSDT", "ETHUSDT"], rate=300, seed=5, start_ms=START)
    assert not np.array_equal(other.advance(START + 5000).price[:100], whole.price[:100])


def test_ids_sizes_and_ticks_look_like_binance():
    m = SyntheticMarket(["BTCUSDT", "ETHUSDT"], rate=2000, seed=0, start_ms=START)
    ev = m.advance(START + 20_000)
    for stream, tick in ((0, 10), (2, 1)):  # aggTrade streams; ticks in 0.01 units
        agg = ev.take(ev.stream == stream)
        assert np.all(np.diff(agg.id) == 1) and agg.id[0] > 10 ** 9
        assert np.all(agg.first_id[1:] == agg.last_id[:-1] + 1)  # f..l runs on
        covered = agg.last_id - agg.first_id + 1
        assert covered.min() == 1 and covered.max() > 3 and 1.5 < covered.mean() < 2.2
        assert np.all(agg.price % tick == 0) and np.all(agg.qty >= 1)
        assert np.all(np.diff(agg.trade_time) >= 0) and agg.trade_time[0] >= START
        singles = ev.take(ev.stream == stream + 1)
        assert np.array_equal(singles.id, np.arange(agg.first_id[0], agg.last_id[-1] + 1))
        assert singles.qty.sum() == agg.qty.sum()
    per_second = (ev.stream % 2 == 0).sum() / 20
    assert 1600 < per_second < 2400  # the requested rate, on average


def test_pair_is_cointegrated_and_arrivals_are_bursty():
    m = SyntheticMarket(["BTCUSDT", "ETHUSDT"], rate=40, seed=1, start_ms=START)
    ev = m.advance(START + 3600_000)  # one hour
    last = {}
    for stream in (0, 2):
        agg = ev.take(ev.stream == stream)
        sec = (agg.trade_time - START) // 1000
        idx = np.searchsorted(sec, np.arange(3600), side="right") - 1  # last trade each second
        last[stream] = np.log(agg.price[np.maximum(idx, 0)] / 100.0)
    btc, eth = last[0][60:], last[2][60:]
    assert 55_000 < np.exp(btc).min() and np.exp(btc).max() < 65_000
    assert coint(eth, btc)[1] < 0.05  # Engle-Granger: the spread is stationary
    ret_corr = np.corrcoef(np.diff(btc[::30]), np.diff(eth[::30]))[0, 1]
    assert ret_corr > 0.5
    counts = np.bincount((ev.trade_time[ev.stream % 2 == 0] - START) // 1000, minlength=3600)
    assert counts.var() / counts.mean() > 2.0  # over-dispersed: Poisson would give 1


def test_market_options_are_validated():
    with pytest.raises(ConfigError, match="rate"):
        SyntheticMarket(["BTCUSDT"], rate=-1, start_ms=START)
    with pytest.raises(ConfigError, match="symbols"):
        SyntheticMarket([], rate=1, start_ms=START)


def test_cli_prints_urls_serves_and_exits_zero_on_sigterm():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "quantkit.cli", "exchange", "--port", "0",
                             "--rate", "100", "--symbols", "BTCUSDT,ETHUSDT",
                             "--status-every", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        while not any("QUANTKIT_WS_URL=" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        hint = next(line for line in lines if "QUANTKIT_WS_URL=" in line).split()
        ws_url = hint[0].split("=", 1)[1]
        assert hint[1].startswith("QUANTKIT_REST_URL=http://127.0.0.1:")
        ws = websocket.create_connection(f"{ws_url}/market/stream?streams=btcusdt@aggTrade",
                                         timeout=10, skip_utf8_validation=True)
        assert orjson.loads(ws.recv())["data"]["s"] == "BTCUSDT"
        ws.close()
        while "connections=" not in (line := proc.stdout.readline()):
            assert line
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "local exchange stopped" in out
