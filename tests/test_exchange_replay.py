"""Replay through the local exchange: real recordings come out of the socket and REST value for
value (price, quantity, side, times, ids), in every file format the exchange reads."""
from __future__ import annotations

import time
import urllib.request
import zipfile

import orjson
import pytest
import websocket

from quantkit.errors import ConfigError, DataError
from quantkit.exchange import LocalExchange
from quantkit.wire import parse_message, parse_rest_agg_trade, parse_rest_trade

from conftest import FIXTURES, read_recorded_trades

BTC = "hftbacktest_usdm_btcusdt_20240808_trade.txt.gz"
ETH = "hftbacktest_usdm_ethusdt_20240808_trade.txt.gz"
CRYPTOFEED = "cryptofeed_BINANCE_FUTURES.ws.1.0.txt"
CSV_DIR = FIXTURES / "exchange_replay"


def connect(url: str) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=10, skip_utf8_validation=True)


def rest(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return orjson.loads(resp.read())


def test_real_trade_files_replayed_tick_for_tick(binance_data):
    recorded = {"BTCUSDT": read_recorded_trades(binance_data / BTC),
                "ETHUSDT": read_recorded_trades(binance_data / ETH)}
    with LocalExchange(mode="replay", files=[binance_data / BTC, binance_data / ETH],
                       speed=0) as ex:
        ws = connect(f"{ex.ws_url}/market/stream?streams=btcusdt@trade/ethusdt@trade")
        got = {"BTCUSDT": [], "ETHUSDT": []}
        for _ in range(sum(len(v) for v in recorded.values())):
            msg = orjson.loads(ws.recv())
            assert msg["stream"] == msg["data"]["s"].lower() + "@trade"
            got[msg["data"]["s"]].append(msg["data"])
        ws.close()
        for symbol, payloads in recorded.items():
            # Every payload exactly as recorded: strings, ids, E, T, X, m, field order.
            assert got[symbol] == payloads
            assert all(list(a) == list(b) for a, b in zip(got[symbol], payloads))
            expected = [parse_message(orjson.dumps(p)) for p in payloads]
            assert ex.trades(symbol) == expected
        # REST serves the same trades (historicalTrades: the files are @trade recordings).
        first = recorded["BTCUSDT"][0]["t"]
        rows = rest(ex.rest_url, f"/fapi/v1/historicalTrades?symbol=BTCUSDT&fromId={first + 1000}"
                                 "&limit=500")
        assert [parse_rest_trade("BTCUSDT", r) for r in rows] == \
               [parse_message(orjson.dumps(p)) for p in recorded["BTCUSDT"][1000:1500]]
        assert [(r["price"], r["qty"]) for r in rows[:3]] == \
               [(p["p"], p["q"]) for p in recorded["BTCUSDT"][1000:1003]]
        assert rest(ex.rest_url, "/fapi/v1/aggTrades?symbol=BTCUSDT") == []  # no aggTrades here
        info = rest(ex.rest_url, "/fapi/v1/exchangeInfo")
        assert info["quantkitOrigin"] == "replay"
        assert {s["symbol"] for s in info["symbols"]} == {"BTCUSDT", "ETHUSDT"}
        assert ex.feed_done.wait(5)
        assert ex.stream_kind() == "trade"


def test_trade_files_are_not_served_on_aggtrade(binance_data):
    with LocalExchange(mode="replay", files=[binance_data / BTC], speed=0) as ex:
        agg = connect(f"{ex.ws_url}/market/stream?streams=btcusdt@aggTrade")
        trade = connect(f"{ex.ws_url}/market/ws/btcusdt@trade")
        assert orjson.loads(trade.recv())["t"] == 5266583935
        agg.settimeout(0.5)
        with pytest.raises(websocket.WebSocketTimeoutException):
            agg.recv()
        agg.close()
        trade.close()


def test_cryptofeed_aggtrades_replayed_in_real_time(binance_data):
    recorded = []
    for line in (binance_data / CRYPTOFEED).read_bytes().splitlines():
        if b"@aggTrade" in line and b": {" in line:
            recorded.append(orjson.loads(line.split(b": ", 1)[1])["data"])
    streams = "/".join(sorted({d["s"].lower() + "@aggTrade" for d in recorded}))
    span = (max(d["T"] for d in recorded) - min(d["T"] for d in recorded)) / 1000
    speed = 20.0
    with LocalExchange(mode="replay", files=[binance_data / CRYPTOFEED], speed=speed) as ex:
        assert ex.stream_kind() == "aggTrade"
        ws = connect(f"{ex.ws_url}/market/stream?streams={streams}")
        got = [orjson.loads(ws.recv())["data"]]
        t0 = time.monotonic()
        got += [orjson.loads(ws.recv())["data"] for _ in range(len(recorded) - 1)]
        elapsed = time.monotonic() - t0
        ws.close()
    by_symbol = lambda rows: {s: [r for r in rows if r["s"] == s] for s in {r["s"] for r in rows}}
    assert by_symbol(got) == by_symbol(recorded)  # each symbol's payloads exactly as recorded
    assert 0.6 * span / speed < elapsed < 2.0 * span / speed + 0.5  # paced by trade time


def test_csv_archives_plain_and_zipped(tmp_path):
    trades_csv = CSV_DIR / "BTCUSDT-trades-2024-08-08.csv"
    zipped = tmp_path / "CTKUSDT-aggTrades-2021-07-22.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.write(CSV_DIR / "CTKUSDT-aggTrades-2021-07-22.csv", "CTKUSDT-aggTrades-2021-07-22.csv")
    with LocalExchange(mode="replay", files=[trades_csv, zipped], speed=0) as ex:
        assert ex.symbols == ["BTCUSDT", "CTKUSDT"]
        ws = connect(f"{ex.ws_url}/market/stream?streams=btcusdt@trade/ctkusdt@aggTrade")
        msgs = [orjson.loads(ws.recv())["data"] for _ in range(300 + 38)]
        ws.close()
        rows = [line.split(",") for line in trades_csv.read_text().splitlines()]
        btc = [m for m in msgs if m["s"] == "BTCUSDT"]
        assert [(m["t"], m["p"], m["q"], m["T"], m["m"]) for m in btc] == \
               [(int(r[0]), r[1], r[2], int(r[4]), r[5] == "true") for r in rows]
        agg_rows = [line.split(",") for line in
                    (CSV_DIR / "CTKUSDT-aggTrades-2021-07-22.csv").read_text().splitlines()[1:]]
        ctk = [m for m in msgs if m["s"] == "CTKUSDT"]
        assert [(m["a"], m["p"], m["q"], m["f"], m["l"], m["T"], m["m"]) for m in ctk] == \
               [(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), int(r[5]), r[6] == "true")
                for r in agg_rows]
        page = rest(ex.rest_url, f"/fapi/v1/aggTrades?symbol=CTKUSDT&fromId={agg_rows[5][0]}"
                                 "&limit=3")
        assert [parse_rest_agg_trade("CTKUSDT", r) for r in page] == ex.trades("CTKUSDT")[5:8]
        info = rest(ex.rest_url, "/fapi/v1/exchangeInfo")
        filters = {s["symbol"]: {f["filterType"]: f for f in s["filters"]} for s in info["symbols"]}
        assert filters["CTKUSDT"]["PRICE_FILTER"]["tickSize"] == "0.00001"
        assert filters["CTKUSDT"]["LOT_SIZE"]["stepSize"] == "1"


def test_replay_waits_for_a_subscriber(binance_data):
    with LocalExchange(mode="replay", files=[binance_data / BTC], speed=0) as ex:
        time.sleep(0.3)
        assert ex.trades("BTCUSDT") == []  # nothing played to nobody
        ws = connect(f"{ex.ws_url}/market/ws/btcusdt@trade")
        assert orjson.loads(ws.recv())["t"] == 5266583935
        ws.close()


def test_replay_input_errors(tmp_path, binance_data):
    with pytest.raises(ConfigError, match="not found"):
        LocalExchange(mode="replay", files=[tmp_path / "missing.csv"]).start()
    bad = tmp_path / "trades.csv"
    bad.write_text("1,2.0,3.0,6.0,1000,true\n")
    with pytest.raises(ConfigError, match="symbol"):
        LocalExchange(mode="replay", files=[bad]).start()
    empty = tmp_path / "depth.txt"
    empty.write_text('1 {"stream":"btcusdt@depth","data":{"e":"depthUpdate"}}\n')
    with pytest.raises(DataError, match="no aggTrade or trade"):
        LocalExchange(mode="replay", files=[empty]).start()
    with pytest.raises(ConfigError, match="DOGEUSDT"):
        LocalExchange(mode="replay", files=[binance_data / BTC], symbols=["DOGEUSDT"]).start()


def test_klines_of_replayed_trades_equal_binance_klines(binance_data):
    """Bars served by /fapi/v1/klines from the replayed trades are Binance's own 1m klines,
    string for string (minutes 23:55..23:59 are fully covered by the recording)."""
    archive = binance_data / "BTCUSDT-um-1m-klines-2024-08-08T2330_2024-08-09T0030.csv"
    lines = archive.read_text().splitlines()[1:]
    binance = {int(r.split(",")[0]): r.split(",") for r in lines}
    with LocalExchange(mode="replay", files=[binance_data / BTC], speed=0) as ex:
        ws = connect(f"{ex.ws_url}/market/ws/btcusdt@trade")
        for _ in range(21313):
            ws.recv()
        ws.close()
        bars = rest(ex.rest_url, "/fapi/v1/klines?symbol=BTCUSDT&interval=1m"
                                 "&startTime=1723161300000&endTime=1723161599999")
    assert [b[0] for b in bars] == [1723161300000 + 60_000 * i for i in range(5)]
    for bar in bars:
        assert [str(v) for v in bar] == binance[bar[0]]
