"""REST backfill of aggregate trades, against the local exchange on 127.0.0.1."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from quantkit.archive import import_archives
from quantkit.backfill import backfill, parse_when
from quantkit.cli import main
from quantkit.errors import ConfigError, StorageError
from quantkit.exchange import LocalExchange
from quantkit.rest import RestClient
from quantkit.storage import TickStore
from research_data import build_archives


@pytest.fixture(scope="module")
def exchange():
    # A burst pre-generates its trades and nothing else: the tape stays fixed for the module.
    with LocalExchange(burst=6000, seed=5) as ex:
        yield ex


@pytest.fixture(scope="module")
def tape(exchange):
    trades = exchange.trades("BTCUSDT", "aggTrade")
    assert len(trades) > 3000  # several pages of 1000
    return trades


def stored(db) -> pd.DataFrame:
    with TickStore(db) as store:
        return store.ticks("BTCUSDT")


def test_full_range_equals_what_the_exchange_served(exchange, tape, tmp_path):
    db = tmp_path / "bf.db"
    report = backfill("btcusdt", tape[0].trade_time, tape[-1].trade_time + 1, db=db,
                      rest_url=exchange.rest_url, progress=False)
    assert (report.rows_fetched, report.rows_new) == (len(tape), len(tape))
    assert (report.first_id, report.last_id) == (tape[0].id, tape[-1].id)
    pages = -(-len(tape) // 1000)
    assert report.requests == 3 + pages  # exchangeInfo, time, first-id window, pages
    ticks = stored(db)
    assert ticks["id"].tolist() == [t.id for t in tape]
    assert ticks.index.as_unit("ms").asi8.tolist() == [t.trade_time for t in tape]
    assert ticks["price"].tolist() == [t.price for t in tape]
    assert ticks["qty"].tolist() == [t.qty for t in tape]
    assert ticks["first_id"].tolist() == [t.first_id for t in tape]
    assert ticks["last_id"].tolist() == [t.last_id for t in tape]
    assert ticks["is_buyer_maker"].tolist() == [t.is_buyer_maker for t in tape]
    with TickStore(db) as store:
        assert store.meta()["origin"] == "simulated"  # exchangeInfo's quantkitOrigin
        assert store.meta()["stream:BTCUSDT"] == "aggTrade"
        events = store.events()
    assert events["kind"].tolist() == ["backfill"]
    detail = json.loads(events["detail"].iloc[0])
    assert detail["rows_new"] == len(tape) and detail["rest_url"] == exchange.rest_url


def test_sub_range_is_exact_and_rerun_adds_nothing(exchange, tape, tmp_path):
    db = tmp_path / "bf.db"
    lo, hi = tape[1200].trade_time, tape[2600].trade_time
    want = [t.id for t in tape if lo <= t.trade_time < hi]
    first = backfill("BTCUSDT", lo, hi, db=db, rest_url=exchange.rest_url, progress=False)
    again = backfill("BTCUSDT", pd.Timestamp(lo, unit="ms", tz="UTC").isoformat(),
                     pd.Timestamp(hi, unit="ms", tz="UTC").isoformat(), db=db,
                     rest_url=exchange.rest_url, progress=False)
    assert stored(db)["id"].tolist() == want
    assert (first.rows_new, again.rows_fetched, again.rows_new) == (len(want), len(want), 0)


def test_429_is_waited_out(exchange, tape, tmp_path):
    exchange.rate_limit(1, retry_after=1)
    report = backfill("BTCUSDT", tape[0].trade_time, tape[-1].trade_time + 1,
                      db=tmp_path / "bf.db", rest_url=exchange.rest_url, progress=False)
    assert report.rows_new == len(tape)
    assert report.throttled_s >= 1.0


def test_client_pauses_before_passing_its_weight_budget(tmp_path):
    pauses: list[float] = []
    # 200 weight/min; the client may use half: exchangeInfo 1 + time 1 + 5 calls of 20 = 102.
    with LocalExchange(burst=6000, seed=1, weight_limit=200) as ex:
        trades = ex.trades("BTCUSDT", "aggTrade")
        client = RestClient(ex.rest_url, sleep=pauses.append)
        report = backfill("BTCUSDT", trades[0].trade_time, trades[-1].trade_time + 1,
                          db=tmp_path / "bf.db", rest_url=ex.rest_url, progress=False,
                          client=client)
    assert report.rows_new == len(trades)
    assert client.weight_limit == 200
    assert len(pauses) == 1 and 0 < pauses[0] <= 60.1
    assert report.throttled_s == pytest.approx(pauses[0])


def test_refuses_to_mix_simulated_with_real_trades(exchange, tape, tmp_path):
    db = tmp_path / "real.db"
    files = build_archives(tmp_path / "archives")
    import_archives([files["btc_agg_zip"]], db, progress=False)
    with pytest.raises(StorageError, match="'binance', not from 'simulated'"):
        backfill("BTCUSDT", tape[0].trade_time, tape[-1].trade_time, db=db,
                 rest_url=exchange.rest_url, progress=False)
    with TickStore(db) as store:
        assert store.count() == 10_447


def test_bad_arguments_say_what_to_do(exchange, tape, tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'BTCUSDT'"):
        backfill("BTCUSD", "1h", db=tmp_path / "x.db", rest_url=exchange.rest_url,
                 progress=False)
    with pytest.raises(ConfigError, match="until .* must be after since"):
        backfill("BTCUSDT", tape[5].trade_time, tape[0].trade_time, db=tmp_path / "x.db",
                 rest_url=exchange.rest_url, progress=False)
    with pytest.raises(ConfigError, match="since: cannot read 'yesterday-ish'"):
        parse_when("yesterday-ish", "since", now_ms=0)


def test_parse_when():
    now = 1_723_161_600_000  # 2024-08-09 00:00 UTC
    assert parse_when("2h", "since", now_ms=now) == now - 7_200_000
    assert parse_when("30min", "since", now_ms=now) == now - 1_800_000
    assert parse_when("2024-08-08 23:55", "since", now_ms=now) == now - 300_000
    assert parse_when("2024-08-09T02:00+02:00", "since", now_ms=0) == now
    assert parse_when(now, "since", now_ms=0) == parse_when(str(now), "since", now_ms=0) == now


def test_cli_backfill(exchange, tape, tmp_path, capsys):
    db = tmp_path / "cli.db"
    code = main(["backfill", "BTCUSDT", "--since", str(tape[0].trade_time),
                 "--until", str(tape[999].trade_time + 1), "--db", str(db),
                 "--rest-url", exchange.rest_url, "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    n = sum(1 for t in tape if t.trade_time <= tape[999].trade_time)
    assert f"{n:,} aggregate trades fetched, {n:,} new" in out
    code = main(["backfill", "BTCUSDT", "--since", "2020-01-01", "--until", "2020-01-01 02:00",
                 "--db", str(db), "--rest-url", exchange.rest_url, "--no-progress"])
    assert code == 2 and "no aggregate trades of BTCUSDT" in capsys.readouterr().err
