"""Parsers against real recorded Binance messages, malformed input and a round-trip property."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantkit.wire import (
    MalformedMessage,
    Trade,
    parse_message,
    parse_rest_agg_trade,
    parse_rest_trade,
    trade_to_agg_payload,
    trade_to_trade_payload,
)

from conftest import FIXTURES


def _lines(name: str, sep: bytes) -> list[bytes]:
    return [line.split(sep, 1)[1] for line in (FIXTURES / name).read_bytes().splitlines()]


def test_trade_stream_real_messages():
    bodies = _lines("btcusdt_trade_stream.txt", b" ")
    trades = [parse_message(b, recv_time=123) for b in bodies]
    first = trades[0]
    assert first == Trade("BTCUSDT", 5266583935, 1723161256322, 61800.30, 0.006, 5266583935,
                          5266583935, False, 123)
    # ids are consecutive in a real recording, and every field matches the payload
    assert [t.id for t in trades] == list(range(5266583935, 5266583935 + len(bodies)))
    for body, t in zip(bodies, trades):
        d = orjson.loads(body)["data"]
        assert (t.price, t.qty, t.trade_time, t.is_buyer_maker) == (
            float(d["p"]), float(d["q"]), d["T"], d["m"])


def test_aggtrade_stream_real_messages():
    bodies = _lines("aggtrade_stream.txt", b": ")
    trades = [parse_message(b) for b in bodies]
    assert all(t is not None for t in trades)
    ctk = [t for t in trades if t.symbol == "CTKUSDT"]
    assert ctk[0] == Trade("CTKUSDT", 16599292, 1626992741421, 1.011, 10.0, 23961322, 23961322,
                           False, None)
    for body, t in zip(bodies, trades):
        d = orjson.loads(body)["data"]
        assert (t.id, t.first_id, t.last_id) == (d["a"], d["f"], d["l"])
        assert t.last_id - t.first_id + 1 >= 1


def test_other_streams_and_control_messages_are_not_trades():
    for body in _lines("other_streams.txt", b": "):
        assert parse_message(body) is None
    assert parse_message(b'{"result":null,"id":1}') is None


def test_unknown_fields_are_ignored():
    msg = {"e": "aggTrade", "E": 1, "a": 5, "s": "BTCUSDT", "p": "10.5", "q": "2", "f": 7,
           "l": 9, "T": 2, "m": True, "st": "announced-new-field", "X": "MARKET"}
    t = parse_message(orjson.dumps(msg))
    assert (t.id, t.first_id, t.last_id, t.price, t.qty, t.is_buyer_maker) == (5, 7, 9, 10.5, 2.0, True)


@pytest.mark.parametrize("raw, needle", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"stream":"x","data":"oops"}', "'data' is not an object"),
    (b'{"data":{"e":"aggTrade","s":"BTCUSDT","a":1,"p":"1","q":"1","f":1,"T":1,"m":false}}',
     "missing field 'l'"),
    (b'{"data":{"e":"trade","s":"BTCUSDT","t":1,"p":"-1","q":"1","T":1,"m":false}}',
     "positive"),
    (b'{"data":{"e":"trade","s":"BTCUSDT","t":1,"p":"abc","q":"1","T":1,"m":false}}',
     "could not convert"),
    (b'{"data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1,"m":"no"}}', "true/false"),
    (b'{"data":{"e":"aggTrade","s":"BTCUSDT","a":1,"p":"1","q":"1","f":5,"l":4,"T":1,"m":false}}',
     "below first"),
])
def test_malformed_messages_raise_a_clear_error(raw, needle):
    with pytest.raises(MalformedMessage, match=needle):
        parse_message(raw)


def test_rest_rows():
    agg = parse_rest_agg_trade("BTCUSDT", {"a": 26129, "p": "0.01633102", "q": "4.70443515",
                                           "f": 27781, "l": 27781, "T": 1498793709153, "m": True})
    assert agg == Trade("BTCUSDT", 26129, 1498793709153, 0.01633102, 4.70443515, 27781, 27781,
                        True, None)
    tr = parse_rest_trade("BTCUSDT", {"id": 28457, "price": "4.00000100", "qty": "12.00000000",
                                      "quoteQty": "48.00", "time": 1499865549590,
                                      "isBuyerMaker": True})
    assert (tr.id, tr.first_id, tr.last_id, tr.price, tr.qty) == (28457, 28457, 28457, 4.000001, 12.0)
    with pytest.raises(MalformedMessage):
        parse_rest_agg_trade("BTCUSDT", {"a": 1})


trades_st = st.builds(
    lambda sym, i, n, t, p, q, m: Trade(sym, i, t, p, q, i * 3, i * 3 + n, m, None),
    st.sampled_from(["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"]),
    st.integers(0, 2**53), st.integers(0, 50), st.integers(0, 2**42),
    st.floats(1e-8, 1e7, allow_nan=False), st.floats(1e-8, 1e6, allow_nan=False), st.booleans())


@given(trades_st)
def test_payload_round_trip(trade):
    combined = orjson.dumps({"stream": "x@aggTrade", "data": trade_to_agg_payload(trade)})
    assert parse_message(combined) == trade
    single = trade._replace(first_id=trade.id, last_id=trade.id)
    assert parse_message(orjson.dumps(trade_to_trade_payload(single))) == single
