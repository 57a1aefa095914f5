"""Settings: defaults, then environment, then arguments; validation with actionable messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from quantkit.config import BINANCE_REST_URL, BINANCE_WS_URL, Settings, suggest_symbol
from quantkit.errors import ConfigError


def test_defaults_point_at_real_binance():
    s = Settings.load(env={})
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.stream == "aggTrade"
    assert (s.ws_url, s.rest_url) == (BINANCE_WS_URL, BINANCE_REST_URL)
    assert s.is_binance
    assert s.stream_url() == ("wss://fstream.binance.com/market/stream?"
                              "streams=btcusdt@aggTrade/ethusdt@aggTrade")


def test_environment_then_arguments_win():
    env = {"QUANTKIT_SYMBOLS": "solusdt", "QUANTKIT_DB": "/tmp/x.db",
           "QUANTKIT_WS_URL": "ws://127.0.0.1:9999", "QUANTKIT_REST_URL": "http://127.0.0.1:9999/",
           "QUANTKIT_STREAM": "trade"}
    s = Settings.load(env=env)
    assert s.symbols == ("SOLUSDT",)
    assert s.db == Path("/tmp/x.db")
    assert s.rest_url == "http://127.0.0.1:9999"  # trailing slash normalised away
    assert s.stream_url() == "ws://127.0.0.1:9999/market/stream?streams=solusdt@trade"
    assert not s.is_binance
    s2 = Settings.load(env=env, symbols="btcusdt, ethusdt", ws_path="/public", stream=None)
    assert s2.symbols == ("BTCUSDT", "ETHUSDT")
    assert s2.stream == "trade"  # None means "not given": the environment stands
    assert s2.stream_url().startswith("ws://127.0.0.1:9999/public/stream?")


@pytest.mark.parametrize("overrides, needle", [
    ({"symbols": ""}, "at least one symbol"),
    ({"symbols": "BTC-USDT"}, "not a Binance futures symbol"),
    ({"symbols": "BTCUSDT,btcusdt"}, "more than once"),
    ({"stream": "kline"}, "aggTrade, trade"),
    ({"ws_url": "https://fstream.binance.com"}, "not a base URL"),
    ({"ws_url": "wss://fstream.binance.com/stream"}, "has a path"),
    ({"rest_url": "fapi.binance.com"}, "not a base URL"),
    ({"batch_rows": 0}, "batch_rows"),
    ({"silence_timeout": -1}, "silence_timeout"),
    ({"colour": "red"}, "unknown setting"),
])
def test_bad_settings_say_what_to_do(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings.load(env={}, **overrides)


def test_unknown_symbol_suggestion():
    msg = suggest_symbol("BTCUSD", {"BTCUSDT", "ETHUSDT", "BTCDOMUSDT"})
    assert "unknown symbol 'BTCUSD'" in msg and "'BTCUSDT'" in msg
    assert "Did you mean" not in suggest_symbol("ZZZZ", {"BTCUSDT"})
