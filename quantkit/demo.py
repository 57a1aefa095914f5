"""The offline demo: a local simulated exchange, and a database of its own emptied at each start.

The simulator's trade ids restart at every run, so yesterday's demo trades would collide with
today's: a demo database holds one run only, and never anything but simulated trades.
"""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from .errors import ConfigError

__all__ = ["default_demo_db", "reset_demo_db"]


def default_demo_db() -> Path:
    """Where ``--demo`` keeps its simulated trades: ``~/.quantkit/demo.db``."""
    return Path.home() / ".quantkit" / "demo.db"


def reset_demo_db(path: Path, *, is_default: bool) -> None:
    """Empty a simulated-trade database before a demo run.

    Raises
    ------
    ConfigError
        If ``path`` (given by the user) holds trades that are not simulated, or another
        process is ingesting into it.
    """
    from .ingest import ingesting_pid

    if not path.exists():
        return
    if not is_default:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
                row = c.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
        except sqlite3.Error:
            row = None
        if not row or row[0] != "simulated":
            raise ConfigError(f"--db {path} holds data that is not simulated: --demo needs a "
                              "database of its own; leave out --db or name a new file")
    pid = ingesting_pid(path)
    if pid is not None:
        raise ConfigError(f"another process (pid {pid}) ingests into {path} (a --demo already "
                          "running?): stop it or pass another --db")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
