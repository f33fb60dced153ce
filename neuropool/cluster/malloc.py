"""Keep freed block-sized memory in a worker process instead of handing it back to the kernel.

A preprocessing block allocates a handful of ~100 MB arrays (2 s x 384 channels of float32) and
frees them at the end. glibc's ``malloc`` serves anything above ``M_MMAP_THRESHOLD`` (at most
32 MiB by its own sliding rule) with a fresh ``mmap`` and unmaps it on ``free``, so the next
block faults every page in again and the kernel zeroes it: ~25,000 page faults per array. On
the 2-core machine of ``benchmarks/README.md`` that was a fifth of a block's time (system time
8.1 s of 42 s over 20 blocks; 2.6 s with the settings below, blocks 16 % faster).

:func:`retain_freed_memory` raises the mmap threshold and the trim threshold (``mallopt``), so
that large arrays come from the heap and a freed block's memory serves the next block. What a
worker keeps is bounded by ``keep_mb`` (the trim threshold), not by the recording's length.
Set ``NEUROPOOL_MALLOC_KEEP_MB=0`` to leave malloc as it is. Outside glibc (macOS, musl) it
does nothing.

Worker processes run blocks on a thread of their own, and glibc gives each thread its own arena,
whose heaps cannot hold a 100 MB array (they are at most 64 MiB): there the thresholds only take
effect with a single arena. So the pool's worker processes are started with the same settings
as glibc environment variables (:func:`worker_environ`, through Dask's
``distributed.nanny.pre-spawn-environ``), ``MALLOC_ARENA_MAX=1`` included. As always with that
setting, a variable already set in the nanny's environment wins over it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

__all__ = ["DEFAULT_KEEP_MB", "MALLOC_VARIABLES", "retain_freed_memory", "worker_environ"]

#: Freed memory a worker process may keep for its next block, MiB (the ``M_TRIM_THRESHOLD``).
DEFAULT_KEEP_MB = 1024

#: The environment variables :func:`worker_environ` sets.
MALLOC_VARIABLES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_done: bool | None = None


def retain_freed_memory(keep_mb: int | None = None) -> bool:
    """Tune this process's glibc ``malloc`` to reuse freed large blocks (once per process).

    Parameters
    ----------
    keep_mb : int, optional
        Trim threshold in MiB: freed memory above it goes back to the kernel. Allocations below
        half of it come from the heap. Default: ``NEUROPOOL_MALLOC_KEEP_MB`` or
        :data:`DEFAULT_KEEP_MB`; 0 leaves malloc unchanged.

    Returns
    -------
    bool
        True if the settings are in force (now or from an earlier call).
    """
    global _done
    with _lock:
        if _done is not None:
            return _done
        keep = _keep_bytes(keep_mb)
        _done = keep > 0 and _mallopt(keep)
        return _done


def worker_environ(keep_mb: int | None = None) -> dict[str, str]:
    """glibc ``malloc`` settings for a worker process about to start, as environment variables.

    Parameters
    ----------
    keep_mb : int, optional
        As for :func:`retain_freed_memory`; 0 gives no settings.

    Returns
    -------
    dict
        ``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` (empty
        when ``keep_mb`` is 0).
    """
    keep = _keep_bytes(keep_mb)
    if keep <= 0:
        return {}
    return dict(zip(MALLOC_VARIABLES, ("1", str(keep // 2), str(keep)), strict=True))


def _keep_bytes(keep_mb: int | None) -> int:
    """``keep_mb`` (default: ``NEUROPOOL_MALLOC_KEEP_MB`` or :data:`DEFAULT_KEEP_MB`) in bytes,
    at most what ``mallopt`` takes (an int); 0 or less: no settings."""
    if keep_mb is None:
        keep_mb = int(os.environ.get("NEUROPOOL_MALLOC_KEEP_MB", DEFAULT_KEEP_MB))
    return min(keep_mb << 20, 2**31 - 1) if keep_mb > 0 else 0


def _mallopt(keep_bytes: int) -> bool:
    try:  # glibc's soname first: find_library runs ldconfig in a subprocess
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"))
        except (OSError, TypeError):  # no C library to be found
            return False
    try:
        mallopt = libc.mallopt
    except AttributeError:  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, keep_bytes // 2)) and bool(mallopt(_M_TRIM_THRESHOLD, keep_bytes))
