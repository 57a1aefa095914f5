"""Gap-free ingestion: one background thread streams trades into the tick store.

One thread receives, parses and writes in batches (a transaction per ~100 ms or 1000 rows):
measured faster than a receiver thread feeding a writer thread. Gaps in the per-symbol id
sequence (missed messages, reconnects, restarts) are recorded in the same transaction that
reveals them and filled over REST by a helper thread whose rows are written by the one writer.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import queue
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

from .config import STREAM_KINDS, Settings, suggest_symbol
from .errors import ConfigError, FeedError, QuantkitError, RateLimitError, StorageError
from .rest import RestClient
from .storage import TickStore, TickWriter
from .wire import MalformedMessage, Trade, parse_message

__all__ = ["Feed", "Ingestor", "IngestorBusy", "ingesting_pid", "start"]

log = logging.getLogger(__name__)

_STATUS_EVERY_S = 1.0
#: On stop, how long to let backfills already under way finish before closing.
_STOP_GRACE_S = 5.0


class IngestorBusy(StorageError):
    """Another process already ingests into this database."""


class _WriterLock:
    """An OS lock beside the database: exactly one ingesting process per store.

    ``flock`` is released by the kernel when the holder dies, even by SIGKILL.
    """

    def __init__(self, db: Path) -> None:
        self.path = db.with_name(db.name + ".ingest.lock")
        self._fh: Any = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held for the ingestor's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise IngestorBusy(f"another process (pid {holder}) is already ingesting into "
                               f"{self.path.with_suffix('').with_suffix('')}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class _ReadAhead:
    """Serve websocket-client's small reads from large socket reads.

    websocket-client reads each frame with two or three ``recv`` calls (header, length,
    payload): three syscalls per trade were half the cost of ingestion. Its frame parser keeps
    any partial frame across a timeout, so handing it bytes from a 256 KiB read-ahead buffer is
    safe. The raw reads still go through ``ws._recv``, which turns timeouts and closed sockets
    into websocket-client's own exceptions.
    """

    CHUNK = 256 * 1024

    def __init__(self, raw_recv: Any) -> None:
        self._raw = raw_recv
        self._buf = b""
        self._pos = 0

    def __call__(self, bufsize: int) -> bytes:
        if self._pos >= len(self._buf):
            self._buf = self._raw(max(bufsize, self.CHUNK))
            self._pos = 0
        chunk = self._buf[self._pos:self._pos + bufsize]
        self._pos += len(chunk)
        return chunk

    @classmethod
    def install(cls, ws: websocket.WebSocket) -> bool:
        """Put a read-ahead buffer under ``ws``'s frame parser; False if its internals changed."""
        frames = getattr(ws, "frame_buffer", None)
        if frames is None or not hasattr(frames, "recv") or not hasattr(ws, "_recv"):
            log.debug("websocket-client internals changed: reading without read-ahead")
            return False
        frames.recv = cls(ws._recv)
        return True


def ingesting_pid(db: Path) -> int | None:
    """The pid of the process ingesting into ``db``, or None if none does."""
    lock = _WriterLock(Path(db))
    try:
        lock.acquire()
    except IngestorBusy:
        try:
            return int(lock.path.read_text().strip() or 0) or -1
        except (OSError, ValueError):
            return -1
    lock.release()
    return None


@dataclass
class _Stats:
    state: str = "stopped"
    url: str = ""
    messages: int = 0
    rows_written: int = 0
    duplicates: int = 0
    reconnects: int = 0
    gaps_found: int = 0
    gaps_filled: int = 0
    backfilled_rows: int = 0
    malformed: int = 0
    last_trade_time: int | None = None
    lag_ms: int | None = None
    msgs_per_s: float = 0.0
    last_gap: dict[str, Any] | None = None
    last_error: str | None = None
    connected_since: int | None = None
    started_at: int = field(default_factory=lambda: time.time_ns() // 1_000_000)


@dataclass
class _Gap:
    symbol: str
    from_id: int
    to_id: int
    gap_id: int = 0


class Ingestor:
    """Streams trades for ``settings.symbols`` into ``settings.db`` from a background thread.

    Parameters
    ----------
    settings
        What to stream and where to write; see :class:`quantkit.Settings`.

    Examples
    --------
    >>> with Ingestor(Settings.load(db="ticks.db")) as ing:     # doctest: +SKIP
    ...     time.sleep(10)
    ...     print(ing.stats()["rows_written"])
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stats = _Stats(url=settings.stream_url())
        self._stop = threading.Event()
        self._abort = threading.Event()  # ends backfills still running after the stop grace
        self._outstanding = 0  # gaps handed to the backfill thread and not yet written
        self._thread: threading.Thread | None = None
        self._backfill_thread: threading.Thread | None = None
        self._lock = _WriterLock(settings.db)
        self._writer: TickWriter | None = None
        self._rest = RestClient(settings.rest_url, weight_budget=settings.rest_weight_budget)
        self._last_id: dict[str, int] = {}
        self._wanted = set(settings.symbols)
        # Work for the backfill thread, and what it hands back to the writer.
        self._gap_queue: queue.Queue[_Gap | None] = queue.Queue()
        self._fills: queue.SimpleQueue[tuple[_Gap, list[Trade], str | None]] = queue.SimpleQueue()
        self._batch: list[Trade] = []  # received, not yet committed; outlives connections
        self._pending_gaps: list[_Gap] = []
        self._pending_events: list[tuple[str, str | None, str]] = []
        self._malformed_logged = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Ingestor:
        """Check settings against the exchange, open the store and start streaming.

        Raises
        ------
        IngestorBusy
            If another process ingests into the same database.
        ConfigError
            For a symbol the exchange does not list as trading.
        StorageError
            If the database holds trades of another origin or stream kind.
        """
        if self._thread is not None:
            raise QuantkitError("this Ingestor is already started")
        self._lock.acquire()
        try:
            origin = self._check_exchange()
            self._writer = TickWriter(self.settings.db)
            self._writer.claim(origin=origin, stream=self.settings.stream,
                               symbols=self.settings.symbols)
            self._last_id = {s: i for s, i in self._writer.last_ids().items() if s in self._wanted}
            for gap_id, sym, lo, hi in self._writer.open_gaps():
                # Left open by a previous run (killed mid-backfill): fill it now.
                self._gap_queue.put(_Gap(sym, lo, hi, gap_id))
                self._outstanding += 1
        except BaseException:
            if self._writer is not None:
                self._writer.close()
            self._lock.release()
            raise
        self._stop.clear()
        self._abort.clear()
        self._stats.state = "connecting"
        self._backfill_thread = threading.Thread(target=self._backfill_loop, daemon=True,
                                                 name="quantkit-backfill")
        self._backfill_thread.start()
        self._thread = threading.Thread(target=self._run, daemon=True, name="quantkit-ingest")
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop streaming, write everything received so far and close the store.

        Backfills already under way get a few seconds to finish; a gap still open after that
        stays recorded in the store and is filled on the next start.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + _STOP_GRACE_S)
            if self._thread.is_alive():
                log.error("ingest thread did not stop within %.0f s", timeout)
        self._abort.set()
        self._gap_queue.put(None)
        if self._backfill_thread is not None:
            self._backfill_thread.join(timeout)
        self._thread = self._backfill_thread = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._rest.close()
        self._lock.release()

    def __enter__(self) -> Ingestor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """A snapshot of the live figures (see the module docs for each key)."""
        snap = dict(vars(self._stats))
        snap["symbols"] = list(self.settings.symbols)
        snap["stream"] = self.settings.stream
        return snap

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the ingest thread ends (or ``timeout``); True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- exchange checks -----------------------------------------------------------------------
    def _check_exchange(self) -> str:
        """Validate symbols against exchangeInfo; return the data's origin label."""
        try:
            info = self._rest.exchange_info()
        except FeedError as exc:
            log.warning("cannot reach %s (%s): symbols checked for format only",
                        self.settings.rest_url, exc)
            return "binance" if self.settings.is_binance else f"unverified:{self.settings.rest_url}"
        trading = {s["symbol"] for s in info.get("symbols", []) if s.get("status") == "TRADING"}
        for sym in self.settings.symbols:
            if sym not in trading:
                raise ConfigError(suggest_symbol(sym, trading))
        return str(info.get("quantkitOrigin", "binance"))

    # -- the ingest thread -------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    ws = websocket.create_connection(
                        self.settings.stream_url(), timeout=10, skip_utf8_validation=True,
                        enable_multithread=False)
                except (OSError, websocket.WebSocketException) as exc:
                    hint = ("; offline? `--demo` runs against a local simulated exchange"
                            if self.settings.is_binance and isinstance(exc, OSError) else "")
                    self._note_error(f"connect to {self.settings.stream_url()} failed: {exc}{hint}")
                    self._backoff(attempt)
                    attempt += 1
                    continue
                _ReadAhead.install(ws)
                self._event("connect", None, self.settings.stream_url())
                self._stats.state = "live"
                self._stats.connected_since = time.time_ns() // 1_000_000
                received_before = self._stats.messages
                reason = self._pump(ws)
                with contextlib.suppress(Exception):
                    ws.close(timeout=1)
                self._event("disconnect", None, reason)
                self._flush()
                if self._stop.is_set():
                    break
                self._stats.reconnects += 1
                self._stats.state = "reconnecting"
                got_messages = self._stats.messages > received_before
                attempt = 0 if got_messages else attempt + 1
                if reason != "rotate":
                    self._backoff(attempt)
        except Exception as exc:  # never die silently: say why in the stats and the store
            log.exception("ingest thread failed")
            self._note_error(f"ingest thread failed: {exc!r}")
        finally:
            with contextlib.suppress(Exception):
                self._flush()
                self._finish_backfills()
                self._flush(final=True)
            self._stats.state = "stopped"
            with contextlib.suppress(Exception):
                if self._writer is not None:
                    self._writer.write_status(self.stats())

    def _finish_backfills(self) -> None:
        """Let backfills under way complete (bounded), writing each as it arrives."""
        deadline = time.monotonic() + _STOP_GRACE_S
        while self._outstanding > 0 and time.monotonic() < deadline:
            try:
                fill = self._fills.get(timeout=0.05)
            except queue.Empty:
                continue
            self._fills.put(fill)
            self._flush()
        if self._outstanding:
            log.warning("%d gap(s) still being backfilled at stop: they stay recorded and are "
                        "filled on the next start", self._outstanding)

    def _backoff(self, attempt: int) -> None:
        """Exponential backoff with full jitter, capped; interrupted by stop()."""
        delay = random.uniform(0, min(self.settings.backoff_cap,
                                      self.settings.backoff_base * 2 ** min(attempt, 20)))
        self._flush()
        self._stop.wait(max(delay, 0.05))

    def _pump(self, ws: websocket.WebSocket) -> str:
        """Receive until the connection ends; return why it ended."""
        s = self.settings
        ws.settimeout(min(s.batch_seconds, 0.25))
        batch = self._batch
        last_id = self._last_id
        stats = self._stats
        started = last_msg = last_flush = last_status = time.monotonic()
        got_any = False
        msgs_at_status = stats.messages
        while not self._stop.is_set():
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                raw = None
            except (websocket.WebSocketException, OSError) as exc:
                return f"connection lost: {exc or type(exc).__name__}"
            now = time.monotonic()
            if raw:
                last_msg = now
                got_any = True
                stats.messages += 1
                try:
                    trade = parse_message(raw, time.time_ns() // 1_000_000)
                except MalformedMessage as exc:
                    self._malformed(exc)
                    trade = None
                if trade is not None and trade.symbol in self._wanted:
                    prev = last_id.get(trade.symbol)
                    if prev is None or trade.id == prev + 1:
                        last_id[trade.symbol] = trade.id
                    elif trade.id > prev + 1:
                        self._found_gap(trade.symbol, prev + 1, trade.id - 1)
                        last_id[trade.symbol] = trade.id
                    else:
                        stats.duplicates += 1  # replayed or overlapping: the store ignores it
                    batch.append(trade)
                    stats.last_trade_time = trade.trade_time
                    stats.lag_ms = trade.recv_time - trade.trade_time
            elif now - last_msg > s.silence_timeout:
                hint = "" if got_any else (
                    f"; nothing at all arrived on {s.stream_url()}: is this the routed path? "
                    f"(Binance's unrouted /stream path accepts SUBSCRIBE and delivers nothing)")
                self._note_error(f"no message for {s.silence_timeout:.0f} s: reconnecting{hint}")
                return "silent"
            if batch and (len(batch) >= s.batch_rows or now - last_flush >= s.batch_seconds):
                self._flush()
                last_flush = now
            if now - last_status >= _STATUS_EVERY_S:
                stats.msgs_per_s = (stats.messages - msgs_at_status) / (now - last_status)
                msgs_at_status, last_status = stats.messages, now
                self._flush(status=True)
                last_flush = now
            if now - started > s.max_connection_age:
                return "rotate"
        return "stopped"

    def _found_gap(self, symbol: str, from_id: int, to_id: int) -> None:
        self._stats.gaps_found += 1
        gap = _Gap(symbol, from_id, to_id)
        self._stats.last_gap = {"symbol": symbol, "from_id": from_id, "to_id": to_id,
                                "missing": to_id - from_id + 1, "status": "open",
                                "found_at": time.time_ns() // 1_000_000}
        log.info("gap in %s: ids %d..%d missing (%d): backfilling", symbol, from_id, to_id,
                 to_id - from_id + 1)
        self._pending_gaps.append(gap)

    def _malformed(self, exc: MalformedMessage) -> None:
        self._stats.malformed += 1
        self._stats.last_error = f"malformed message skipped: {exc}"
        n = self._stats.malformed
        if n <= 10 or n % 1000 == 0:
            log.warning("malformed message #%d skipped: %s", n, exc)
        self._pending_events.append(("malformed", None, str(exc)[:500]))

    def _note_error(self, message: str) -> None:
        log.warning("%s", message)
        self._stats.last_error = message
        self._pending_events.append(("error", None, message[:500]))

    def _event(self, kind: str, symbol: str | None, detail: str) -> None:
        self._pending_events.append((kind, symbol, detail))

    def _flush(self, *, final: bool = False, status: bool = False) -> None:
        """One transaction: new trades, finished backfills, new gaps, events, status."""
        writer = self._writer
        if writer is None:
            return
        batch = self._batch
        fills = []
        while True:
            try:
                fills.append(self._fills.get_nowait())
            except queue.Empty:
                break
        gaps, self._pending_gaps = self._pending_gaps, []
        events, self._pending_events = self._pending_events, []
        if not (batch or fills or gaps or events or status or final):
            return
        with writer.transaction() as conn:
            new_rows = writer.insert_rows(conn, batch)
            for gap, trades, error in fills:
                self._outstanding -= 1
                filled = writer.insert_rows(conn, trades)
                new_rows += filled
                self._stats.backfilled_rows += filled
                complete = error is None and len(trades) == gap.to_id - gap.from_id + 1
                status_ = "filled" if complete else "failed"
                writer.close_gap(conn, gap.gap_id, len(trades), status_)
                detail = (f"ids {gap.from_id}..{gap.to_id}: {len(trades)} trades fetched"
                          + (f"; {error}" if error else ""))
                writer.record_event("backfill", gap.symbol, detail, conn=conn)
                if complete:
                    self._stats.gaps_filled += 1
                if self._stats.last_gap and self._stats.last_gap["from_id"] == gap.from_id:
                    self._stats.last_gap = {**self._stats.last_gap, "status": status_,
                                            "filled_rows": len(trades)}
            for gap in gaps:
                gap.gap_id = writer.open_gap(conn, gap.symbol, gap.from_id, gap.to_id)
                writer.record_event("gap", gap.symbol, f"ids {gap.from_id}..{gap.to_id} missing",
                                    conn=conn)
            for kind, symbol, detail in events:
                writer.record_event(kind, symbol, detail, conn=conn)
            self._stats.rows_written += new_rows
            if status or final:
                writer.write_status(self.stats(), conn=conn)
        batch.clear()
        # Only once the gap rows are committed may the backfill thread fill them: a crash in
        # between leaves them 'open' in the store, and the next start picks them up.
        for gap in gaps:
            self._outstanding += 1
            self._gap_queue.put(gap)

    # -- the backfill thread -----------------------------------------------------------------
    def _backfill_loop(self) -> None:
        while True:
            gap = self._gap_queue.get()
            if gap is None or self._abort.is_set():
                return
            trades: list[Trade] = []
            error = None
            for attempt in range(5):
                try:
                    trades = self._rest.fetch_range(gap.symbol, self.settings.stream,
                                                    gap.from_id, gap.to_id)
                    error = None
                    break
                except RateLimitError as exc:
                    error = str(exc)
                    if "418" in error:
                        break  # banned: sending more would extend the ban
                    self._abort.wait(exc.retry_after)
                except (FeedError, ConfigError) as exc:
                    error = str(exc)
                    self._abort.wait(min(2 ** attempt, 30))
                if self._abort.is_set():
                    return
            if error:
                self._stats.last_error = f"backfill of {gap.symbol} {gap.from_id}..{gap.to_id}: {error}"
            self._fills.put((gap, trades, error))


@dataclass
class Feed:
    """What :func:`start` returns: the store to read, and the ingestor if this process writes."""

    store: TickStore
    ingestor: Ingestor | None

    @property
    def ingesting(self) -> bool:
        """True when this process is the one writing into the store."""
        return self.ingestor is not None and self.ingestor.running

    def status(self) -> dict[str, Any] | None:
        """Live ingestion stats, from this process or (as a reader) from the store."""
        if self.ingestor is not None:
            return {**self.ingestor.stats(), "heartbeat_age_s": 0.0}
        return self.store.ingest_status()

    def stop(self) -> None:
        if self.ingestor is not None:
            self.ingestor.stop()
        self.store.close()


def start(settings: Settings | None = None, **overrides: Any) -> Feed:
    """Start ingesting in a background thread, or attach as a reader if another process does.

    Parameters
    ----------
    settings
        Full settings; by default :meth:`Settings.load` with ``overrides``.

    Returns
    -------
    Feed
        ``feed.store`` is a :class:`TickStore`; ``feed.ingesting`` says whether this process
        writes. Many dashboards can call this: exactly one of them (or ``quantkit ingest``)
        holds the exchange connection.
    """
    settings = settings or Settings.load(**overrides)
    ingestor: Ingestor | None = Ingestor(settings)
    try:
        ingestor.start()
    except IngestorBusy as exc:
        log.info("%s: attaching as a reader", exc)
        ingestor = None
    return Feed(TickStore(settings.db), ingestor)


# -- CLI -------------------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbols", help="comma-separated, default BTCUSDT,ETHUSDT "
                        "(env QUANTKIT_SYMBOLS)")
    parser.add_argument("--stream", choices=sorted(STREAM_KINDS), help="default aggTrade")
    parser.add_argument("--db", help="SQLite file (env QUANTKIT_DB, default ~/.quantkit/"
                        "binance-futures.db)")
    parser.add_argument("--ws-url", help="WebSocket base URL (env QUANTKIT_WS_URL, default "
                        "wss://fstream.binance.com)")
    parser.add_argument("--rest-url", help="REST base URL (env QUANTKIT_REST_URL, default "
                        "https://fapi.binance.com)")
    parser.add_argument("--ws-path", help="routed path override, e.g. /market")
    parser.add_argument("--demo", action="store_true",
                        help="run against a local simulated exchange, into a database of its "
                             "own (~/.quantkit/demo.db, emptied at each start)")
    parser.add_argument("--status-every", type=float, default=5.0, metavar="S",
                        help="seconds between status lines (default 5)")


def status_line(st: dict[str, Any]) -> str:
    """One line of live figures for a terminal."""
    last = st.get("last_trade_time")
    last_s = (time.strftime("%H:%M:%S", time.gmtime(last / 1000)) + f".{last % 1000:03d} UTC"
              if last else "-")
    lag = f"{st['lag_ms']} ms" if st.get("lag_ms") is not None else "-"
    line = (f"{st['state']:<12} msgs {st['messages']:,} ({st['msgs_per_s']:,.0f}/s)  rows "
            f"{st['rows_written']:,}  lag {lag}  reconnects {st['reconnects']}  gaps "
            f"{st['gaps_filled']}/{st['gaps_found']} filled  malformed {st['malformed']}  "
            f"last trade {last_s}")
    if st["state"] != "live" and st.get("last_error"):
        line += f"\n  last error: {st['last_error']}"
    return line


def run(args: argparse.Namespace) -> int:
    exchange = None
    overrides = {"symbols": args.symbols, "stream": args.stream, "db": args.db,
                 "ws_url": args.ws_url, "rest_url": args.rest_url, "ws_path": args.ws_path}
    if args.demo:
        from .demo import default_demo_db, reset_demo_db
        from .exchange import LocalExchange

        db = Path(args.db).expanduser() if args.db else default_demo_db()
        reset_demo_db(db, is_default=args.db is None)
        exchange = LocalExchange(symbols=tuple((args.symbols or "BTCUSDT,ETHUSDT").split(",")))
        exchange.start()
        overrides.update(ws_url=exchange.ws_url, rest_url=exchange.rest_url, db=str(db))
        print(f"demo: local exchange at {exchange.ws_url} (REST {exchange.rest_url}); "
              f"{db} starts empty", flush=True)
    settings = Settings.load(**overrides)
    ingestor = Ingestor(settings)
    # Signal handlers only set an event: raising from a handler can interrupt Thread.join() in
    # a way that leaves the thread marked as finished while it is still flushing.
    stop_requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_requested.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ingestor.start()
        print(f"ingesting {', '.join(settings.symbols)} ({settings.stream}) from "
              f"{settings.stream_url()} into {settings.db}; Ctrl-C to stop", flush=True)
        while not stop_requested.wait(args.status_every):
            if not ingestor.running:
                print("ingest thread ended unexpectedly: " + str(ingestor.stats()["last_error"]),
                      file=sys.stderr)
                return 1
            print(status_line(ingestor.stats()), flush=True)
        print("stopping: flushing what was received ...", flush=True)
        return 0
    finally:
        started = ingestor.stats()["state"] != "stopped"
        ingestor.stop()
        if started:
            print(status_line(ingestor.stats()), flush=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if exchange is not None:
            exchange.stop()
