"""Prefect tests: a Prefect API of their own (``prefect_test_harness``: a temporary server on
SQLite), and small raw sessions to process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# before Prefect is imported: no telemetry (and no "database is locked" from it)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
prefect = pytest.importorskip("prefect", reason="the Prefect tests need the prefect extra")

from tests.tasks.conftest import make_np1_data, make_session  # noqa: E402


@pytest.fixture(scope="package")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    """One temporary Prefect server for the package's tests; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="package")
def np1_data_small():
    return make_np1_data(12_000, seed=5)


@pytest.fixture
def raw_root(tmp_path, np1_data_small) -> Path:
    """A folder of raw sessions: ``mouse1_2026-11-20_001`` and ``mouse2_2026-11-21_001``."""
    root = tmp_path / "raw"
    for name in ("mouse1_2026-11-20_001", "mouse2_2026-11-21_001"):
        make_session(root / name, np1_data_small)
    return root
