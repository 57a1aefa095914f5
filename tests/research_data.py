"""Build data.binance.vision-style archives from the real recorded trades (for the research tests).

The hftbacktest recordings hold every ``@trade`` message of BTCUSDT and ETHUSDT for
2024-08-08 23:54:16 .. 2024-08-09 00:00:00. Written out as Binance's ``trades`` archive format
they are real archive rows; ``aggTrades`` rows are derived by merging consecutive trades with
the same time, price and side, which is how Binance aggregates a taker order's fills.
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from conftest import SHARED_DATA, read_recorded_trades

TRADES_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker"
AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
RECORDINGS = {
    "BTCUSDT": "hftbacktest_usdm_btcusdt_20240808_trade.txt.gz",
    "ETHUSDT": "hftbacktest_usdm_ethusdt_20240808_trade.txt.gz",
}
#: Made-up first aggregate id: the recordings carry trade ids only.
AGG_ID_BASE = 2_300_000_000


def recorded(symbol: str, data: Path = SHARED_DATA) -> list[dict]:
    """The recorded ``trade`` payloads of ``symbol``, in id order."""
    return sorted(read_recorded_trades(data / RECORDINGS[symbol]), key=lambda d: d["t"])


def trades_lines(payloads: list[dict]) -> list[str]:
    """Rows as in ``SYM-trades-*.csv`` (prices and quantities exactly as Binance sent them)."""
    return [f"{d['t']},{d['p']},{d['q']},{float(d['p']) * float(d['q']):.5f},{d['T']},"
            f"{'true' if d['m'] else 'false'}" for d in payloads]


def agg_lines(payloads: list[dict]) -> list[str]:
    """Rows as in ``SYM-aggTrades-*.csv``: consecutive same (time, price, side) trades merged."""
    groups: list[list[dict]] = []
    for d in payloads:
        last = groups[-1][-1] if groups else None
        if last is not None and (last["T"], last["p"], last["m"]) == (d["T"], d["p"], d["m"]):
            groups[-1].append(d)
        else:
            groups.append([d])
    out = []
    for k, g in enumerate(groups):
        # Sum quantities in integer thousandths (BTC/ETH step 0.001) so nothing is rounded.
        qty = sum(round(float(d["q"]) * 1000) for d in g) / 1000
        out.append(f"{AGG_ID_BASE + k},{g[0]['p']},{qty:.3f},{g[0]['t']},{g[-1]['t']},"
                   f"{g[0]['T']},{'true' if g[0]['m'] else 'false'}")
    return out


def write_csv(path: Path, lines: list[str], *, header: str | None) -> Path:
    text = "\n".join(([header] if header else []) + lines) + "\n"
    path.write_text(text)
    return path


def write_zip(path: Path, lines: list[str], *, header: str | None, checksum: bool) -> Path:
    """A zip holding ``<stem>.csv`` as Binance ships it, plus ``<name>.CHECKSUM`` if asked."""
    text = "\n".join(([header] if header else []) + lines) + "\n"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.stem + ".csv", text)
    if checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def build_archives(folder: Path) -> dict[str, Path]:
    """Every variant the tests need, named as data.binance.vision names them."""
    folder.mkdir(parents=True, exist_ok=True)
    btc, eth = recorded("BTCUSDT"), recorded("ETHUSDT")
    return {
        "btc_trades_zip": write_zip(folder / "BTCUSDT-trades-2024-08-08.zip", trades_lines(btc),
                                    header=TRADES_HEADER, checksum=True),
        "btc_agg_zip": write_zip(folder / "BTCUSDT-aggTrades-2024-08-08.zip", agg_lines(btc),
                                 header=AGG_HEADER, checksum=True),
        "eth_trades_csv": write_csv(folder / "ETHUSDT-trades-2024-08-08.csv", trades_lines(eth),
                                    header=None),
        "eth_agg_csv": write_csv(folder / "ETHUSDT-aggTrades-2024-08-08.csv", agg_lines(eth),
                                 header=None),
    }


def build_fixture_db(path: Path) -> Path:
    """A tick store of the real recorded BTCUSDT and ETHUSDT trades, imported as Binance
    ``trades`` archives (2024-08-08 23:54:16 .. 2024-08-09 00:00:00 UTC)."""
    from quantkit.archive import import_archives

    files = build_archives(path.parent / f"{path.stem}-archives")
    import_archives([files["btc_trades_zip"], files["eth_trades_csv"]], path, progress=False)
    return path
