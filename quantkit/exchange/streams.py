"""The WebSocket side of the local exchange: Binance's routed stream paths, subscriptions,
keep-alive, client limits, and delivery of pre-encoded frames.

:class:`Hub` knows every open connection and turns :class:`~.tape.Events` into WebSocket
frames, written many per socket write; :class:`StreamHandler` is one client connection.
"""
from __future__ import annotations

import collections
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
from tornado.iostream import StreamBufferFullError, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .tape import KINDS, Events, format_scaled

__all__ = ["MALFORMED_FRAMES", "Hub", "StreamHandler", "encode_frames", "ws_frame"]

log = logging.getLogger(__name__)

# Binance's payloads, field for field and in Binance's order (see quantkit.wire for the letters).
_AGG = '{"e":"aggTrade","E":%d,"a":%d,"s":"%s","p":"%s","q":"%s","f":%d,"l":%d,"T":%d,"m":%s}'
_TRADE = '{"e":"trade","E":%d,"T":%d,"s":"%s","t":%d,"p":"%s","q":"%s","X":"MARKET","m":%s}'
_COMBINED = '{"stream":"%s","data":%s}'

#: What :meth:`Hub.send_malformed` sends, in turn: truncated JSON, an HTML error page (what a
#: proxy in the path returns), and a trade message with its fields missing.
MALFORMED_FRAMES = (
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":17231612563',
    b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1723161256322,"s":"BTCUSDT"}}',
)

_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_MAX_STREAMS = 1024


def ws_frame(payload: bytes) -> bytes:
    """An unmasked, final, text WebSocket frame (RFC 6455 section 5.2) around ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def encode_frames(events: Events, positions: np.ndarray, *, symbols: Sequence[str],
                  price_decimals: Sequence[int], qty_decimals: Sequence[int],
                  combined: bool) -> list[bytes]:
    """WebSocket frames of ``events[positions]``, raw payloads or combined-stream envelopes."""
    cols = [col[positions].tolist() for col in events]
    out = []
    names = [f"{s.lower()}@{k}" for s in symbols for k in KINDS]
    for stream, i, e_time, t_time, p, q, f, l, m in zip(*cols):
        sym = stream >> 1
        price = format_scaled(p, price_decimals[sym])
        qty = format_scaled(q, qty_decimals[sym])
        maker = "true" if m else "false"
        if stream & 1:
            payload = _TRADE % (e_time, t_time, symbols[sym], i, price, qty, maker)
        else:
            payload = _AGG % (e_time, i, symbols[sym], price, qty, f, l, t_time, maker)
        if combined:
            payload = _COMBINED % (names[stream], payload)
        out.append(ws_frame(payload.encode()))
    return out


class Hub:
    """Open connections of one exchange, and what each should receive.

    Parameters
    ----------
    symbols, price_decimals, qty_decimals
        The exchange's symbols in stream order and how their numbers are printed.
    ping_interval, pong_timeout, max_connection_age
        Keep-alive in seconds: ping every ``ping_interval``; drop a client whose last pong is
        older than ``pong_timeout``; close connections older than ``max_connection_age``.
    max_client_messages
        Incoming messages (text, ping, pong) allowed per second; more closes the connection.
    max_buffer
        Bytes queued for a client that does not read before it is dropped as too slow.
    """

    def __init__(self, symbols: Sequence[str], *, price_decimals: Sequence[int],
                 qty_decimals: Sequence[int], ping_interval: float, pong_timeout: float,
                 max_connection_age: float, max_client_messages: int = 10,
                 max_buffer: int = 64 << 20) -> None:
        self.symbols = list(symbols)
        self.price_decimals = list(price_decimals)
        self.qty_decimals = list(qty_decimals)
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.max_connection_age = max_connection_age
        self.max_client_messages = max_client_messages
        self.max_buffer = max_buffer
        self.conns: set[StreamHandler] = set()
        self._stream_ids = {f"{s.lower()}@{k}": i * 2 + j
                            for i, s in enumerate(self.symbols) for j, k in enumerate(KINDS)}
        self.skip_remaining = 0
        self.sent_messages = 0
        self.dropped_slow = 0
        self._malformed_next = 0
        #: Called with a connection whenever it gains a deliverable stream.
        self.on_subscribe: Callable[[StreamHandler], None] | None = None

    def resolve(self, name: str, route: str) -> int | None:
        """Stream index that ``name`` delivers on ``route``, or None (acknowledged, silent).

        Trades flow only on the ``market`` route, for exact lowercase names of listed symbols,
        as on Binance: legacy and ``/public`` paths, unknown symbols and upper-case names get
        nothing.
        """
        return self._stream_ids.get(name) if route == "market" else None

    def go_silent(self, seconds: float) -> int:
        """Stall the open connections for ``seconds``: nothing sent, not even pings; what
        happens meanwhile is never sent on them. New connections are served normally, so a
        client that notices the silence and reconnects recovers. Returns how many stalled."""
        until = time.monotonic() + seconds
        for conn in self.conns:
            conn.silent_until = until
        return len(self.conns)

    def broadcast(self, events: Events) -> list[Any]:
        """Send ``events`` to every subscriber; returns the write futures (for flow control)."""
        if not self.conns or len(events) == 0:
            return []
        wanted = []
        union = np.zeros(len(events), dtype=bool)
        now = time.monotonic()
        for conn in list(self.conns):
            if conn.stream_array.size and now >= conn.silent_until:
                mask = np.isin(events.stream, conn.stream_array)
                if mask.any():
                    wanted.append((conn, mask))
                    union |= mask
        if not wanted:
            return []
        if self.skip_remaining:
            skipped = np.flatnonzero(union)[:self.skip_remaining]
            self.skip_remaining -= len(skipped)
            union[skipped] = False
            for _, mask in wanted:
                mask[skipped] = False
        frames: dict[bool, np.ndarray] = {}
        futures = []
        for conn, mask in wanted:
            fmt = conn.combined
            if fmt not in frames:
                need = union if len(wanted) > 1 else mask
                arr = np.empty(len(events), dtype=object)
                pos = np.flatnonzero(need)
                arr[pos] = encode_frames(events, pos, symbols=self.symbols,
                                         price_decimals=self.price_decimals,
                                         qty_decimals=self.qty_decimals, combined=fmt)
                frames[fmt] = arr
            chosen = frames[fmt][mask]
            if len(chosen):
                fut = conn.write_frames(b"".join(chosen))
                if fut is not None:
                    futures.append(fut)
                    self.sent_messages += len(chosen)
        return futures

    def send_malformed(self, n: int) -> None:
        """Send ``n`` malformed frames to every connection."""
        for _ in range(n):
            frame = ws_frame(MALFORMED_FRAMES[self._malformed_next % len(MALFORMED_FRAMES)])
            self._malformed_next += 1
            for conn in list(self.conns):
                conn.write_frames(frame)

    def drop_all(self) -> int:
        """Abort every connection at the TCP level (no close frame); returns how many."""
        conns = list(self.conns)
        for conn in conns:
            conn.abort()
        return len(conns)

    def housekeeping(self) -> None:
        """Ping, drop clients that stopped answering, close connections past their age."""
        now = time.monotonic()
        for conn in list(self.conns):
            if now - conn.last_pong > self.pong_timeout:
                log.info("dropping a client that sent no pong for %.1f s", now - conn.last_pong)
                conn.abort()
            elif now - conn.opened_at > self.max_connection_age:
                conn.close(1000, "connection age limit reached")
            elif now >= conn.silent_until and now - conn.last_ping >= self.ping_interval:
                conn.last_ping = now
                try:
                    conn.ping(b"")
                except WebSocketClosedError:
                    pass


class StreamHandler(WebSocketHandler):
    """One client connection on a routed (``market``/``public``) or legacy path."""

    hub: Hub
    route: str
    combined: bool

    def initialize(self, hub: Hub, route: str, combined: bool) -> None:
        self.hub = hub
        self.route = route
        self.combined = combined
        self.subscriptions: dict[str, int | None] = {}
        self.stream_array = np.zeros(0, dtype=np.int64)
        self.silent_until = 0.0
        self._incoming: collections.deque[float] = collections.deque()

    def check_origin(self, origin: str) -> bool:
        return True  # browsers on any page may connect, like Binance

    def open(self, path_streams: str | None = None) -> None:  # type: ignore[override]
        now = time.monotonic()
        self.opened_at = self.last_pong = self.last_ping = now
        self.set_nodelay(True)
        stream = self.ws_connection.stream  # type: ignore[union-attr]
        stream.max_write_buffer_size = self.hub.max_buffer
        self.hub.conns.add(self)
        names = self.get_query_argument("streams", None) if self.combined else path_streams
        if names:
            self._subscribe(names.split("/"))

    def on_close(self) -> None:
        self.hub.conns.discard(self)

    def on_ping(self, data: bytes) -> None:
        self._count_incoming()

    def on_pong(self, data: bytes) -> None:
        self.last_pong = time.monotonic()
        self._count_incoming()

    def on_message(self, message: str | bytes) -> None:
        if not self._count_incoming():
            return
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            self._error(3, f"Invalid JSON: {exc}", None)
            return
        if not isinstance(request, dict):
            self._error(2, "Invalid request: expected a JSON object", None)
            return
        req_id = request.get("id")
        if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, (int, str))
                                   or (isinstance(req_id, int) and req_id < 0)):
            self._error(2, "Invalid request: request ID must be an unsigned integer", None)
            return
        method = request.get("method")
        params = request.get("params", [])
        if method not in _METHODS:
            self._error(2, f"Invalid request: unknown variant `{method}`, expected one of "
                        + ", ".join(f"`{m}`" for m in _METHODS), req_id)
            return
        if not isinstance(params, list) or not all(isinstance(p, (str, bool)) for p in params):
            self._error(1, "Invalid value type: expected a list of stream names", req_id)
            return
        if method == "SUBSCRIBE":
            if len(set(self.subscriptions) | set(params)) > _MAX_STREAMS:
                self._error(2, f"Invalid request: more than {_MAX_STREAMS} streams", req_id)
                return
            self._subscribe([p for p in params if isinstance(p, str)])
            result: Any = None
        elif method == "UNSUBSCRIBE":
            for name in params:
                self.subscriptions.pop(name, None)
            self._update_streams()
            result = None
        elif method == "LIST_SUBSCRIPTIONS":
            result = list(self.subscriptions)
        elif method == "GET_PROPERTY":
            result = self.combined
        else:  # SET_PROPERTY ["combined", true]
            if len(params) != 2 or params[0] != "combined" or not isinstance(params[1], bool):
                self._error(0, "Unknown property", req_id)
                return
            self.combined = params[1]
            result = None
        self._reply({"result": result, "id": req_id})

    def write_frames(self, data: bytes) -> Any:
        """Queue pre-encoded frames; drops the client if it lets too much pile up."""
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return None
        try:
            return conn.stream.write(data)  # type: ignore[attr-defined]
        except StreamBufferFullError:
            self.hub.dropped_slow += 1
            log.warning("dropping a client that does not keep up (%d MiB queued)",
                        self.hub.max_buffer >> 20)
            self.abort()
        except StreamClosedError:
            pass
        return None

    def abort(self) -> None:
        """Close the TCP connection with a reset: no close frame, like a dying network path."""
        conn = self.ws_connection
        stream = getattr(conn, "stream", None)
        if stream is None or stream.closed():
            return
        try:
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        stream.close()

    def _subscribe(self, names: list[str]) -> None:
        had = set(self.stream_array.tolist())
        for name in names:
            if name:
                self.subscriptions[name] = self.hub.resolve(name, self.route)
        self._update_streams()
        if set(self.stream_array.tolist()) - had and self.hub.on_subscribe is not None:
            self.hub.on_subscribe(self)

    def _update_streams(self) -> None:
        ids = sorted({i for i in self.subscriptions.values() if i is not None})
        self.stream_array = np.array(ids, dtype=np.int64)

    def _count_incoming(self) -> bool:
        now = time.monotonic()
        q = self._incoming
        q.append(now)
        while q and now - q[0] > 1.0:
            q.popleft()
        if len(q) > self.hub.max_client_messages:
            log.info("closing a client that sent %d messages within a second", len(q))
            self.close(1008, "Too many requests")
            return False
        return True

    def _reply(self, obj: dict[str, Any]) -> None:
        try:
            self.write_message(orjson.dumps(obj).decode())
        except (WebSocketClosedError, StreamClosedError, StreamBufferFullError):
            pass

    def _error(self, code: int, msg: str, req_id: Any) -> None:
        self._reply({"error": {"code": code, "msg": msg}, "id": req_id})
