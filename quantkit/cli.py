"""The ``quantkit`` command: one subcommand per module that owns the work.

Each command module exposes ``configure_parser(parser)`` and ``run(args) -> int``; this file
only routes to them, importing just the module of the command that was asked for.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import QuantkitError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dashboard": ("quantkit.dashboard.cli", "serve the live dashboard with Voila (starts ingestion)"),
    "ingest": ("quantkit.ingest", "stream trades into the tick store until Ctrl-C"),
    "exchange": ("quantkit.exchange.cli", "run the local Binance-compatible exchange"),
    "import": ("quantkit.archive", "import data.binance.vision aggTrades/trades archives"),
    "backfill": ("quantkit.backfill", "fetch a time range of trades over REST"),
    "export": ("quantkit.export", "export ticks or bars to CSV or Parquet"),
}


def _parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantkit", description="quantkit: live analytics for Binance USD-M futures.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:  # only the chosen command's module is imported
            importlib.import_module(module).configure_parser(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = _parser(command if command in COMMANDS else None).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # one line per HTTP request is noise on a terminal
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
    try:
        return importlib.import_module(COMMANDS[args.command][0]).run(args)
    except QuantkitError as exc:
        print(f"quantkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
