"""The local exchange: a tornado server on one port that speaks Binance USD-M futures' protocol.

:class:`LocalExchange` runs its event loop in a background thread, feeds trades (synthetic,
replayed, or a pre-generated burst) into its tapes and to subscribers, and exposes faults as
methods and as ``POST /quantkit/fault``. :meth:`LocalExchange.spawn` runs one in a child process.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import tornado.httpserver
import tornado.netutil
import tornado.web

from ..errors import ConfigError, QuantkitError
from ..wire import Trade
from .replay import Recording, load_recording
from .rest import RestState, rest_routes
from .streams import Hub, StreamHandler, encode_frames
from .synthetic import SyntheticMarket, profile_for
from .tape import AGG, KINDS, TRADE, Events, Tape

__all__ = ["ExchangeProcess", "LocalExchange"]

log = logging.getLogger(__name__)

_MODES = ("synthetic", "replay")
_FAULTS = ("drop_connections", "send_malformed", "go_silent", "skip_messages", "rate_limit")
_BURST_CHUNK = 2000  # frames per socket write in burst mode (~400 KB)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Requests at debug level: a backfilling client makes many, and 4xx answers are expected.
    log.debug("%d %s %.1f ms", handler.get_status(), handler.request.uri,
              1000 * handler.request.request_time())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    number = float(value)
    if not (number >= 0 if allow_zero else number > 0) or math.isnan(number):
        raise ConfigError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                          f"number, got {value!r}")
    return number


class LocalExchange:
    """A Binance USD-M futures look-alike on 127.0.0.1: WebSocket streams and REST on one port.

    Parameters
    ----------
    host, port
        Where to listen; ``port=0`` picks a free port (read it from :attr:`ws_url`).
    symbols
        Synthetic mode: the symbols to generate (default ``BTCUSDT, ETHUSDT``). Replay mode:
        keep only these of the symbols found in the files (default: all of them).
    rate
        Synthetic mode: mean aggregate-trade messages per second across symbols.
    seed
        Synthetic mode: the same seed gives the same trades.
    mode
        ``"synthetic"`` or ``"replay"``.
    files
        Replay mode: recorded files (see :func:`quantkit.exchange.replay.load_recording`).
    speed
        Replay mode: 1.0 is real time, 2.0 twice as fast, 0 as fast as the clients read.
    burst
        Synthetic mode: if > 0, pre-generate this many aggregate trades (times just before
        start) and send all of them to each connection that subscribes, as fast as its socket
        takes them; nothing else is generated. The throughput benchmark's fast path.
    ping_interval, pong_timeout, max_connection_age
        Keep-alive in seconds (Binance: 180, 600, 24 h).
    weight_limit, ban_seconds
        REST request weight per minute (Binance: 2400) and the first 418 ban's length.
    max_trades
        Trades kept per symbol and stream kind for REST; the oldest are forgotten.
    max_client_messages
        Incoming WebSocket messages per second a client may send (Binance: 10).
    hold_replay
        Replay mode: wait for the first subscriber before starting, so that nothing is played
        to nobody (default True).

    Examples
    --------
    >>> with LocalExchange(rate=100) as ex:                      # doctest: +SKIP
    ...     url = f"{ex.ws_url}/market/stream?streams=btcusdt@aggTrade"
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 symbols: Sequence[str] | None = None, rate: float = 200.0, seed: int = 0,
                 mode: str = "synthetic", files: Sequence[str | Path] = (), speed: float = 1.0,
                 burst: int = 0, ping_interval: float = 180.0, pong_timeout: float = 600.0,
                 max_connection_age: float = 24 * 3600.0, weight_limit: int = 2400,
                 ban_seconds: float = 120.0, max_trades: int = 2_000_000,
                 max_client_messages: int = 10, hold_replay: bool = True) -> None:
        if mode not in _MODES:
            raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}")
        if mode == "replay" and not files:
            raise ConfigError("mode='replay' needs files=[...]: recorded trade files to replay")
        if symbols is not None:
            symbols = [s.strip().upper() for s in symbols if s.strip()]
            if not symbols:
                raise ConfigError("symbols is empty: give e.g. ('BTCUSDT', 'ETHUSDT')")
        if int(port) != port or not 0 <= port < 65536:
            raise ConfigError(f"port must be 0..65535, got {port!r}")
        if int(burst) != burst or burst < 0:
            raise ConfigError(f"burst must be a non-negative integer, got {burst!r}")
        self.host = host
        self.port = int(port)
        self.mode = mode
        self.rate = _positive(rate, "rate")
        self.seed = int(seed)
        self.files = [Path(f) for f in files]
        self.speed = _positive(speed, "speed", allow_zero=True)
        self.burst = int(burst)
        self.ping_interval = _positive(ping_interval, "ping_interval")
        self.pong_timeout = _positive(pong_timeout, "pong_timeout")
        self.max_connection_age = _positive(max_connection_age, "max_connection_age")
        self.weight_limit = int(_positive(weight_limit, "weight_limit"))
        self.ban_seconds = _positive(ban_seconds, "ban_seconds")
        self.max_trades = int(_positive(max_trades, "max_trades"))
        self.max_client_messages = int(_positive(max_client_messages, "max_client_messages"))
        self.hold_replay = hold_replay
        self._requested_symbols = symbols
        self.symbols: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.feed_done = threading.Event()  # replay finished / burst generated

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalExchange:
        """Load or prepare the data, bind the port and serve in a background thread."""
        if self._thread is not None:
            raise QuantkitError("this LocalExchange was already started; create a new one")
        self._prepare()
        self._thread = threading.Thread(target=self._run, name="quantkit-exchange", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise QuantkitError(f"local exchange failed to start: {self._error}") from self._error
        if not self._ready.is_set():
            raise QuantkitError("local exchange did not start within 30 s")
        log.info("local exchange on %s (%s, %s)", self.rest_url, self.mode, ",".join(self.symbols))
        return self

    def stop(self) -> None:
        """Close every connection and the port; returns when the server thread has ended."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(self._stopping.set)  # type: ignore[union-attr]
        thread.join(15)

    def __enter__(self) -> LocalExchange:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ws_url(self) -> str:
        """WebSocket base URL, e.g. ``ws://127.0.0.1:9999`` (append ``/market/stream?...``)."""
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """REST base URL, e.g. ``http://127.0.0.1:9999`` (append ``/fapi/v1/...``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def origin(self) -> str:
        """``"simulated"`` or ``"replay"``: exchangeInfo's ``quantkitOrigin``."""
        return "replay" if self.mode == "replay" else "simulated"

    def stream_kind(self) -> str:
        """``"aggTrade"``, or ``"trade"`` when the replayed files hold individual trades only."""
        rec = getattr(self, "_recording", None)
        if rec is not None and not np.any(rec.events.stream % 2 == 0):
            return TRADE
        return AGG

    # -- what it served ----------------------------------------------------------------------

    def trades(self, symbol: str, kind: str | None = None) -> list[Trade]:
        """Every trade served so far for ``symbol`` (oldest first, up to ``max_trades``).

        ``kind`` is ``"aggTrade"`` or ``"trade"``; by default the kind the exchange carries for
        the symbol (aggTrade in synthetic mode, the recorded kind in replay mode).
        """
        return self._tape(symbol, kind).trades()

    def connection_count(self) -> int:
        """Open WebSocket connections."""
        return len(self._hub.conns) if self._loop is not None else 0

    def status(self) -> dict[str, Any]:
        """Connections, messages sent, trades per symbol and kind: also ``GET /quantkit/status``."""
        return {
            "mode": self.mode, "origin": self.origin, "connections": len(self._hub.conns),
            "sent_messages": self._hub.sent_messages, "dropped_slow": self._hub.dropped_slow,
            "rest_requests": self._rest.requests, "used_weight": self._rest.used,
            "feed_done": self.feed_done.is_set(),
            "trades": {s: {k: {"count": len(self._tapes[(s, k)]),
                               "last_id": self._tapes[(s, k)].last_id()}
                           for k in KINDS if len(self._tapes[(s, k)])} for s in self.symbols},
        }

    # -- faults --------------------------------------------------------------------------------

    def drop_connections(self) -> int:
        """Abort every WebSocket connection at the TCP level (no close frame); returns how many."""
        return self._call(self._hub.drop_all)

    def send_malformed(self, n: int = 1) -> None:
        """Send ``n`` malformed frames to every connection (bad JSON, HTML, missing fields)."""
        self._call(self._hub.send_malformed, int(n))

    def go_silent(self, seconds: float) -> int:
        """Stall every open connection for ``seconds``: no trades, no pings, connection open.

        Trades go on being made (REST has them) but are never sent on the stalled connections;
        connections opened meanwhile are served normally, so reconnecting recovers. Returns the
        number of stalled connections.
        """
        seconds = _positive(seconds, "seconds", allow_zero=True)
        return self._call(self._hub.go_silent, seconds)

    def skip_messages(self, n: int) -> None:
        """Do not deliver the next ``n`` trade messages (a gap in ids, connection stays up)."""
        def skip() -> None:
            self._hub.skip_remaining += int(n)
        self._call(skip)

    def rate_limit(self, n: int, *, retry_after: int = 1) -> None:
        """Answer 429 (with ``Retry-After: retry_after``) to the next ``n`` REST calls."""
        def limit() -> None:
            self._rest.forced += int(n)
            self._rest.forced_retry_after = int(retry_after)
        self._call(limit)

    def fault(self, name: str, **params: Any) -> Any:
        """Apply a fault by name (as ``POST /quantkit/fault`` does)."""
        if name not in _FAULTS:
            raise ConfigError(f"unknown fault {name!r}: use one of {', '.join(_FAULTS)}")
        return getattr(self, name)(**params)

    @classmethod
    def spawn(cls, **kwargs: Any) -> ExchangeProcess:
        """Start a LocalExchange in a child process (its own CPU); see :class:`ExchangeProcess`."""
        return ExchangeProcess(kwargs)

    # -- internals -----------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the server's loop and wait for it (faults apply before returning)."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            raise QuantkitError("the local exchange is not running: call start() first")
        if threading.current_thread() is self._thread:
            return fn(*args)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)
        self._loop.call_soon_threadsafe(run)
        return future.result(10)

    def _tape(self, symbol: str, kind: str | None) -> Tape:
        if symbol not in self.symbols:
            raise ConfigError(f"symbol {symbol!r} is not on this exchange: use one of "
                              f"{', '.join(self.symbols)}")
        if kind is None:
            kinds = [k for k in KINDS if len(self._tapes[(symbol, k)])]
            kind = kinds[0] if kinds else (AGG if self.mode == "synthetic" else TRADE)
        if kind not in KINDS:
            raise ConfigError(f"kind must be 'aggTrade' or 'trade', got {kind!r}")
        return self._tapes[(symbol, kind)]

    def _prepare(self) -> None:
        self._recording: Recording | None = None
        self._market: SyntheticMarket | None = None
        if self.mode == "replay":
            rec = load_recording(self.files)
            wanted = self._requested_symbols or rec.symbols
            missing = sorted(set(wanted) - set(rec.symbols))
            if missing:
                raise ConfigError(f"symbols {missing} are not in the replay files, which hold "
                                  f"{', '.join(rec.symbols)}")
            self.symbols = list(rec.symbols)  # stream indexes follow the recording
            keep = np.isin(rec.events.stream // 2, [rec.symbols.index(s) for s in wanted])
            self._recording = Recording(rec.symbols, rec.price_decimals, rec.qty_decimals,
                                        rec.events.take(keep), rec.release_ms[keep])
            self._listed = list(wanted)
            pdec = [rec.price_decimals[s] for s in self.symbols]
            qdec = [rec.qty_decimals[s] for s in self.symbols]
        else:
            self.symbols = list(self._requested_symbols or ("BTCUSDT", "ETHUSDT"))
            self._listed = list(self.symbols)
            profiles = [profile_for(s) for s in self.symbols]
            pdec = [p.price_decimals for p in profiles]
            qdec = [p.qty_decimals for p in profiles]
            rate = max(self.rate, 10_000.0) if self.burst else self.rate
            # A burst's trades lie just before now, as if they had happened already.
            start = _now_ms() - (int(self.burst / rate * 1000) + 1000 if self.burst else 0)
            self._market = SyntheticMarket(self.symbols, rate=rate, seed=self.seed,
                                           start_ms=start)
        self._pdec, self._qdec = pdec, qdec
        self._tapes = {(s, k): Tape(s, k, price_decimals=pdec[i], qty_decimals=qdec[i],
                                    max_rows=self.max_trades)
                       for i, s in enumerate(self.symbols) for k in KINDS}
        self._by_stream = [self._tapes[(s, k)] for s in self.symbols for k in KINDS]
        self._hub = Hub(self.symbols, price_decimals=pdec, qty_decimals=qdec,
                        ping_interval=self.ping_interval, pong_timeout=self.pong_timeout,
                        max_connection_age=self.max_connection_age,
                        max_client_messages=self.max_client_messages)
        self._rest = RestState({k: t for k, t in self._tapes.items() if k[0] in self._listed},
                               self._exchange_info, weight_limit=self.weight_limit,
                               ban_seconds=self.ban_seconds)
        self._burst_events: Events | None = None
        self._burst_cache: dict[tuple[tuple[int, ...], bool], tuple[list[bytes], int]] = {}
        if self.burst:
            events = self._market.advance_messages(self.burst)  # type: ignore[union-attr]
            nth = np.flatnonzero(events.stream % 2 == 0)[self.burst - 1]
            self._burst_events = events.take(slice(0, nth + 1))
            self._store(self._burst_events)
            # Encode the usual subscription (every symbol's aggTrade, combined) up front, so the
            # first reader measures the socket, not the encoder.
            self._burst_chunks(np.arange(0, 2 * len(self.symbols), 2), True)
            self.feed_done.set()

    def _exchange_info(self) -> dict[str, Any]:
        symbols = []
        for s in self._listed:
            i = self.symbols.index(s)
            pd, qd = self._pdec[i], self._qdec[i]
            tick = profile_for(s).tick if self.mode == "synthetic" else 1
            tick_size = f"{tick / 10 ** pd:.{pd}f}" if pd else str(tick)
            step = f"{1 / 10 ** qd:.{qd}f}" if qd else "1"
            base = s[:-4] if s.endswith("USDT") else s[:-3]
            symbols.append({
                "symbol": s, "pair": s, "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000, "onboardDate": 1569398400000,
                "status": "TRADING", "baseAsset": base, "quoteAsset": s[len(base):],
                "marginAsset": s[len(base):], "pricePrecision": pd, "quantityPrecision": qd,
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
                "filters": [
                    {"minPrice": tick_size, "maxPrice": "4529764", "filterType": "PRICE_FILTER",
                     "tickSize": tick_size},
                    {"stepSize": step, "filterType": "LOT_SIZE", "maxQty": "1000",
                     "minQty": step},
                    {"stepSize": step, "filterType": "MARKET_LOT_SIZE", "maxQty": "120",
                     "minQty": step},
                ],
                "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC", "FOK"],
            })
        return {"timezone": "UTC", "serverTime": 0, "futuresType": "U_MARGINED",
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                     "limit": self.weight_limit},
                    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                     "limit": 1200},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                     "limit": 300}],
                "exchangeFilters": [], "assets": [], "symbols": symbols,
                "quantkitOrigin": self.origin}

    def _store(self, events: Events) -> None:
        streams = events.stream
        for s in np.unique(streams):
            self._by_stream[int(s)].append(events.take(streams == s))

    def _publish(self, events: Events) -> list[Any]:
        self._store(events)
        return self._hub.broadcast(events)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        hub = self._hub
        routes: list[Any] = []
        for prefix, route in (("/market", "market"), ("/public", "public"), ("", "legacy")):
            routes.append((prefix + r"/stream", StreamHandler,
                           {"hub": hub, "route": route, "combined": True}))
            routes.append((prefix + r"/ws/?(.*)", StreamHandler,
                           {"hub": hub, "route": route, "combined": False}))
        routes += rest_routes(self._rest)
        routes += [(r"/quantkit/fault", FaultHandler, {"exchange": self}),
                   (r"/quantkit/status", StatusHandler, {"exchange": self})]
        app = tornado.web.Application(routes, websocket_max_message_size=1 << 20,
                                      log_function=_log_request)
        sockets = tornado.netutil.bind_sockets(self.port, self.host)
        self.port = sockets[0].getsockname()[1]
        server = tornado.httpserver.HTTPServer(app, xheaders=False)
        server.add_sockets(sockets)
        subscribed = asyncio.Event()

        carried = (np.unique(self._recording.events.stream) if self._recording is not None
                   else np.arange(2 * len(self.symbols)))

        def on_subscribe(conn: StreamHandler) -> None:
            if np.isin(conn.stream_array, carried).any():  # a stream that has data to play
                subscribed.set()
            if self._burst_events is not None and not getattr(conn, "burst_started", False):
                conn.burst_started = True  # type: ignore[attr-defined]
                tasks.append(asyncio.ensure_future(self._send_burst(conn)))
        tasks: list[asyncio.Future[None]] = []
        hub.on_subscribe = on_subscribe
        tasks.append(asyncio.ensure_future(self._housekeeping()))
        if self._recording is not None:
            tasks.append(asyncio.ensure_future(self._replay(subscribed)))
        elif not self.burst:
            tasks.append(asyncio.ensure_future(self._synthetic()))
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for conn in list(hub.conns):
                conn.close(1001, "server shutting down")
            await asyncio.sleep(0.05)
            hub.drop_all()
            await server.close_all_connections()

    async def _housekeeping(self) -> None:
        period = max(0.01, min(1.0, self.ping_interval / 4, self.pong_timeout / 4,
                               self.max_connection_age / 4))
        while True:
            await asyncio.sleep(period)
            try:
                self._hub.housekeeping()
            except Exception:  # keep the loop alive; a bad connection must not stop pings
                log.exception("housekeeping failed")

    async def _synthetic(self) -> None:
        market = self._market
        assert market is not None
        while True:
            try:
                events = market.advance(_now_ms())
                if len(events):
                    self._publish(events)
            except Exception:
                log.exception("synthetic feed failed")
            await asyncio.sleep(0.01)

    async def _replay(self, subscribed: asyncio.Event) -> None:
        rec = self._recording
        assert rec is not None
        if self.hold_replay:
            await subscribed.wait()
        release, n, pos = rec.release_ms, len(rec.events), 0
        t0 = time.monotonic()
        while pos < n:
            if self.speed > 0:
                due = release[0] + (time.monotonic() - t0) * 1000 * self.speed
                hi = int(np.searchsorted(release, due, side="right"))
            else:
                hi = min(n, pos + 2000)
            if hi > pos:
                futures = self._publish(rec.events.take(slice(pos, hi)))
                pos = hi
                if self.speed == 0 and futures:
                    # As fast as the clients read: wait until the kernel took this chunk.
                    await asyncio.gather(*futures, return_exceptions=True)
            if self.speed > 0 and pos < n:
                wait = (release[pos] - release[0]) / self.speed / 1000 - (time.monotonic() - t0)
                await asyncio.sleep(min(max(wait, 0.0), 0.05))
            else:
                await asyncio.sleep(0)
        self.feed_done.set()
        log.info("replay finished: %d trades", n)

    def _burst_chunks(self, streams: np.ndarray, combined: bool) -> tuple[list[bytes], int]:
        """The burst's frames for one subscription, joined into chunks (cached: encoded once)."""
        key = (tuple(streams.tolist()), combined)
        cached = self._burst_cache.get(key)
        if cached is None:
            events = self._burst_events
            assert events is not None
            pos = np.flatnonzero(np.isin(events.stream, streams))
            frames = encode_frames(events, pos, symbols=self.symbols, price_decimals=self._pdec,
                                   qty_decimals=self._qdec, combined=combined)
            cached = ([b"".join(frames[i:i + _BURST_CHUNK])
                       for i in range(0, len(frames), _BURST_CHUNK)], len(frames))
            self._burst_cache[key] = cached
        return cached

    async def _send_burst(self, conn: StreamHandler) -> None:
        chunks, count = self._burst_chunks(conn.stream_array, conn.combined)
        for chunk in chunks:
            fut = conn.write_frames(chunk)
            if fut is None:
                return
            try:
                await fut  # flow control: the next chunk once the kernel took this one
            except Exception:
                return
        self._hub.sent_messages += count


class _AdminHandler(tornado.web.RequestHandler):
    def initialize(self, exchange: LocalExchange) -> None:
        self.exchange = exchange

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")


class FaultHandler(_AdminHandler):
    """``POST /quantkit/fault`` with ``{"fault": "skip_messages", "n": 5}`` and the like."""

    def post(self) -> None:
        try:
            body = orjson.loads(self.request.body or b"{}")
            name = body.pop("fault")
            result = self.exchange.fault(name, **body)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ConfigError) as exc:
            self.set_status(400)
            self.finish(orjson.dumps({"error": f"bad fault request: {exc}; send JSON like "
                                      '{"fault": "go_silent", "seconds": 5}'}))
            return
        self.finish(orjson.dumps({"ok": True, "result": result}))


class StatusHandler(_AdminHandler):
    """``GET /quantkit/status``: :meth:`LocalExchange.status`."""

    def get(self) -> None:
        self.finish(orjson.dumps(self.exchange.status()))


def _child_main() -> None:
    """Entry point of :class:`ExchangeProcess`'s child: options as JSON in argv[1]."""
    import sys
    kwargs = orjson.loads(sys.argv[1])
    try:
        exchange = LocalExchange(**kwargs).start()
    except QuantkitError as exc:
        print(orjson.dumps({"error": str(exc)}).decode(), flush=True)
        return
    print(orjson.dumps({"port": exchange.port}).decode(), flush=True)
    sys.stdin.read()  # EOF (the parent closed the pipe or went away) means stop
    exchange.stop()


class ExchangeProcess:
    """A :class:`LocalExchange` in a child process, driven over its admin HTTP endpoint.

    Same URLs, fault methods and ``status()`` as the in-process exchange; ``stop()`` ends it.
    The child is a fresh interpreter (``subprocess``), so this works from notebooks and from
    scripts without an ``if __name__ == "__main__"`` guard.
    """

    def __init__(self, kwargs: dict[str, Any]) -> None:
        options = {k: ([str(f) for f in v] if k == "files" else v) for k, v in kwargs.items()}
        code = "from quantkit.exchange.server import _child_main; _child_main()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, orjson.dumps(options).decode()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        try:
            reply = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.process.kill()
            raise QuantkitError(f"the exchange process failed to start: {line!r}") from None
        if "port" not in reply:
            self.process.wait(5)
            raise QuantkitError(f"the exchange process failed to start: {reply.get('error')}")
        self.host = kwargs.get("host", "127.0.0.1")
        self.port = int(reply["port"])

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.rest_url}/quantkit/status", timeout=10) as resp:
            return orjson.loads(resp.read())

    def connection_count(self) -> int:
        return int(self.status()["connections"])

    def fault(self, name: str, **params: Any) -> Any:
        """Apply a fault in the child (see :meth:`LocalExchange.fault`)."""
        req = urllib.request.Request(f"{self.rest_url}/quantkit/fault", method="POST",
                                     data=orjson.dumps({"fault": name, **params}),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return orjson.loads(resp.read())["result"]

    def drop_connections(self) -> int:
        return self.fault("drop_connections")

    def send_malformed(self, n: int = 1) -> None:
        self.fault("send_malformed", n=n)

    def go_silent(self, seconds: float) -> None:
        self.fault("go_silent", seconds=seconds)

    def skip_messages(self, n: int) -> None:
        self.fault("skip_messages", n=n)

    def rate_limit(self, n: int, *, retry_after: int = 1) -> None:
        self.fault("rate_limit", n=n, retry_after=retry_after)

    def stop(self) -> None:
        """Stop the child process (closing its stdin asks it to stop cleanly)."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ExchangeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
