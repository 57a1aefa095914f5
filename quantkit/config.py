"""One settings object for all of quantkit: defaults, then environment variables, then arguments.

>>> s = Settings.load(symbols="btcusdt,ethusdt")        # doctest: +SKIP
>>> s.symbols
('BTCUSDT', 'ETHUSDT')
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = [
    "BINANCE_REST_URL",
    "BINANCE_WS_URL",
    "STREAM_KINDS",
    "Settings",
    "default_db_path",
    "parse_symbols",
    "suggest_symbol",
]

BINANCE_WS_URL = "wss://fstream.binance.com"
BINANCE_REST_URL = "https://fapi.binance.com"

#: Stream kind -> Binance's routed WebSocket path that carries it (since 2026-04-23 the
#: unrouted ``/stream`` path accepts SUBSCRIBE and then delivers nothing).
STREAM_KINDS: dict[str, str] = {"aggTrade": "/market", "trade": "/market"}

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")

#: Environment variable for each settings field that can be set from the environment.
ENV_VARS: dict[str, str] = {
    "symbols": "QUANTKIT_SYMBOLS",
    "stream": "QUANTKIT_STREAM",
    "db": "QUANTKIT_DB",
    "ws_url": "QUANTKIT_WS_URL",
    "rest_url": "QUANTKIT_REST_URL",
    "ws_path": "QUANTKIT_WS_PATH",
}


def default_db_path() -> Path:
    """Where the tick store lives unless told otherwise: ``~/.quantkit/binance-futures.db``."""
    return Path.home() / ".quantkit" / "binance-futures.db"


def parse_symbols(value: str | Iterable[str]) -> tuple[str, ...]:
    """Normalise ``"btcusdt, ETHUSDT"`` or an iterable of names to ``('BTCUSDT', 'ETHUSDT')``.

    Raises
    ------
    ConfigError
        If the list is empty, has duplicates, or a name is not a plausible Binance symbol.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    symbols = tuple(s.strip().upper() for s in items if s and s.strip())
    if not symbols:
        raise ConfigError("symbols: give at least one symbol, e.g. --symbols BTCUSDT,ETHUSDT")
    for sym in symbols:
        if not _SYMBOL_RE.match(sym):
            raise ConfigError(
                f"symbols: {sym!r} is not a Binance futures symbol "
                "(letters and digits only, e.g. BTCUSDT)"
            )
    dupes = sorted({s for s in symbols if symbols.count(s) > 1})
    if dupes:
        raise ConfigError(f"symbols: {', '.join(dupes)} given more than once")
    return symbols


def suggest_symbol(symbol: str, known: Iterable[str]) -> str:
    """An error message for an unknown symbol, with the closest known names."""
    close = difflib.get_close_matches(symbol, list(known), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown symbol {symbol!r}: the exchange does not list it as trading.{hint}"


def _check_base_url(name: str, url: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(
            f"{name}: {url!r} is not a base URL; give scheme and host[:port] only, "
            f"e.g. {schemes[-1]}://host:port"
        )
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(
            f"{name}: {url!r} has a path; give scheme and host[:port] only "
            "(quantkit appends Binance's routed path itself)"
        )
    return f"{parts.scheme}://{parts.netloc}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything ingestion and the CLI need to know.

    Build it with :meth:`load`, which applies defaults, then the ``QUANTKIT_*`` environment
    variables, then keyword arguments (``None`` means "not given").
    """

    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    stream: str = "aggTrade"
    db: Path = dataclasses.field(default_factory=default_db_path)
    ws_url: str = BINANCE_WS_URL
    rest_url: str = BINANCE_REST_URL
    #: Routed path override ("/market", "/public"); empty means the default for ``stream``.
    ws_path: str = ""
    #: Flush a transaction after this many rows ...
    batch_rows: int = 1000
    #: ... or after this many seconds, whichever comes first.
    batch_seconds: float = 0.1
    #: Reconnect when no message arrived for this long (a silent feed is a dead feed).
    silence_timeout: float = 30.0
    #: Rotate the connection before Binance's 24 h limit closes it for us.
    max_connection_age: float = 23.5 * 3600
    #: Reconnect backoff: base * 2**attempt with full jitter, capped.
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    #: Stay under this share of the exchange's per-minute REST weight limit.
    rest_weight_budget: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", parse_symbols(self.symbols))
        if self.stream not in STREAM_KINDS:
            raise ConfigError(
                f"stream: {self.stream!r} is not supported; use one of {', '.join(STREAM_KINDS)}"
            )
        object.__setattr__(self, "db", Path(self.db).expanduser())
        object.__setattr__(self, "ws_url", _check_base_url("ws_url", self.ws_url, ("ws", "wss")))
        object.__setattr__(
            self, "rest_url", _check_base_url("rest_url", self.rest_url, ("http", "https"))
        )
        if self.ws_path and not re.fullmatch(r"/[A-Za-z0-9_-]+", self.ws_path):
            raise ConfigError(f"ws_path: {self.ws_path!r} must look like '/market'")
        for name in ("batch_seconds", "silence_timeout", "max_connection_age", "backoff_base",
                     "backoff_cap"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)!r}")
        if not 1 <= self.batch_rows <= 1_000_000:
            raise ConfigError(f"batch_rows: must be between 1 and 1000000, got {self.batch_rows}")
        if not 0 < self.rest_weight_budget <= 1:
            raise ConfigError("rest_weight_budget: must be in (0, 1]")

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then environment variables (``QUANTKIT_DB`` ...), then ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field, var in ENV_VARS.items():
            if env.get(var):
                values[field] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)

    @property
    def is_binance(self) -> bool:
        """True when the settings point at the real Binance endpoints."""
        return self.rest_url == BINANCE_REST_URL

    def stream_names(self) -> list[str]:
        """Binance stream names, e.g. ``['btcusdt@aggTrade', 'ethusdt@aggTrade']``."""
        return [f"{s.lower()}@{self.stream}" for s in self.symbols]

    def stream_url(self) -> str:
        """The combined-stream URL on the routed path for this stream kind."""
        path = self.ws_path or STREAM_KINDS[self.stream]
        return f"{self.ws_url}{path}/stream?streams={'/'.join(self.stream_names())}"
