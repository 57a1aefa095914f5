"""Import data.binance.vision USD-M futures ``aggTrades``/``trades`` archives into the tick store.

Each file is verified (``.CHECKSUM`` sha256, zip CRC, columns, values) and stored in one
transaction, so a damaged file leaves the store exactly as it was, and importing the same file
twice adds nothing (the store is unique on ``(symbol, id)``).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import queue
import re
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from .errors import DataError
from .storage import BULK_FIELDS, TickWriter

__all__ = [
    "AGG_TRADES_COLUMNS",
    "TRADES_COLUMNS",
    "ArchiveFile",
    "FileReport",
    "ImportReport",
    "configure_parser",
    "import_archives",
    "parse_archive_name",
    "read_archive",
    "run",
]

#: Columns of a USD-M ``aggTrades`` archive, and the :class:`~quantkit.wire.Trade` field each
#: fills: agg_trade_id -> id, price -> price, quantity -> qty, first_trade_id -> first_id,
#: last_trade_id -> last_id, transact_time -> trade_time, is_buyer_maker -> is_buyer_maker.
AGG_TRADES_COLUMNS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                      "transact_time", "is_buyer_maker")
#: Columns of a USD-M ``trades`` archive: id -> id (and first_id = last_id = id), price -> price,
#: qty -> qty, time -> trade_time, is_buyer_maker -> is_buyer_maker; quote_qty (price * qty,
#: rounded by Binance) is not stored.
TRADES_COLUMNS = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker")

_KINDS = {
    # archive kind -> (columns, store stream kind, columns giving id/time/qty/first/last)
    "aggTrades": (AGG_TRADES_COLUMNS, "aggTrade",
                  ("agg_trade_id", "transact_time", "quantity", "first_trade_id", "last_trade_id")),
    "trades": (TRADES_COLUMNS, "trade", ("id", "time", "qty", "id", "id")),
}
_TYPES = {"price": pa.float64(), "quantity": pa.float64(), "qty": pa.float64(),
          "quote_qty": pa.float64(), "is_buyer_maker": pa.bool_()}
_NAME_RE = re.compile(
    r"^(?P<symbol>[A-Z0-9]{2,30})-(?P<kind>aggTrades|trades)-"
    r"(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.(?P<ext>zip|csv)$"
)
# Futures archives use ms; a time above this is in microseconds (spot files since 2025).
_MICROSECONDS_ABOVE = 10**14
# Bytes of CSV parsed per batch (about 60k rows): bounds memory, moves the progress bar.
_BLOCK_BYTES = 1 << 22
# Rows per batch when a whole (unsorted) file is stored.
_CHUNK = 100_000


@dataclass(frozen=True)
class ArchiveFile:
    """What a data.binance.vision file name says: ``BTCUSDT-aggTrades-2024-08-08.zip``."""

    path: Path
    symbol: str
    #: ``"aggTrades"`` or ``"trades"`` (the archive's name for it).
    kind: str
    #: ``YYYY-MM-DD`` (daily file) or ``YYYY-MM`` (monthly file).
    period: str

    @property
    def stream(self) -> str:
        """The store's stream kind: ``"aggTrade"`` or ``"trade"``."""
        return _KINDS[self.kind][1]


@dataclass(frozen=True)
class FileReport:
    """What importing one file did."""

    path: Path
    symbol: str
    stream: str
    rows_read: int
    rows_new: int
    seconds: float


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_archives` did, file by file."""

    files: tuple[FileReport, ...]

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_new(self) -> int:
        return sum(f.rows_new for f in self.files)

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in self.files)

    def __str__(self) -> str:
        lines = [f"{f.path.name}: {f.rows_read:,} rows read, {f.rows_new:,} new "
                 f"({f.seconds:.1f} s)" for f in self.files]
        rate = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        lines.append(f"total: {self.rows_read:,} rows read, {self.rows_new:,} new in "
                     f"{len(self.files)} file(s), {rate:,.0f} rows/s")
        return "\n".join(lines)


def parse_archive_name(path: str | Path) -> ArchiveFile:
    """Symbol, kind and period from a data.binance.vision file name.

    Raises
    ------
    DataError
        If the name is not like ``BTCUSDT-aggTrades-2024-08-08.zip`` or
        ``BTCUSDT-trades-2024-08.csv``.
    """
    path = Path(path)
    match = _NAME_RE.match(path.name)
    if match is None:
        raise DataError(
            f"{path}: cannot tell symbol and kind from the file name; keep Binance's name, "
            "e.g. BTCUSDT-aggTrades-2024-08-08.zip or BTCUSDT-trades-2024-08.csv"
        )
    return ArchiveFile(path, match["symbol"], match["kind"], match["period"])


def _verify_checksum(path: Path) -> None:
    """Compare the zip's sha256 with ``<name>.CHECKSUM`` (``"<hex>  <name>"``) if it is there."""
    checksum = path.with_name(path.name + ".CHECKSUM")
    if not checksum.exists():
        return
    words = checksum.read_text(encoding="ascii", errors="replace").split()
    if not words or not re.fullmatch(r"[0-9a-fA-F]{64}", words[0]):
        raise DataError(f"{checksum}: not a sha256 checksum file; download it again")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != words[0].lower():
        raise DataError(
            f"{path}: sha256 {digest.hexdigest()} does not match {checksum.name} "
            f"({words[0].lower()}): the download is damaged, fetch it again"
        )


def _header(fh: IO[bytes]) -> list[str] | None:
    """The header row's names, or None when the file starts with data.

    USD-M trade files carry a header row only from about 2022-08; a data row starts with a
    digit. Both regular files and zip members are buffered readers: ``peek`` consumes nothing.
    """
    first = fh.peek(512)[:512].lstrip()
    if not first or first[:1].isdigit():
        return None
    line = first.split(b"\n", 1)[0].decode("ascii", errors="replace")
    return [name.strip() for name in line.split(",")]


class _Unsorted(Exception):
    """Raised while streaming a file whose ids do not strictly increase: sort it whole."""


def _csv_batches(fh: IO[bytes], columns: Sequence[str], where: str) -> Iterator[pa.RecordBatch]:
    header = _header(fh)
    if header is not None and header != list(columns):
        raise DataError(f"{where}: header {','.join(header)!r} is not the expected "
                        f"{','.join(columns)!r}; is the file named after the right kind?")
    types = {c: _TYPES.get(c, pa.int64()) for c in columns}
    try:
        # Streaming: pyarrow parses the next block in its own threads while we store this one.
        yield from pacsv.open_csv(
            fh,
            read_options=pacsv.ReadOptions(column_names=list(columns),
                                           skip_rows=int(header is not None),
                                           block_size=_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    except (zipfile.BadZipFile, EOFError, zlib.error):
        raise  # a damaged zip member (bad CRC, cut short): the caller says so
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{where}: not a valid {len(columns)}-column Binance trade CSV "
                        f"({', '.join(columns)}): {exc}") from None


def _zip_member(zf: zipfile.ZipFile, path: Path) -> str:
    members = [m for m in zf.namelist() if m.endswith(".csv")]
    if len(members) != 1:
        raise DataError(f"{path}: expected one .csv inside the zip, found "
                        f"{len(members)} ({', '.join(zf.namelist()) or 'nothing'})")
    return members[0]


@contextlib.contextmanager
def _zip_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable zip archive ({exc}); the file is truncated or "
                        "damaged, download it again") from None


def _precheck(archive: ArchiveFile) -> None:
    """What can be checked before writing: the ``.CHECKSUM``, and a zip's directory (a
    truncated download has none)."""
    if archive.path.suffix == ".zip":
        _verify_checksum(archive.path)
        with _zip_errors(archive.path), zipfile.ZipFile(archive.path) as zf:
            _zip_member(zf, archive.path)


def _record_batches(archive: ArchiveFile) -> Iterator[pa.RecordBatch]:
    """The file's rows as Arrow batches (call :func:`_precheck` first)."""
    columns = _KINDS[archive.kind][0]
    path = archive.path
    if path.suffix == ".csv":
        with path.open("rb") as fh:
            yield from _csv_batches(fh, columns, str(path))
        return
    with _zip_errors(path), zipfile.ZipFile(path) as zf:
        member = _zip_member(zf, path)
        with zf.open(member) as fh:
            # The member's CRC is checked when its last byte is read: a damaged file fails
            # on its last batch, and the transaction holding the others is rolled back.
            yield from _csv_batches(fh, columns, f"{path}:{member}")


def _validated(archive: ArchiveFile, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Numpy columns in store order from one batch, after checking the values make sense."""
    where = str(archive.path)
    for name, column in zip(batch.schema.names, batch.columns):
        if column.null_count:
            raise DataError(f"{where}: column {name!r} has empty values; download it again")
    id_col, time_col, qty_col, first_col, last_col = _KINDS[archive.kind][2]
    cols = {
        "id": batch.column(id_col).to_numpy(),
        "trade_time": batch.column(time_col).to_numpy(),
        "price": batch.column("price").to_numpy(),
        "qty": batch.column(qty_col).to_numpy(),
        "first_id": batch.column(first_col).to_numpy(),
        "last_id": batch.column(last_col).to_numpy(),
        "is_buyer_maker": batch.column("is_buyer_maker").to_numpy(zero_copy_only=False),
    }
    if not (cols["price"] > 0).all() or not (cols["qty"] > 0).all():
        raise DataError(f"{where}: found a price or quantity that is not positive")
    if (cols["last_id"] < cols["first_id"]).any():
        raise DataError(f"{where}: found last_trade_id below first_trade_id")
    if len(cols["trade_time"]) and cols["trade_time"].max() > _MICROSECONDS_ABOVE:
        cols["trade_time"] = cols["trade_time"] // 1000
    return cols


def _column_batches(archive: ArchiveFile, *, sorted_only: bool) -> Iterator[dict[str, np.ndarray]]:
    """Validated column batches in file order; with ``sorted_only``, raise :class:`_Unsorted`
    as soon as an id does not exceed the one before it."""
    rows, last = 0, None
    for batch in _record_batches(archive):
        cols = _validated(archive, batch)
        ids = cols["id"]
        if not len(ids):
            continue
        if sorted_only and ((last is not None and ids[0] <= last) or (np.diff(ids) <= 0).any()):
            raise _Unsorted
        rows, last = rows + len(ids), ids[-1]
        yield cols
    if rows == 0:
        raise DataError(f"{archive.path}: holds no trades")


def read_archive(path: str | Path) -> tuple[ArchiveFile, dict[str, np.ndarray]]:
    """Read and validate one whole archive into columns in store order, sorted by id.

    :func:`import_archives` streams files instead and uses this only for files whose ids are
    not in order (some monthly files): it needs about 50 bytes a row of memory.

    Parameters
    ----------
    path
        A data.binance.vision ``aggTrades`` or ``trades`` file, ``.zip`` or ``.csv``, with or
        without a header row. A ``<name>.CHECKSUM`` beside a zip is verified.

    Returns
    -------
    (ArchiveFile, dict)
        The parsed name and numpy columns ``id, trade_time, price, qty, first_id, last_id,
        is_buyer_maker`` (times in ms UTC).

    Raises
    ------
    DataError
        For a name that says nothing, a truncated or damaged zip, a checksum mismatch, wrong
        columns, empty or non-positive values, or ``last_id < first_id``.
    """
    archive = _existing(path)
    _precheck(archive)
    parts = list(_column_batches(archive, sorted_only=False))
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # Insertion order is the live readers' cursor order; some monthly files are not sorted.
    if (np.diff(cols["id"]) < 0).any():
        order = np.argsort(cols["id"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    return archive, cols


def _existing(path: str | Path) -> ArchiveFile:
    archive = parse_archive_name(path)
    if not archive.path.is_file():
        raise DataError(f"{archive.path}: no such file")
    return archive


def _chunks(cols: dict[str, np.ndarray], size: int = _CHUNK) -> Iterator[dict[str, np.ndarray]]:
    n = len(cols["id"])
    for lo in range(0, n, size):
        yield {k: v[lo:lo + size] for k, v in cols.items()}


def _flat(batches: Iterable[dict[str, np.ndarray]]) -> Iterator[list]:
    """Row values interleaved in ``BULK_FIELDS`` order, one list per batch."""
    width = len(BULK_FIELDS)
    for cols in batches:
        flat = np.empty(len(cols["id"]) * width, dtype=object)
        for j, name in enumerate(BULK_FIELDS):
            flat[j::width] = cols[name].tolist()
        yield flat.tolist()


def _prefetch(items: Iterator[list], depth: int = 2) -> Iterator[list]:
    """Produce ``items`` in a thread: sqlite3 releases the GIL while it steps a statement, so
    building the next chunk overlaps with writing this one (about 15 % faster on 2 cores)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def work() -> None:
        try:
            for item in items:
                q.put(item)
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    threading.Thread(target=work, name="quantkit-import-rows", daemon=True).start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # If the write failed, free the producer (blocked on a full queue) so it can exit.
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()


def _store(writer: TickWriter, archive: ArchiveFile, bar: tqdm) -> tuple[int, int]:
    """Store one file in one transaction; return (rows read, rows new)."""
    shown = bar.n
    try:
        return _store_batches(writer, archive, _column_batches(archive, sorted_only=True), bar)
    except _Unsorted:  # rolled back; store the file again, sorted in memory
        bar.n = shown
        bar.refresh()
        _, cols = read_archive(archive.path)
        return _store_batches(writer, archive, _chunks(cols), bar)


def _store_batches(writer: TickWriter, archive: ArchiveFile,
                   batches: Iterator[dict[str, np.ndarray]], bar: tqdm) -> tuple[int, int]:
    width = len(BULK_FIELDS)
    rows = 0
    with writer.transaction() as conn:
        # Archives are real Binance data: refuse a store of simulated trades. The claim is
        # part of the file's transaction, so a failed import takes it back too.
        writer.claim(origin="binance", stream=archive.stream, symbols=[archive.symbol],
                     conn=conn)
        before = conn.total_changes
        for flat in _prefetch(_flat(batches)):
            writer.insert_flat(conn, archive.symbol, flat)
            rows += len(flat) // width
            bar.update(len(flat) // width)
        new = conn.total_changes - before
        writer.record_event("import", archive.symbol,
                            f"{archive.path.name}: {rows} rows read, {new} new", conn=conn)
    return rows, new


def import_archives(paths: Iterable[str | Path], db: str | Path, *,
                    progress: bool = True) -> ImportReport:
    """Import data.binance.vision USD-M ``aggTrades``/``trades`` archives into a tick store.

    Parameters
    ----------
    paths
        Files named as Binance names them (``BTCUSDT-aggTrades-2024-08-08.zip``,
        ``ETHUSDT-trades-2024-08.csv``); the symbol and kind come from the name.
    db
        The tick store (created if missing). It must not hold simulated trades, nor the other
        stream kind for the same symbol: their ids would collide.
    progress
        Show a tqdm progress bar on stderr (only when stderr is a terminal).

    Returns
    -------
    ImportReport
        Rows read and rows new, per file.

    Raises
    ------
    DataError
        For a damaged file (see :func:`read_archive`). Each file is one transaction: files
        before it stay imported, the damaged one adds nothing, and re-running is harmless.
    StorageError
        If the store cannot be written or holds another origin or stream kind.

    Notes
    -----
    A file is parsed and stored batch by batch inside its transaction, so memory stays small
    and a damage found late (a zip's CRC is checked at its end) rolls the whole file back.
    Rows are stored in id order (insertion order is the live readers' cursor): a file whose
    ids are not in order (some monthly files) is rolled back, read whole, sorted and stored
    again, which needs about 50 bytes a row of memory.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise DataError("paths: give at least one archive file")
    archives = [_existing(p) for p in paths]  # a bad name or path fails before any write
    reports: list[FileReport] = []
    with TickWriter(db) as writer, tqdm(total=None, unit="rows", unit_scale=True,
                                        disable=None if progress else True,
                                        file=sys.stderr) as bar:
        for archive in archives:
            t0 = time.perf_counter()
            bar.set_description(archive.path.name)
            _precheck(archive)
            rows, new = _store(writer, archive, bar)
            reports.append(FileReport(archive.path, archive.symbol, archive.stream, rows, new,
                                      time.perf_counter() - t0))
    return ImportReport(tuple(reports))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``quantkit import``."""
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="data.binance.vision aggTrades/trades archives (.zip or .csv)")
    parser.add_argument("--db", default=None,
                        help="tick store (default: $QUANTKIT_DB or ~/.quantkit/binance-futures.db)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args: argparse.Namespace) -> int:
    """``quantkit import FILE... [--db PATH]``: print what was imported per file."""
    from .config import Settings

    db = Settings.load(db=args.db).db
    report = import_archives(args.files, db, progress=not args.no_progress)
    print(report)
    return 0

