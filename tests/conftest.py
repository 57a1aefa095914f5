"""Shared fixtures: where the real Binance recordings live, and a Jupyter-free home."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Real recorded Binance futures data beside the repo (present in CI too); see its SOURCES.md.
SHARED_DATA = ROOT.parent / "shared" / "data" / "binance"


@pytest.fixture(scope="session")
def binance_data() -> Path:
    """The folder of real Binance recordings. A missing folder fails loudly, never skips."""
    if not (SHARED_DATA / "SOURCES.md").exists():
        pytest.fail(f"real Binance data not found at {SHARED_DATA}: it must lie beside the repo")
    return SHARED_DATA


def read_recorded_trades(path: Path) -> list[dict]:
    """Payloads of a ``<recv_ns> <combined-stream JSON>`` recording (hftbacktest format)."""
    out = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            _, _, body = line.partition(b" ")
            out.append(orjson.loads(body)["data"])
    return out


@pytest.fixture(autouse=True)
def _jupyter_dirs(tmp_path_factory, monkeypatch):
    """Keep Jupyter and IPython from writing into the home folder during tests."""
    base = tmp_path_factory.getbasetemp() / "jupyter-home"
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        path = base / sub
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


def pytest_runtest_logreport(report):
    """In CI nothing may skip silently: a skipped test there is a failure."""
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which is not allowed: {report.longrepr}"
