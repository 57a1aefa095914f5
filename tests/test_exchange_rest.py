"""The local exchange's REST side: Binance's endpoints, errors and request-weight limits."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson
import pytest
import websocket

from quantkit.exchange import LocalExchange
from quantkit.wire import parse_message, parse_rest_agg_trade, parse_rest_trade


def get(base: str, path: str) -> tuple[int, dict, object]:
    """(status, headers with lower-case names, JSON body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            return resp.status, _lower(resp.headers), orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers), orjson.loads(exc.read())


def _lower(headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.fixture
def exchange():
    with LocalExchange(rate=400.0, seed=5) as ex:
        yield ex


def test_aggtrades_paged_by_fromid_equal_the_stream(exchange):
    ws = websocket.create_connection(
        f"{exchange.ws_url}/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade",
        timeout=5, skip_utf8_validation=True)
    streamed = [parse_message(ws.recv())._replace(recv_time=None) for _ in range(400)]
    ws.close()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = [t for t in streamed if t.symbol == symbol]
        fetched, from_id = [], mine[0].id
        while len(fetched) < len(mine):
            status, headers, rows = get(exchange.rest_url, f"/fapi/v1/aggTrades?symbol={symbol}"
                                        f"&fromId={from_id}&limit=50")
            assert status == 200 and 0 < len(rows) <= 50
            assert list(rows[0]) == ["a", "p", "q", "f", "l", "T", "m"]
            fetched += [parse_rest_agg_trade(symbol, r) for r in rows]
            from_id = rows[-1]["a"] + 1
        assert fetched[:len(mine)] == mine  # the same trades, value for value


def test_aggtrades_time_window_and_recent(exchange):
    time.sleep(0.3)
    trades = exchange.trades("BTCUSDT")
    lo, hi = trades[10].trade_time, trades[40].trade_time
    _, _, rows = get(exchange.rest_url, f"/fapi/v1/aggTrades?symbol=BTCUSDT&startTime={lo}"
                     f"&endTime={hi}&limit=1000")
    want = [t for t in exchange.trades("BTCUSDT") if lo <= t.trade_time <= hi]
    assert [r["a"] for r in rows] == [t.id for t in want]
    _, _, rows = get(exchange.rest_url, "/fapi/v1/aggTrades?symbol=BTCUSDT&limit=5")
    ids = [r["a"] for r in rows]
    assert ids == sorted(ids) and len(ids) == 5  # the newest five, ascending
    assert ids[-1] >= trades[-1].id
    _, _, rows = get(exchange.rest_url, "/fapi/v1/aggTrades?symbol=BTCUSDT")
    assert len(rows) == min(500, len(exchange.trades("BTCUSDT")))


def test_historical_trades_match_the_trade_stream(exchange):
    ws = websocket.create_connection(f"{exchange.ws_url}/market/ws/ethusdt@trade", timeout=5,
                                     skip_utf8_validation=True)
    streamed = [parse_message(ws.recv())._replace(recv_time=None) for _ in range(30)]
    ws.close()
    status, _, rows = get(exchange.rest_url, "/fapi/v1/historicalTrades?symbol=ETHUSDT"
                          f"&fromId={streamed[0].id}&limit=30")
    assert status == 200
    assert list(rows[0]) == ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker"]
    assert [parse_rest_trade("ETHUSDT", r) for r in rows] == streamed
    for r in rows:  # quoteQty is the exact product of the decimal strings
        assert abs(float(r["quoteQty"]) - float(r["price"]) * float(r["qty"])) < 1e-6
    time.sleep(0.6)  # let more than 100 trades happen
    _, _, rows = get(exchange.rest_url, "/fapi/v1/historicalTrades?symbol=ETHUSDT")
    ids = [r["id"] for r in rows]
    assert len(ids) == 100 and ids == list(range(ids[0], ids[0] + 100))  # the newest 100


@pytest.mark.parametrize(("query", "code"), [
    ("/fapi/v1/aggTrades?symbol=BTCUSD", -1121),
    ("/fapi/v1/aggTrades?symbol=btcusdt", -1121),
    ("/fapi/v1/aggTrades", -1102),
    ("/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=1&startTime=1", -1128),
    ("/fapi/v1/aggTrades?symbol=BTCUSDT&startTime=0&endTime=3600000", -1127),
    ("/fapi/v1/aggTrades?symbol=BTCUSDT&limit=1001", -1130),
    ("/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=abc", -1100),
    ("/fapi/v1/historicalTrades?symbol=BTCUSDT&limit=501", -1130),
    ("/fapi/v1/klines?symbol=BTCUSDT&interval=7m", -1120),
])
def test_binance_errors(exchange, query, code):
    status, headers, body = get(exchange.rest_url, query)
    assert (status, body["code"]) == (400, code)
    assert isinstance(body["msg"], str) and body["msg"]
    assert int(headers["x-mbx-used-weight-1m"]) > 0  # even errors cost weight


def test_exchange_info_and_time(exchange):
    status, headers, info = get(exchange.rest_url, "/fapi/v1/exchangeInfo")
    assert status == 200 and headers["x-mbx-used-weight-1m"] == "1"
    assert info["quantkitOrigin"] == "simulated"
    assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
            "limit": 2400} in info["rateLimits"]
    symbols = {s["symbol"]: s for s in info["symbols"]}
    assert set(symbols) == {"BTCUSDT", "ETHUSDT"}
    filters = {s: {f["filterType"]: f for f in v["filters"]} for s, v in symbols.items()}
    assert filters["BTCUSDT"]["PRICE_FILTER"]["tickSize"] == "0.10"
    assert filters["ETHUSDT"]["PRICE_FILTER"]["tickSize"] == "0.01"
    assert filters["BTCUSDT"]["LOT_SIZE"]["stepSize"] == "0.001"
    assert all(s["status"] == "TRADING" for s in symbols.values())
    now = int(time.time() * 1000)
    _, headers, body = get(exchange.rest_url, "/fapi/v1/time")
    assert abs(body["serverTime"] - now) < 5000
    assert headers["x-mbx-used-weight-1m"] == "2"
    assert get(exchange.rest_url, "/fapi/v1/nope")[0] == 404


def test_429_then_418_ban():
    with LocalExchange(rate=50.0, weight_limit=45, ban_seconds=30) as ex:
        q = "/fapi/v1/aggTrades?symbol=BTCUSDT&limit=1"
        weights = [int(get(ex.rest_url, q)[1]["x-mbx-used-weight-1m"]) for _ in range(2)]
        assert weights == [20, 40]
        status, headers, body = get(ex.rest_url, q)  # 60 > 45: back off
        assert (status, body["code"]) == (429, -1003)
        assert 1 <= int(headers["retry-after"]) <= 60
        assert headers["x-mbx-used-weight-1m"] == "40"
        status, headers, body = get(ex.rest_url, "/fapi/v1/time")  # cheap enough: still fits
        assert status == 200
        status, headers, body = get(ex.rest_url, q)  # ignored the 429: banned
        assert (status, body["code"]) == (418, -1003) and "banned until" in body["msg"]
        assert 29 <= int(headers["retry-after"]) <= 30
        assert get(ex.rest_url, "/fapi/v1/time")[0] == 418  # everything, while banned


def test_forced_rate_limit_fault(exchange):
    exchange.rate_limit(2, retry_after=3)
    answers = [get(exchange.rest_url, "/fapi/v1/time") for _ in range(3)]
    assert [a[0] for a in answers] == [429, 429, 200]
    assert answers[0][1]["retry-after"] == "3"


def test_fault_endpoint(exchange):
    req = urllib.request.Request(f"{exchange.rest_url}/quantkit/fault", method="POST",
                                 data=orjson.dumps({"fault": "rate_limit", "n": 1}))
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert orjson.loads(resp.read())["ok"] is True
    assert get(exchange.rest_url, "/fapi/v1/time")[0] == 429
    req = urllib.request.Request(f"{exchange.rest_url}/quantkit/fault", method="POST",
                                 data=orjson.dumps({"fault": "explode"}))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
    status, _, body = get(exchange.rest_url, "/quantkit/status")
    assert status == 200 and body["rest_requests"] == 1 and body["origin"] == "simulated"


def test_tapes_are_bounded():
    with LocalExchange(rate=2000.0, max_trades=200) as ex:
        time.sleep(0.8)
        kept = ex.trades("BTCUSDT")
        assert 200 <= len(kept) <= 300 + 200
        ids = [t.id for t in kept]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # the newest, contiguous
        _, _, rows = get(ex.rest_url, "/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=0&limit=3")
        assert rows[0]["a"] >= ids[0]  # forgotten trades: the oldest still kept comes first
