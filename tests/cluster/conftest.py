"""Fixtures of the pool tests: ``procs`` starts real ``neuropool`` commands and stops them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.cluster.processes import Proc


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    """Start ``neuropool`` commands; teardown stops workers, then schedulers, killing stragglers."""
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        p = Proc(*args)
        started.append(p)
        return p

    yield start
    for p in sorted(started, key=lambda p: p.args[0] == "scheduler"):
        p.stop(timeout=15)
