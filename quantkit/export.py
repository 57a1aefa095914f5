"""Export ticks or bars of a time range to CSV or Parquet, recording how the file was made.

The parameters (symbol, range, bar length, source store, data origin, quantkit version, time of
creation) go into the Parquet file's key-value metadata under ``"quantkit"``, or into a JSON
sidecar ``<file>.json`` beside a CSV; :func:`read_metadata` reads either back.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError
from .storage import TickStore

__all__ = ["ExportResult", "configure_parser", "export_bars", "export_ticks", "read_metadata",
           "run"]

_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_META_KEY = b"quantkit"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the file, its row count and the recorded parameters."""

    path: Path
    rows: int
    metadata: dict[str, Any]


def _format(path: Path) -> str:
    try:
        return _FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(f"path: {path.name!r} must end in .csv or .parquet "
                        "(the suffix chooses the format)") from None


def _iso(value: Any) -> str | None:
    """A bound as given by the user, normalised to ISO 8601 UTC (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ts = pd.Timestamp(int(value), unit="ms", tz="UTC")
    else:
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise DataError(f"cannot read {value!r} as a time ({exc}); "
                            "use e.g. '2024-08-08 23:55' (UTC)") from None
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat()


def _read_ticks(store: TickStore, symbol: str, start: Any, end: Any) -> pd.DataFrame:
    ticks = store.ticks(symbol, start, end)
    if ticks.empty:
        first, last = store.time_range(symbol)
        raise DataError(f"no trades of {symbol.upper()} between {_iso(start) or 'the start'} and "
                        f"{_iso(end) or 'the end'}; {store.path} holds {first} .. {last}")
    return ticks


def _write(frame: pd.DataFrame, path: Path, metadata: dict[str, Any]) -> ExportResult:
    fmt = _format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metadata, indent=2)
    if fmt == "parquet":
        table = pa.Table.from_pandas(frame, preserve_index=True)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               _META_KEY: text.encode()})
        pq.write_table(table, path)
    else:
        frame.to_csv(path, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
        path.with_name(path.name + ".json").write_text(text + "\n")
    return ExportResult(path, len(frame), metadata)


def _metadata(store: TickStore, symbol: str, kind: str, frame: pd.DataFrame, *, start: Any,
              end: Any, freq: str | None) -> dict[str, Any]:
    from . import __version__

    meta = store.meta()
    return {
        "kind": kind,
        "symbol": symbol.upper(),
        "start": _iso(start),
        "end": _iso(end),
        "freq": freq,
        "first": frame.index[0].isoformat(),
        "last": frame.index[-1].isoformat(),
        "rows": len(frame),
        "columns": ["time", *frame.columns],
        "source_db": str(store.path.resolve()),
        "origin": meta.get("origin"),
        "stream": meta.get(f"stream:{symbol.upper()}"),
        "quantkit_version": __version__,
        "created": pd.Timestamp.now(tz="UTC").isoformat(),
    }


def _open(store: TickStore | str | Path) -> tuple[TickStore, bool]:
    if isinstance(store, TickStore):
        return store, False
    return TickStore(store), True


def export_ticks(store: TickStore | str | Path, symbol: str, path: str | Path, *,
                 start: Any = None, end: Any = None) -> ExportResult:
    """Write the trades of ``symbol`` with ``start <= time < end`` to CSV or Parquet.

    Parameters
    ----------
    store
        A :class:`~quantkit.TickStore` or the path of one.
    symbol
        e.g. ``"BTCUSDT"``.
    path
        Output file; ``.csv`` or ``.parquet`` chooses the format.
    start, end
        Optional bounds (ms, datetime or string; naive times are UTC).

    Returns
    -------
    ExportResult
        The file, its row count and the recorded parameters.

    Raises
    ------
    DataError
        For an unknown suffix or an empty range (the message gives the stored range).
    StorageError
        If the store holds no trades of ``symbol``.
    """
    path = Path(path)
    _format(path)
    store, owned = _open(store)
    try:
        ticks = _read_ticks(store, symbol, start, end)
        meta = _metadata(store, symbol, "ticks", ticks, start=start, end=end, freq=None)
    finally:
        if owned:
            store.close()
    return _write(ticks, path, meta)


def export_bars(store: TickStore | str | Path, symbol: str, path: str | Path, *, freq: str,
                start: Any = None, end: Any = None) -> ExportResult:
    """Write OHLCV bars of ``symbol`` resampled from the trades in ``[start, end)``.

    Parameters
    ----------
    store, symbol, path, start, end
        As for :func:`export_ticks`.
    freq
        Bar length, e.g. ``"1min"`` (see :data:`quantkit.analytics.FREQS`).

    Returns
    -------
    ExportResult
        Bars as :func:`quantkit.analytics.resample_ohlcv` makes them (indexed by bar open time).

    Notes
    -----
    Bars come from the trades inside the range only: give ``start``/``end`` on bar boundaries
    or the first and last bars cover part of their interval. The newest bar of a store being
    ingested may still change.
    """
    from .analytics import freq_ms, resample_ohlcv

    freq_ms(freq)  # reject an unknown bar length before reading anything
    path = Path(path)
    _format(path)
    store, owned = _open(store)
    try:
        bars = resample_ohlcv(_read_ticks(store, symbol, start, end), freq)
        meta = _metadata(store, symbol, "bars", bars, start=start, end=end, freq=freq)
    finally:
        if owned:
            store.close()
    return _write(bars, path, meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The parameters recorded with an exported file (Parquet metadata or the CSV's sidecar).

    Raises
    ------
    DataError
        If the file carries no quantkit metadata.
    """
    path = Path(path)
    if _format(path) == "parquet":
        raw = (pq.read_schema(path).metadata or {}).get(_META_KEY)
        if raw is None:
            raise DataError(f"{path}: no quantkit metadata; was it written by quantkit export?")
        return json.loads(raw)
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.exists():
        raise DataError(f"{path}: no sidecar {sidecar.name}; was it written by quantkit export?")
    return json.loads(sidecar.read_text())


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``quantkit export``."""
    parser.add_argument("symbol", metavar="SYMBOL", help="e.g. BTCUSDT")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output file: .csv (with a .json sidecar) or .parquet")
    parser.add_argument("--db", default=None,
                        help="tick store (default: $QUANTKIT_DB or ~/.quantkit/binance-futures.db)")
    parser.add_argument("--freq", default=None,
                        help="export bars of this length (e.g. 1min); without it, export ticks")
    parser.add_argument("--start", default=None, help="first time included, UTC (e.g. 2024-08-08)")
    parser.add_argument("--end", default=None, help="first time excluded, UTC")


def run(args: argparse.Namespace) -> int:
    """``quantkit export SYMBOL --out FILE [--db PATH] [--freq 1min] [--start ..] [--end ..]``."""
    from .config import Settings

    db = Settings.load(db=args.db).db
    if args.freq:
        result = export_bars(db, args.symbol, args.out, freq=args.freq, start=args.start,
                             end=args.end)
        what = f"{args.freq} bars"
    else:
        result = export_ticks(db, args.symbol, args.out, start=args.start, end=args.end)
        what = "trades"
    m = result.metadata
    side = "" if _format(result.path) == "parquet" else f" (parameters in {result.path.name}.json)"
    print(f"wrote {result.rows:,} {what} of {m['symbol']} ({m['first']} .. {m['last']}) "
          f"to {result.path}{side}")
    return 0
