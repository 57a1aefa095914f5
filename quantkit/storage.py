"""The tick store: SQLite in WAL mode, one writer and many concurrent readers.

The schema lives here and nowhere else. :class:`TickStore` is the public reader API;
:class:`TickWriter` is what ingestion and import use to append trades (deduplicated on
``(symbol, id)``) and to record connection events and gaps.
"""
from __future__ import annotations

import contextlib
import difflib
import itertools
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .errors import StorageError

__all__ = ["BULK_FIELDS", "SCHEMA_VERSION", "TickBatch", "TickStore", "TickWriter", "now_ms"]

SCHEMA_VERSION = "1"

# Times are integer milliseconds UTC. ``rowid`` is the insertion order: it is the cursor of
# incremental reads, so a backfilled (older) trade is still seen by live readers. Rows are
# never deleted, so rowids are never reused.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trades (
    symbol         TEXT    NOT NULL,
    id             INTEGER NOT NULL,  -- aggregate trade id (aggTrade) or trade id (trade)
    trade_time     INTEGER NOT NULL,  -- exchange trade time, ms UTC
    price          REAL    NOT NULL,
    qty            REAL    NOT NULL,
    first_id       INTEGER NOT NULL,
    last_id        INTEGER NOT NULL,
    is_buyer_maker INTEGER NOT NULL,
    recv_time      INTEGER            -- local receive time, ms UTC; NULL if backfilled/imported
);
CREATE UNIQUE INDEX IF NOT EXISTS trades_symbol_id ON trades (symbol, id);
CREATE INDEX IF NOT EXISTS trades_symbol_time ON trades (symbol, trade_time);
CREATE TABLE IF NOT EXISTS gaps (
    gap_id      INTEGER PRIMARY KEY,
    symbol      TEXT    NOT NULL,
    from_id     INTEGER NOT NULL,     -- first missing id
    to_id       INTEGER NOT NULL,     -- last missing id
    found_at    INTEGER NOT NULL,
    filled_at   INTEGER,
    filled_rows INTEGER,
    status      TEXT    NOT NULL DEFAULT 'open'  -- open | filled | failed
);
CREATE TABLE IF NOT EXISTS status (
    name  TEXT PRIMARY KEY,           -- 'ingest': the live stats of the ingesting process
    time  INTEGER NOT NULL,           -- heartbeat, ms UTC
    value TEXT    NOT NULL            -- JSON
);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY,
    time     INTEGER NOT NULL,
    kind     TEXT    NOT NULL,        -- connect | disconnect | gap | backfill | error | ...
    symbol   TEXT,
    detail   TEXT
);
"""

_TRADE_COLUMNS = ("symbol", "id", "trade_time", "price", "qty", "first_id", "last_id",
                  "is_buyer_maker", "recv_time")
_INSERT = (f"INSERT OR IGNORE INTO trades ({', '.join(_TRADE_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_TRADE_COLUMNS))})")
_BULK_ROWS = 100  # rows per multi-row INSERT statement
_INSERT_BULK = (f"INSERT OR IGNORE INTO trades ({', '.join(_TRADE_COLUMNS)}) VALUES "
                + ",".join([f"({', '.join('?' * len(_TRADE_COLUMNS))})"] * _BULK_ROWS))
_TICK_COLUMNS = ["price", "qty", "is_buyer_maker", "id", "first_id", "last_id"]
#: Field order of :meth:`TickWriter.insert_flat`'s flat rows (symbol bound once, recv_time NULL).
BULK_FIELDS = ("id", "trade_time", "price", "qty", "first_id", "last_id", "is_buyer_maker")


def _bulk_sql(rows: int) -> str:
    # The same INSERT OR IGNORE, many rows per statement: per-statement overhead, not SQLite,
    # limits executemany of single rows to ~300k rows/s. ?1 is the symbol, bound once.
    row = "(?1" + ",?" * len(BULK_FIELDS) + ")"
    return (f"INSERT OR IGNORE INTO trades (symbol, {', '.join(BULK_FIELDS)}) VALUES "
            + ",".join([row] * rows))


def now_ms() -> int:
    """Wall-clock time in integer milliseconds UTC."""
    return time.time_ns() // 1_000_000


def _to_ms(value: Any, name: str) -> int | None:
    """Accept None, int/float ms, a datetime-like or a string; return ms UTC."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise StorageError(f"{name}: cannot read {value!r} as a time ({exc})") from None
    if ts is pd.NaT:
        raise StorageError(f"{name}: {value!r} is not a time")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            if not path.exists():
                raise StorageError(
                    f"no tick store at {path}: run `quantkit ingest --db {path}` "
                    "(or `quantkit import`) first"
                )
            conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StorageError(f"{path}: cannot switch to WAL mode (got {mode!r})")
            # NORMAL is durable across application crashes in WAL mode (only a power loss can
            # roll back the last transactions), and several times faster than FULL.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                         (SCHEMA_VERSION,))
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open tick store {path}: {exc}") from None
    return conn


def _symbols(conn: sqlite3.Connection) -> list[str]:
    # DISTINCT would scan the whole (symbol, id) index; hop from symbol to symbol instead.
    out: list[str] = []
    row = conn.execute("SELECT MIN(symbol) FROM trades").fetchone()
    while row[0] is not None:
        out.append(row[0])
        row = conn.execute("SELECT MIN(symbol) FROM trades WHERE symbol > ?", (out[-1],)).fetchone()
    return out


@dataclass(frozen=True)
class TickBatch:
    """Rows added since a cursor: ``frame`` as :meth:`TickStore.ticks` plus a ``symbol`` column."""

    frame: pd.DataFrame
    cursor: int


_DTYPES = {"price": np.float64, "qty": np.float64, "is_buyer_maker": np.bool_, "id": np.int64,
           "first_id": np.int64, "last_id": np.int64}


def _frame(rows: Sequence[tuple], with_symbol: bool = False) -> pd.DataFrame:
    """Rows of (trade_time, price, qty, is_buyer_maker, id, first_id, last_id[, symbol]).

    Built column by column with numpy: ten times faster than ``DataFrame.from_records`` on the
    small batches of a live refresh, and as fast on large reads.
    """
    columns = list(zip(*rows)) if rows else [()] * (8 if with_symbol else 7)
    times = np.asarray(columns[0], dtype=np.int64) * 1_000_000  # ms -> ns
    index = pd.DatetimeIndex(times.view("datetime64[ns]"), name="time").tz_localize("UTC")
    data = {name: np.asarray(col, dtype=_DTYPES[name])
            for name, col in zip(_TICK_COLUMNS, columns[1:7])}
    if with_symbol:
        data["symbol"] = np.asarray(columns[7], dtype=object)
    return pd.DataFrame(data, index=index, copy=False)


class TickStore:
    """Read access to a quantkit tick store.

    Parameters
    ----------
    path
        The SQLite file written by ``quantkit ingest`` or ``quantkit import``.

    Notes
    -----
    Readers use their own connection in WAL mode, so they never block the writer nor see
    "database is locked"; they wait up to 30 s on the rare checkpoint lock.

    Examples
    --------
    >>> store = TickStore("btc.db")                                   # doctest: +SKIP
    >>> store.ticks("BTCUSDT", start="2024-08-08 23:55").tail()        # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._conn = _connect(self.path, readonly=True)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> TickStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: query failed: {exc}") from None

    def symbols(self) -> list[str]:
        """Symbols that have at least one stored trade, sorted."""
        try:
            return _symbols(self._conn)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: query failed: {exc}") from None

    def meta(self) -> dict[str, str]:
        """The store's metadata: schema version, origin of the data, stream kind per symbol."""
        return dict(self._query("SELECT key, value FROM meta"))

    def _check_symbol(self, symbol: str) -> str:
        symbol = symbol.upper()
        if not self._query("SELECT 1 FROM trades WHERE symbol = ? LIMIT 1", (symbol,)):
            known = self.symbols()
            close = difflib.get_close_matches(symbol, known, n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise StorageError(f"no trades for {symbol!r} in {self.path} "
                               f"(it holds: {', '.join(known) or 'nothing yet'}).{hint}")
        return symbol

    def ticks(self, symbol: str, start: Any = None, end: Any = None) -> pd.DataFrame:
        """Trades of ``symbol`` with ``start <= trade time < end``, oldest first.

        Parameters
        ----------
        symbol
            e.g. ``"BTCUSDT"`` (case-insensitive).
        start, end
            Optional bounds: ms since the epoch, a ``datetime``/``Timestamp`` or a string;
            naive times are taken as UTC.

        Returns
        -------
        pandas.DataFrame
            Indexed by trade time (tz-aware UTC ``DatetimeIndex`` named ``time``) with columns
            ``price, qty, is_buyer_maker, id, first_id, last_id``; ``id`` is the aggregate trade
            id for aggTrade streams.

        Raises
        ------
        StorageError
            If the store holds no trades for ``symbol`` (the message lists what it holds).
        """
        symbol = self._check_symbol(symbol)
        lo, hi = _to_ms(start, "start"), _to_ms(end, "end")
        sql = ("SELECT trade_time, price, qty, is_buyer_maker, id, first_id, last_id "
               "FROM trades WHERE symbol = ?")
        params: list[Any] = [symbol]
        if lo is not None:
            sql += " AND trade_time >= ?"
            params.append(lo)
        if hi is not None:
            sql += " AND trade_time < ?"
            params.append(hi)
        # Ordered by (time, id) so ties on the same millisecond come out in exchange order.
        sql += " ORDER BY trade_time, id"
        return _frame(self._query(sql, params))

    def read_new(self, cursor: int = 0, *, symbols: Iterable[str] | None = None,
                 limit: int | None = None) -> TickBatch:
        """Trades stored after ``cursor`` (insertion order), for live consumers.

        Start with ``cursor=0`` (everything) or :meth:`last_cursor` (only what comes next),
        then pass back the returned ``cursor``. Backfilled trades arrive here too, and may be
        older than trades already seen.
        """
        sql = ("SELECT trade_time, price, qty, is_buyer_maker, id, first_id, last_id, symbol, "
               "rowid FROM trades WHERE rowid > ?")
        params: list[Any] = [int(cursor)]
        if symbols is not None:
            wanted = [s.upper() for s in symbols]
            sql += f" AND symbol IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += " ORDER BY rowid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        rows = self._query(sql, params)
        if not rows:
            return TickBatch(_frame([], with_symbol=True), int(cursor))
        new_cursor = rows[-1][-1]
        return TickBatch(_frame([r[:-1] for r in rows], with_symbol=True), new_cursor)

    def last_cursor(self) -> int:
        """The cursor of the newest stored row (0 for an empty store)."""
        return self._query("SELECT COALESCE(MAX(rowid), 0) FROM trades")[0][0]

    def count(self, symbol: str | None = None) -> int:
        """Number of stored rows, for one symbol or all."""
        if symbol is None:
            return self._query("SELECT COUNT(*) FROM trades")[0][0]
        return self._query("SELECT COUNT(*) FROM trades WHERE symbol = ?", (symbol.upper(),))[0][0]

    def time_range(self, symbol: str) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last trade time stored for ``symbol`` (UTC)."""
        symbol = self._check_symbol(symbol)
        lo, hi = self._query("SELECT MIN(trade_time), MAX(trade_time) FROM trades "
                             "WHERE symbol = ?", (symbol,))[0]
        return pd.Timestamp(lo, unit="ms", tz="UTC"), pd.Timestamp(hi, unit="ms", tz="UTC")

    def gaps(self) -> pd.DataFrame:
        """Every gap found in the id sequence, with how and when it was filled."""
        rows = self._query("SELECT gap_id, symbol, from_id, to_id, found_at, filled_at, "
                           "filled_rows, status FROM gaps ORDER BY gap_id")
        df = pd.DataFrame(rows, columns=["gap_id", "symbol", "from_id", "to_id", "found_at",
                                         "filled_at", "filled_rows", "status"])
        for col in ("found_at", "filled_at"):
            df[col] = pd.to_datetime(df[col], unit="ms", utc=True)
        return df

    def ingest_status(self) -> dict[str, Any] | None:
        """The ingesting process's live stats, as it last wrote them (about once a second).

        ``None`` if nothing ever ingested into this store. ``heartbeat_age_s`` says how old
        the figures are: a large value means the ingester stopped or died.
        """
        rows = self._query("SELECT time, value FROM status WHERE name = 'ingest'")
        if not rows:
            return None
        status = orjson.loads(rows[0][1])
        status["heartbeat_age_s"] = (now_ms() - rows[0][0]) / 1000.0
        return status

    def events(self, limit: int = 1000) -> pd.DataFrame:
        """The newest connection events (connect, disconnect, gap, backfill, error), oldest first."""
        rows = self._query("SELECT time, kind, symbol, detail FROM events "
                           "ORDER BY event_id DESC LIMIT ?", (int(limit),))
        df = pd.DataFrame(rows[::-1], columns=["time", "kind", "symbol", "detail"])
        df["time"] = pd.to_datetime(df["time"], unit="ms", utc=True)
        return df


class TickWriter:
    """Appends trades, events and gaps. One per store at a time (ingestion or import).

    Every :meth:`insert` is one transaction; ``INSERT OR IGNORE`` on the unique
    ``(symbol, id)`` index makes replays and overlapping backfills harmless.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._conn = _connect(self.path, readonly=False)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA optimize")
        self._conn.close()

    def __enter__(self) -> TickWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back whole on error."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: write failed: {exc}") from None

    def claim(self, *, origin: str, stream: str, symbols: Iterable[str],
              conn: sqlite3.Connection | None = None) -> None:
        """Record where the data comes from; refuse to mix origins or stream kinds.

        With ``conn``, the claim is part of the caller's open transaction (and is rolled back
        with it); otherwise it is a transaction of its own.

        Raises
        ------
        StorageError
            If the store already holds trades from another origin (e.g. simulated vs real
            Binance) or another stream kind for one of ``symbols``: their ids would collide.
        """
        if conn is None:
            with self.transaction() as own:
                return self.claim(origin=origin, stream=stream, symbols=symbols, conn=own)
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        have = meta.get("origin")
        if have is not None and have != origin:
            raise StorageError(
                f"{self.path} holds trades from {have!r}, not from {origin!r}: use another "
                "database (--db) so simulated and real trades never mix"
            )
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('origin', ?)", (origin,))
        for sym in symbols:
            kind = meta.get(f"stream:{sym}")
            if kind is not None and kind != stream:
                raise StorageError(
                    f"{self.path} holds {kind} ids for {sym}, not {stream} ids (they "
                    f"would collide): use another database, or {kind} data for {sym}"
                )
            conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (f"stream:{sym}", stream))

    def insert(self, trades: Sequence[Sequence[Any]]) -> int:
        """Insert rows in :class:`~quantkit.wire.Trade` field order; return how many were new."""
        if not trades:
            return 0
        with self.transaction() as conn:
            return self.insert_rows(conn, trades)

    @staticmethod
    def insert_rows(conn: sqlite3.Connection, trades: Sequence[Sequence[Any]]) -> int:
        """Insert inside an open :meth:`transaction`; duplicates are ignored. Returns new rows.

        Full runs of 100 rows go as one multi-row statement each (1.9 instead of 3.3 us a row
        measured here: the per-statement overhead dominates single-row ``executemany``).
        """
        before = conn.total_changes
        width = len(_TRADE_COLUMNS)
        whole = len(trades) - len(trades) % _BULK_ROWS
        if whole:
            flat = list(itertools.chain.from_iterable(trades[:whole]))
            step = _BULK_ROWS * width
            conn.executemany(_INSERT_BULK, (flat[i:i + step] for i in range(0, len(flat), step)))
        if whole < len(trades):
            conn.executemany(_INSERT, trades[whole:])
        return conn.total_changes - before

    @staticmethod
    def insert_flat(conn: sqlite3.Connection, symbol: str, flat: Sequence[Any]) -> None:
        """Bulk insert inside an open :meth:`transaction` (the importer's fast path).

        ``flat`` holds the values of :data:`BULK_FIELDS`, row after row; ``recv_time`` stays
        NULL. Duplicates are ignored; count new rows with ``conn.total_changes``.
        """
        width = len(BULK_FIELDS)
        if len(flat) % width:
            raise StorageError(f"insert_flat: {len(flat)} values is not a whole number of rows")
        step = _BULK_ROWS * width
        whole = len(flat) - len(flat) % step
        conn.executemany(_bulk_sql(_BULK_ROWS),
                         ([symbol, *flat[i:i + step]] for i in range(0, whole, step)))
        if whole < len(flat):
            conn.execute(_bulk_sql((len(flat) - whole) // width), [symbol, *flat[whole:]])

    def last_ids(self) -> dict[str, int]:
        """Highest stored id per symbol: where a restarted ingestor resumes."""
        return {sym: self._conn.execute("SELECT MAX(id) FROM trades WHERE symbol = ?",
                                        (sym,)).fetchone()[0]
                for sym in _symbols(self._conn)}

    def record_event(self, kind: str, symbol: str | None = None, detail: str = "",
                     conn: sqlite3.Connection | None = None) -> None:
        """Append one event row (in ``conn``'s transaction if given, else its own)."""
        sql = "INSERT INTO events (time, kind, symbol, detail) VALUES (?, ?, ?, ?)"
        if conn is not None:
            conn.execute(sql, (now_ms(), kind, symbol, detail))
        else:
            with self.transaction() as c:
                c.execute(sql, (now_ms(), kind, symbol, detail))

    def open_gap(self, conn: sqlite3.Connection, symbol: str, from_id: int, to_id: int) -> int:
        """Record a gap inside the transaction that stores the trades revealing it."""
        cur = conn.execute("INSERT INTO gaps (symbol, from_id, to_id, found_at) VALUES (?, ?, ?, ?)",
                           (symbol, from_id, to_id, now_ms()))
        return int(cur.lastrowid)

    def close_gap(self, conn: sqlite3.Connection, gap_id: int, rows: int, status: str = "filled") -> None:
        conn.execute("UPDATE gaps SET filled_at = ?, filled_rows = ?, status = ? WHERE gap_id = ?",
                     (now_ms(), rows, status, gap_id))

    def open_gaps(self) -> list[tuple[int, str, int, int]]:
        """Gaps not yet filled (e.g. the process was killed mid-backfill): ``(gap_id, symbol, from, to)``."""
        return self._conn.execute("SELECT gap_id, symbol, from_id, to_id FROM gaps "
                                  "WHERE status = 'open' ORDER BY gap_id").fetchall()

    def write_status(self, status: dict[str, Any], name: str = "ingest",
                     conn: sqlite3.Connection | None = None) -> None:
        """Publish live stats for readers in other processes (see :meth:`TickStore.ingest_status`)."""
        sql = "INSERT OR REPLACE INTO status (name, time, value) VALUES (?, ?, ?)"
        args = (name, now_ms(), orjson.dumps(status, default=str).decode())
        if conn is not None:
            conn.execute(sql, args)
        else:
            with self.transaction() as c:
                c.execute(sql, args)

    def integrity_check(self) -> str:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0]
