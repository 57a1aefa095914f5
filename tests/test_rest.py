"""The REST client against the local exchange: paging, weight budget, 429 back-off, 418 stop."""
from __future__ import annotations

import time

import pytest

from quantkit.errors import ConfigError, FeedError, RateLimitError
from quantkit.exchange import LocalExchange
from quantkit.rest import RestClient


class FakeSleep:
    """Records requested pauses instead of sleeping (the budget logic is what is tested)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture(scope="module")
def exchange():
    with LocalExchange(rate=2000.0, seed=3) as ex:
        deadline = time.monotonic() + 20
        while len(ex.trades("BTCUSDT")) < 2500 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield ex


def test_fetch_range_pages_and_equals_the_served_trades(exchange):
    served = exchange.trades("BTCUSDT")
    lo, hi = served[10].id, served[2300].id
    client = RestClient(exchange.rest_url)
    got = client.fetch_range("BTCUSDT", "aggTrade", lo, hi)
    assert [t.id for t in got] == list(range(lo, hi + 1))
    assert got == [t._replace(recv_time=None) for t in served[10:2301]]
    assert client.requests == 3  # 1000 + 1000 + 291 rows
    assert client.used_weight == 60  # aggTrades weighs 20, as the exchange's header says


def test_symbols_and_unknown_symbol(exchange):
    client = RestClient(exchange.rest_url)
    assert {"BTCUSDT", "ETHUSDT"} <= client.symbols()
    assert client.weight_limit == 2400  # learnt from exchangeInfo's rateLimits
    with pytest.raises(ConfigError, match="check the symbol"):
        client.agg_trades("NOPEUSDT", from_id=1)
    with pytest.raises(ConfigError, match="not both"):
        client.agg_trades("BTCUSDT", from_id=1, start_time=1)


def test_weight_budget_pauses_until_the_next_minute():
    with LocalExchange(rate=200.0, weight_limit=100) as ex:
        sleep = FakeSleep()
        client = RestClient(ex.rest_url, weight_budget=0.5, sleep=sleep)
        client.exchange_info()  # learns the limit: 100 per minute, so a budget of 50
        assert client.weight_limit == 100
        for _ in range(3):
            client.agg_trades("BTCUSDT", start_time=int(time.time() * 1000) - 60_000,
                              end_time=int(time.time() * 1000))
        # 1 + 20 + 20 fit in 50; the third aggTrades call (61) would not: one pause first
        assert len(sleep.calls) == 1 and 0 < sleep.calls[0] <= 60.1


def test_429_is_waited_out_then_retried(exchange):
    sleep = FakeSleep()
    client = RestClient(exchange.rest_url, sleep=sleep)
    exchange.rate_limit(2, retry_after=3)
    first = exchange.trades("BTCUSDT")[0].id
    rows = client.agg_trades("BTCUSDT", from_id=first, limit=5)
    assert [t.id for t in rows] == list(range(first, first + 5))
    assert sleep.calls == [3.0, 3.0] and client.requests == 3


def test_418_stops_at_once():
    with LocalExchange(rate=200.0, weight_limit=40, ban_seconds=120) as ex:
        client = RestClient(ex.rest_url, weight_budget=1.0, sleep=FakeSleep())
        # The client does not know the limit (no exchangeInfo call), so it goes over: 429,
        # then retrying at once while still over earns the ban, and the client stops there.
        with pytest.raises(RateLimitError, match="418") as err:
            for _ in range(5):
                client.agg_trades("BTCUSDT", start_time=int(time.time() * 1000) - 60_000,
                                  end_time=int(time.time() * 1000))
        assert err.value.retry_after > 60
        assert client.requests == 4  # 20 + 20, then 429, then 418: nothing after the ban


def test_unreachable_exchange_is_a_feed_error():
    client = RestClient("http://127.0.0.1:9", sleep=FakeSleep(), timeout=1)
    with pytest.raises(FeedError, match="failed"):
        client.server_time()
