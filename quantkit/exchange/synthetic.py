"""A synthetic, cointegrated market: BTC-like and ETH-like trades with bursty arrivals.

:class:`SyntheticMarket` advances in fixed virtual steps and returns :class:`~.tape.Events`
(aggregate trades and the individual trades they cover); the server releases them on the wall
clock. The sequence depends only on the seed, never on how often it is advanced.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from ..errors import ConfigError
from .tape import Events

__all__ = ["SymbolProfile", "SyntheticMarket", "profile_for"]


@dataclass(frozen=True)
class SymbolProfile:
    """How one synthetic symbol looks on the wire and moves."""

    symbol: str
    price: float  # starting price
    price_decimals: int  # digits Binance prints ("61800.30": 2)
    tick: int  # tick size in units of 10**-price_decimals (BTCUSDT: 0.10 -> 10)
    qty_decimals: int  # step size is 10**-qty_decimals
    mean_lots: float  # mean size of one individual trade, in qty steps
    beta: float  # loading on the common log-price trend
    spread_vol: float  # stationary std of its own mean-reverting log deviation
    share: float  # share of the messages
    first_agg_id: int
    first_trade_id: int


_KNOWN = {
    "BTCUSDT": SymbolProfile("BTCUSDT", 60_000.0, 2, 10, 3, 40.0, 1.0, 2e-4, 0.55,
                             2_310_000_000, 5_270_000_000),
    "ETHUSDT": SymbolProfile("ETHUSDT", 3_000.0, 2, 1, 3, 400.0, 1.2, 6e-4, 0.45,
                             1_890_000_000, 4_310_000_000),
}


def profile_for(symbol: str) -> SymbolProfile:
    """The profile of ``symbol``: BTC-like and ETH-like for those two, a generic alt otherwise."""
    if symbol in _KNOWN:
        return _KNOWN[symbol]
    h = zlib.crc32(symbol.encode())
    return SymbolProfile(symbol, 5.0 + h % 500, 4, 1, 1, 200.0, 0.8 + (h % 7) / 10, 1e-3,
                         0.2, 100_000_000 + h % 900_000_000, 300_000_000 + h % 900_000_000)


class SyntheticMarket:
    """Cointegrated log prices with Hawkes-process arrivals.

    Parameters
    ----------
    symbols
        Symbols in stream order (``Events.stream // 2`` indexes them).
    rate
        Mean aggregate-trade messages per second across all symbols.
    seed
        Same seed, same trades (ids, prices, quantities, sides, spacing).
    start_ms
        Wall-clock ms of virtual time zero; trade times are ``start_ms`` plus virtual time.
    step_ms
        Virtual time step of the latent processes and of the arrival intensity.
    volatility
        Standard deviation of the common log trend per square-root second (1e-4 is about 56 %
        a year, BTC-like).
    half_life
        Half-life in seconds of each symbol's deviation from the common trend.

    Notes
    -----
    With a common random walk :math:`W` and independent Ornstein-Uhlenbeck deviations
    :math:`u_i`,

    .. math:: \\log P_i(t) = \\log P_i(0) + \\beta_i W(t) + u_i(t),

    so :math:`\\log P_2 - (\\beta_2/\\beta_1) \\log P_1` is stationary: the pair is cointegrated
    with hedge ratio :math:`\\beta_2/\\beta_1` in log prices. Arrivals follow a discretised
    Hawkes process :math:`\\lambda(t) = \\mu + \\sum_{t_k < t} \\alpha e^{-(t - t_k)/\\tau}` with
    branching ratio :math:`\\eta = \\alpha\\tau = 0.6` and :math:`\\mu = (1 - \\eta)\\,` rate, so
    the mean rate is ``rate`` and trades come in bursts. Each message aggregates
    :math:`k \\sim` Geometric(0.55) individual trades; takers sell at the bid and buy at the
    ask, with persistent signs (a side repeats with probability 0.65).
    """

    ETA = 0.6
    TAU_S = 0.5
    SIDE_PERSISTENCE = 0.65
    SINGLE_TRADE_P = 0.55

    def __init__(self, symbols: tuple[str, ...] | list[str], *, rate: float, seed: int = 0,
                 start_ms: int, step_ms: int = 10, volatility: float = 1e-4,
                 half_life: float = 60.0) -> None:
        if not symbols:
            raise ConfigError("symbols is empty: give at least one symbol, e.g. ('BTCUSDT',)")
        if not rate > 0 or not math.isfinite(rate):
            raise ConfigError(f"rate must be a positive number of messages/s, got {rate!r}")
        self.profiles = [profile_for(s) for s in symbols]
        self.rate = float(rate)
        self.start_ms = int(start_ms)
        self.step_ms = int(step_ms)
        self._steps_done = 0
        dt = step_ms / 1000.0
        self._dt = dt
        self._vol_step = volatility * math.sqrt(dt)
        theta = math.log(2) / half_life
        self._ou_a = math.exp(-theta * dt)
        self._ou_s = np.array([p.spread_vol for p in self.profiles]) * math.sqrt(
            1 - self._ou_a ** 2)
        self._log_p0 = np.log([p.price for p in self.profiles])
        self._beta = np.array([p.beta for p in self.profiles])
        shares = np.array([p.share for p in self.profiles])
        self._cum_share = np.cumsum(shares / shares.sum())
        self._base = self.rate * (1 - self.ETA)
        self._jump = self.ETA / self.TAU_S
        self._decay = math.exp(-dt / self.TAU_S)
        self._excite = self.ETA * self.rate  # the stationary mean: no warm-up ramp
        self._w = 0.0
        self._ou = np.zeros(len(symbols))
        self._side = np.zeros(len(symbols), dtype=np.int64)
        self._next_agg = np.array([p.first_agg_id for p in self.profiles], dtype=np.int64)
        self._next_trade = np.array([p.first_trade_id for p in self.profiles], dtype=np.int64)
        # One generator per component: each draws in the same order whatever the chunking.
        names = ("count", "trend", "dev", "time", "symbol", "side", "size", "lots")
        self._rng = dict(zip(names, (np.random.default_rng(s) for s in
                                     np.random.SeedSequence(seed).spawn(len(names)))))

    @property
    def symbols(self) -> list[str]:
        """Symbols in stream order."""
        return [p.symbol for p in self.profiles]

    def advance(self, until_ms: int) -> Events:
        """All events with virtual time before ``until_ms`` not yet returned, in order."""
        steps = (int(until_ms) - self.start_ms) // self.step_ms - self._steps_done
        return self.advance_steps(max(steps, 0))

    def advance_messages(self, n: int) -> Events:
        """At least ``n`` aggregate-trade messages (whole steps), for pre-generated bursts."""
        parts = []
        got = 0
        while got < n:
            chunk = self.advance_steps(max(1, int((n - got) / max(self.rate * self._dt, 1e-9))))
            got += int(np.count_nonzero(chunk.stream % 2 == 0))
            parts.append(chunk)
        return Events(*(np.concatenate(cols) for cols in zip(*parts)))

    def advance_steps(self, steps: int) -> Events:
        """Advance ``steps`` virtual steps and return their events."""
        rng = self._rng
        counts = np.zeros(steps, dtype=np.int64)
        cap = 10.0 * self.rate
        for j in range(steps):  # the Hawkes recursion is sequential; one scalar draw a step
            n = rng["count"].poisson((self._base + self._excite) * self._dt)
            counts[j] = n
            self._excite = min(self._excite * self._decay + self._jump * n, cap)
        trend = self._w + np.cumsum(rng["trend"].standard_normal(steps) * self._vol_step)
        if steps:
            self._w = float(trend[-1])
        shocks = rng["dev"].standard_normal((steps, len(self.profiles))) * self._ou_s
        # The AR(1) recursion dev[j] = a * dev[j-1] + shock[j], run as a linear filter.
        dev, _ = lfilter([1.0], [1.0, -self._ou_a], shocks, axis=0,
                         zi=(self._ou_a * self._ou)[None, :])
        if steps:
            self._ou = dev[-1].copy()
        first_step = self._steps_done
        self._steps_done += steps
        return self._events(counts, first_step, self._log_p0 + trend[:, None] * self._beta + dev)

    def _events(self, counts: np.ndarray, first_step: int, log_mid: np.ndarray) -> Events:
        rng = self._rng
        n = int(counts.sum())
        step = np.repeat(np.arange(len(counts)), counts)
        offset = (step + rng["time"].random(n)) * self.step_ms  # virtual ms within the chunk
        order = np.argsort(offset, kind="stable")
        step, offset = step[order], offset[order]
        trade_time = self.start_ms + first_step * self.step_ms + np.floor(offset).astype(np.int64)
        sym = np.searchsorted(self._cum_share, rng["symbol"].random(n), side="right")
        sym = np.minimum(sym, len(self.profiles) - 1)
        switch = rng["side"].random(n) > self.SIDE_PERSISTENCE
        maker = np.empty(n, dtype=bool)
        k = 1 + np.floor(np.log(1 - rng["size"].random(n))
                         / math.log(1 - self.SINGLE_TRADE_P)).astype(np.int64)
        k = np.minimum(k, 20)
        lots_z = rng["lots"].standard_normal(int(k.sum()))
        agg_id = np.empty(n, dtype=np.int64)
        first = np.empty(n, dtype=np.int64)
        price = np.empty(n, dtype=np.int64)
        lots = np.empty(len(lots_z), dtype=np.int64)
        trade_start = np.cumsum(k) - k
        for i, prof in enumerate(self.profiles):
            mask = sym == i
            m = int(mask.sum())
            if m == 0:
                continue
            side = (self._side[i] + np.cumsum(switch[mask])) % 2
            self._side[i] = side[-1]
            maker[mask] = side == 1  # buyer is maker: the taker sold, at the bid
            agg_id[mask] = self._next_agg[i] + np.arange(m)
            self._next_agg[i] += m
            ki = k[mask]
            first[mask] = self._next_trade[i] + np.cumsum(ki) - ki
            self._next_trade[i] += int(ki.sum())
            mid = np.exp(log_mid[step[mask], i]) * 10 ** prof.price_decimals
            bid = np.floor(mid / prof.tick).astype(np.int64) * prof.tick
            price[mask] = np.where(maker[mask], bid, bid + prof.tick)
            rows = np.repeat(mask, k)
            mu = math.log(prof.mean_lots) - 0.72  # lognormal(mu, 1.2) has mean mean_lots
            lots[rows] = np.maximum(1, np.rint(np.exp(mu + 1.2 * lots_z[rows]))).astype(np.int64)
        qty = np.add.reduceat(lots, trade_start) if n else np.zeros(0, dtype=np.int64)
        last = first + k - 1
        # Interleave: each message's individual trades, then the aggregate that covers them.
        total = n + len(lots)
        is_agg = np.zeros(total, dtype=bool)
        is_agg[np.cumsum(k + 1) - 1] = True
        rep = np.repeat(np.arange(n), k)
        trade_ids = np.repeat(first - trade_start, k) + np.arange(len(lots))

        def merge(agg_values: np.ndarray, trade_values: np.ndarray) -> np.ndarray:
            out = np.empty(total, dtype=agg_values.dtype)
            out[is_agg] = agg_values
            out[~is_agg] = trade_values
            return out

        stream = merge(sym * 2, sym[rep] * 2 + 1)
        times = merge(trade_time, trade_time[rep])
        return Events(stream, merge(agg_id, trade_ids), times, times, merge(price, price[rep]),
                      merge(qty, lots), merge(first, trade_ids), merge(last, trade_ids),
                      merge(maker, maker[rep]))
