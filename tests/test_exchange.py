"""The local exchange's WebSocket side over real loopback sockets: paths, payloads, control
messages, keep-alive, client limits and faults, each checked against what Binance does."""
from __future__ import annotations

import base64
import os
import socket
import threading
import time

import orjson
import pytest
import websocket

from quantkit.errors import ConfigError
from quantkit.exchange import LocalExchange
from quantkit.wire import MalformedMessage, parse_message, trade_to_agg_payload, \
    trade_to_trade_payload

AGG_KEYS = ["e", "E", "a", "s", "p", "q", "f", "l", "T", "m"]
TRADE_KEYS = ["e", "E", "T", "s", "t", "p", "q", "X", "m"]


def connect(url: str, timeout: float = 5.0) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=timeout, skip_utf8_validation=True)


def recv_json(ws: websocket.WebSocket, n: int) -> list[dict]:
    return [orjson.loads(ws.recv()) for _ in range(n)]


def nothing_arrives(ws: websocket.WebSocket, seconds: float) -> bool:
    ws.settimeout(seconds)
    try:
        ws.recv()
    except websocket.WebSocketTimeoutException:
        return True
    return False


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(0.02)


@pytest.fixture
def exchange():
    with LocalExchange(rate=300.0, seed=3) as ex:
        yield ex


def test_combined_stream_payloads_are_binance_aggtrades(exchange):
    ws = connect(f"{exchange.ws_url}/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade")
    msgs = recv_json(ws, 120)
    ws.close()
    assert {m["stream"] for m in msgs} == {"btcusdt@aggTrade", "ethusdt@aggTrade"}
    served = {s: {t.id: t for t in exchange.trades(s)} for s in ("BTCUSDT", "ETHUSDT")}
    last = {}
    for m in msgs:
        assert list(m) == ["stream", "data"]
        data = m["data"]
        assert list(data) == AGG_KEYS  # Binance's field order
        assert m["stream"] == data["s"].lower() + "@aggTrade"
        trade = served[data["s"]][data["a"]]
        # Exactly the wire module's payload, with Binance's fixed-precision number strings.
        expected = trade_to_agg_payload(trade)
        assert {**data, "p": float(data["p"]), "q": float(data["q"])} == \
               {**expected, "p": float(expected["p"]), "q": float(expected["q"])}
        assert len(data["p"].split(".")[1]) == 2 and len(data["q"].split(".")[1]) == 3
        assert parse_message(orjson.dumps(m))._replace(recv_time=None) == trade
        if data["s"] in last:  # ids and trade-id ranges run on without a hole
            prev = last[data["s"]]
            assert data["a"] == prev["a"] + 1 and data["f"] == prev["l"] + 1
        last[data["s"]] = data
    btc_ticks = {round(float(m["data"]["p"]) * 10) % 1 for m in msgs if m["data"]["s"] == "BTCUSDT"}
    assert btc_ticks == {0}  # BTCUSDT trades on a 0.10 tick


def test_raw_trade_stream_splits_each_aggtrade(exchange):
    ws = connect(f"{exchange.ws_url}/market/ws/btcusdt@trade")
    msgs = recv_json(ws, 60)
    ws.close()
    assert all(list(d) == TRADE_KEYS and d["X"] == "MARKET" for d in msgs)
    ids = [d["t"] for d in msgs]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    singles = {t.id: t for t in exchange.trades("BTCUSDT", "trade")}
    for d in msgs:
        expected = trade_to_trade_payload(singles[d["t"]])
        assert {**d, "p": float(d["p"]), "q": float(d["q"])} == \
               {**expected, "p": float(expected["p"]), "q": float(expected["q"])}
    # Each aggregate covers trades f..l at its price and side; quantities add up.
    for agg in exchange.trades("BTCUSDT")[:50]:
        parts = [singles[i] for i in range(agg.first_id, agg.last_id + 1)]
        assert {(p.price, p.is_buyer_maker, p.trade_time) for p in parts} == \
               {(agg.price, agg.is_buyer_maker, agg.trade_time)}
        assert sum(round(p.qty * 1000) for p in parts) == round(agg.qty * 1000)


def test_subscribe_unsubscribe_and_list(exchange):
    ws = connect(f"{exchange.ws_url}/market/stream")
    assert nothing_arrives(ws, 0.3)  # no streams yet
    ws.settimeout(5)
    ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 1}))
    assert orjson.loads(ws.recv()) == {"result": None, "id": 1}
    assert orjson.loads(ws.recv())["stream"] == "ethusdt@aggTrade"
    ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
    while (reply := orjson.loads(ws.recv())).get("id") != 2:
        pass
    assert reply == {"result": ["ethusdt@aggTrade"], "id": 2}
    ws.send(orjson.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 3}))
    while (reply := orjson.loads(ws.recv())).get("id") != 3:
        assert reply["stream"] == "ethusdt@aggTrade"
    assert reply == {"result": None, "id": 3}
    assert nothing_arrives(ws, 0.3)
    ws.settimeout(5)
    ws.send(b"not json")
    assert orjson.loads(ws.recv())["error"]["code"] == 3
    ws.send(orjson.dumps({"method": "SUBSCRIBEX", "params": [], "id": 4}))
    err = orjson.loads(ws.recv())
    assert err["id"] == 4 and err["error"]["code"] == 2 and "SUBSCRIBEX" in err["error"]["msg"]
    ws.close()


@pytest.mark.parametrize(("path", "name"), [
    ("/stream?streams=btcusdt@aggTrade", "ethusdt@aggTrade"),
    ("/ws/btcusdt@aggTrade", "ethusdt@aggTrade"),
    ("/public/stream?streams=btcusdt@aggTrade", "ethusdt@trade"),
    ("/market/stream?streams=BTCUSDT@aggTrade", "ETHUSDT@aggTrade"),
    ("/market/stream?streams=dogeusdt@aggTrade", "btcusdt@aggtrade"),
])
def test_silent_paths_ack_but_deliver_nothing(exchange, path, name):
    """The legacy unrouted paths, /public for trades, upper-case or misspelt names and unknown
    symbols: the connection opens, SUBSCRIBE is acknowledged, then nothing comes (Binance's
    trap)."""
    live = connect(f"{exchange.ws_url}/market/ws/btcusdt@aggTrade")
    ws = connect(exchange.ws_url + path)
    ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": [name], "id": 9}))
    assert orjson.loads(ws.recv()) == {"result": None, "id": 9}
    assert nothing_arrives(ws, 0.5)
    assert len(recv_json(live, 20)) == 20  # meanwhile the routed path delivers
    ws.close()
    live.close()


def raw_handshake(port: int, path: str) -> socket.socket:
    """A client that upgrades and then never reads or answers anything (no pongs)."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    return sock


def test_pings_and_a_client_without_pongs_is_dropped():
    with LocalExchange(rate=20.0, ping_interval=0.1, pong_timeout=0.6) as ex:
        ws = connect(f"{ex.ws_url}/market/stream")
        pings = []

        def read() -> None:  # websocket-client answers each ping with a pong while reading
            try:
                while True:
                    opcode, _ = ws.recv_data_frame(control_frame=True)
                    if opcode == websocket.ABNF.OPCODE_PING:
                        pings.append(time.monotonic())
            except (websocket.WebSocketException, OSError):
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        mute = raw_handshake(ex.port, "/market/stream")
        opened = time.monotonic()
        wait_for(lambda: ex.connection_count() == 2)
        wait_for(lambda: ex.connection_count() == 1, timeout=5)  # the mute one is dropped
        assert time.monotonic() - opened > 0.5
        mute.settimeout(5)
        with pytest.raises(ConnectionResetError):  # dropped abruptly, after unanswered pings
            while mute.recv(65536):
                pass
        time.sleep(1.0)  # the ponging client outlives its pong timeout
        assert ex.connection_count() == 1
        assert len(pings) >= 8 and max(b - a for a, b in zip(pings, pings[1:])) < 0.5
        ws.close()
        reader.join(5)


def test_connections_closed_at_max_age():
    with LocalExchange(rate=50.0, max_connection_age=0.5) as ex:
        ws = connect(f"{ex.ws_url}/market/stream?streams=btcusdt@aggTrade")
        start = time.monotonic()
        while (frame := ws.recv_data_frame(control_frame=True))[0] != websocket.ABNF.OPCODE_CLOSE:
            pass
        assert 0.4 < time.monotonic() - start < 3.0
        assert int.from_bytes(frame[1].data[:2], "big") == 1000
        wait_for(lambda: ex.connection_count() == 0)


def test_more_than_ten_client_messages_a_second_disconnects(exchange):
    ws = connect(f"{exchange.ws_url}/market/stream")
    for i in range(12):
        ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
    replies = []
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        replies.append(orjson.loads(frame.data))
    assert int.from_bytes(frame.data[:2], "big") == 1008  # policy violation
    assert [r["id"] for r in replies] == list(range(10))  # the 11th message broke the limit
    wait_for(lambda: exchange.connection_count() == 0)


def test_fault_drop_connections_sends_no_close_frame(exchange):
    a = connect(f"{exchange.ws_url}/market/stream?streams=btcusdt@aggTrade")
    b = connect(f"{exchange.ws_url}/market/ws/ethusdt@aggTrade")
    recv_json(a, 3)
    assert exchange.connection_count() == 2
    assert exchange.drop_connections() == 2
    for ws in (a, b):
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            while True:
                opcode, _ = ws.recv_data_frame(control_frame=True)
                assert opcode != websocket.ABNF.OPCODE_CLOSE  # abrupt: never a close frame
    wait_for(lambda: exchange.connection_count() == 0)


def test_fault_malformed_frames(exchange):
    ws = connect(f"{exchange.ws_url}/market/stream?streams=btcusdt@aggTrade")
    recv_json(ws, 2)
    exchange.send_malformed(3)
    bad = 0
    for _ in range(200):
        raw = ws.recv()
        try:
            parse_message(raw)
        except MalformedMessage:
            bad += 1
            if bad == 3:
                break
    assert bad == 3
    assert orjson.loads(ws.recv())["data"]["e"] == "aggTrade"  # and the feed goes on
    ws.close()


def test_fault_silence_stalls_open_connections_only(exchange):
    ws = connect(f"{exchange.ws_url}/market/stream?streams=btcusdt@aggTrade")
    before = recv_json(ws, 3)[-1]["data"]["a"]
    assert exchange.go_silent(0.6) == 1
    t0 = time.monotonic()
    ws.settimeout(0.3)
    try:  # what was already in flight
        while True:
            before = orjson.loads(ws.recv())["data"]["a"]
    except websocket.WebSocketTimeoutException:
        pass
    fresh = connect(f"{exchange.ws_url}/market/stream?streams=btcusdt@aggTrade")
    assert len(recv_json(fresh, 5)) == 5  # a reconnect is served normally
    ws.settimeout(5)
    after = orjson.loads(ws.recv())["data"]["a"]
    assert time.monotonic() - t0 >= 0.5
    assert after - before > 5  # what was made meanwhile never came: a gap to backfill
    assert [t.id for t in exchange.trades("BTCUSDT") if before < t.id < after] == \
           list(range(before + 1, after))
    ws.close()
    fresh.close()


def test_fault_skip_messages_makes_a_gap_of_exactly_n(exchange):
    ws = connect(f"{exchange.ws_url}/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade")
    first = recv_json(ws, 5)
    exchange.skip_messages(7)
    rest = recv_json(ws, 60)
    last = {}
    missing = 0
    for m in first + rest:
        d = m["data"]
        if d["s"] in last:
            missing += d["a"] - last[d["s"]] - 1
        last[d["s"]] = d["a"]
    assert missing == 7
    assert exchange.connection_count() == 1
    ws.close()


def test_unknown_fault_is_refused(exchange):
    with pytest.raises(ConfigError, match="unknown fault"):
        exchange.fault("explode")


def test_spawned_exchange_is_driven_over_http():
    with LocalExchange.spawn(rate=100.0, seed=1) as proc:
        ws = connect(f"{proc.ws_url}/market/stream?streams=btcusdt@aggTrade")
        assert recv_json(ws, 2)[0]["data"]["s"] == "BTCUSDT"
        assert proc.connection_count() == 1
        assert proc.drop_connections() == 1
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            while True:
                ws.recv()
        status = proc.status()
        assert status["origin"] == "simulated"
        assert status["trades"]["BTCUSDT"]["aggTrade"]["count"] > 0
    assert proc.process.poll() is not None  # stopped


def test_invalid_options_are_refused():
    with pytest.raises(ConfigError, match="mode"):
        LocalExchange(mode="live")
    with pytest.raises(ConfigError, match="files"):
        LocalExchange(mode="replay")
    with pytest.raises(ConfigError, match="rate"):
        LocalExchange(rate=0)


def test_burst_sends_every_pregenerated_trade_to_each_subscriber():
    with LocalExchange(burst=3000, seed=2) as ex:
        served = {s: ex.trades(s) for s in ("BTCUSDT", "ETHUSDT")}
        assert sum(len(v) for v in served.values()) == 3000  # all generated before anyone came
        assert max(t.trade_time for v in served.values() for t in v) <= time.time() * 1000
        runs = []
        for _ in range(2):  # every new subscriber gets the whole burst, then nothing
            ws = connect(f"{ex.ws_url}/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade")
            runs.append([parse_message(ws.recv())._replace(recv_time=None) for _ in range(3000)])
            assert nothing_arrives(ws, 0.3)
            ws.close()
        assert runs[0] == runs[1]
        for s, trades in served.items():
            assert [t for t in runs[0] if t.symbol == s] == trades
        raw = connect(f"{ex.ws_url}/market/ws/ethusdt@aggTrade")  # other subscriptions too
        assert parse_message(raw.recv())._replace(recv_time=None) == served["ETHUSDT"][0]
        raw.close()
