"""Real ``neuropool`` commands as processes on loopback, for the pool tests.

:class:`Proc` runs ``python -m neuropool.cli ...`` in its own process group and collects its
output; :func:`start_pool` brings up a scheduler and workers and waits until they have joined.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A ``neuropool`` command in its own process group, its output collected by a thread."""

    def __init__(self, *args: str, argv: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        """``Proc("worker", ADDRESS)`` runs ``neuropool worker ADDRESS``; ``argv`` runs another
        command line, and ``env`` replaces the environment (default: this one's)."""
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.args = args if argv is None else tuple(argv)
        self.label = " ".join(("neuropool", *args) if argv is None else argv)
        self.popen = subprocess.Popen(
            argv or [sys.executable, "-m", "neuropool.cli", *args], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first match of ``pattern`` in the output; fail if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output)
            if m:
                return m
            if self.popen.poll() is not None:
                time.sleep(0.2)  # let the reader catch the last lines
                pytest.fail(f"{self.label} exited ({self.popen.returncode}) "
                            f"before printing {pattern!r}:\n{self.output}")
            time.sleep(0.05)
        pytest.fail(f"{self.label} did not print {pattern!r} within "
                    f"{timeout:g} s:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send ``sig``; return the exit code, or None when it had to be killed."""
        code = None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)
            try:
                code = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        else:
            code = self.popen.returncode
        self.kill_group()  # whatever the command left behind (a nanny's worker process)
        self.popen.wait(10)
        self._reader.join(5)
        return code

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def start_pool(start: Callable[..., Proc], workers: list[list[str]], tls: list[str] | None = None,
               ) -> tuple[str, Proc, list[Proc]]:
    """A scheduler on a free loopback port and the given workers; wait until all have joined."""
    port = free_port()
    sched = start("scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-port", "0",
                  *(tls or []))
    address = sched.wait_for(r"Scheduler at (\S+) — workers join with: neuropool worker")[1]
    ws = [start("worker", address, *w) for w in workers]
    for w in ws:
        w.wait_for(r"joined the pool at")
    return address, sched, ws
