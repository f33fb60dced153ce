"""Storage codecs of the chunked time x channel stores, by name.

A codec here is everything zarr needs to encode one chunk: a compressor, optional filters and the
memory order of the chunk (``"F"``: channel-major). Every choice below is a standard numcodecs
codec (WavPack comes from the optional ``wavpack-numcodecs`` package), so any zarr v2 reader
decodes the stores without neuropool.

``zstd``
    Blosc zstd with bit-shuffle, time-major chunks. Any dtype.
``zstd-delta``
    Integer stores only. Chunks stored channel-major (``order="F"``), so that numcodecs'
    ``Delta`` filter, which differences the flattened chunk, differences each channel along time
    (one jump per channel boundary); then Blosc zstd (level 1) with bit-shuffle over 1 MiB blocks.
    The raw store's default: on real wide-band data it is the smallest Blosc choice, smaller than
    mtscomp, and reads at hundreds of MB/s (``benchmarks/README.md``, "Storage").
``lz4``
    Blosc lz4 with bit-shuffle: the fastest to write and read, the largest.
``wavpack``
    WavPack lossless audio coding (``pip install 'neuropool[wavpack]'``): the smallest by far,
    but an order of magnitude slower to write and read. int8/16/32 stores only. Beware:
    wavpack-numcodecs 0.3 raises ``RuntimeError: WavPack compression error`` on a chunk that does
    not compress at all (full-scale random noise), as its output buffer is the input's size.
``none``
    Uncompressed chunks.

Importing this module registers :class:`Delta`, a faster decoder of numcodecs' ``delta`` filter,
under its id: same bytes in, same array out (tested against ``numcodecs.Delta``), but the
running sum of an integer chunk is a compiled loop (numba) instead of ``numpy.cumsum``, which
ran at ~3 ns per sample and made the time-delta decode 2/3 of a ``zstd-delta`` read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np

from neuropool.errors import ConfigError, MissingDependencyError

#: Codec names accepted by :func:`encoding` (and by the tasks' ``compression`` parameters).
CODECS: tuple[str, ...] = ("zstd", "zstd-delta", "lz4", "wavpack", "none")

#: Codecs that only suit integer samples (a float delta is not exactly invertible).
INTEGER_ONLY: frozenset[str] = frozenset({"zstd-delta", "wavpack"})

#: Blosc block size of ``zstd-delta``: bit-planes of larger blocks compress better (1.59x with
#: Blosc's default block size, 1.88x with 1 MiB blocks, on the real Open Ephys recording).
DELTA_BLOCKSIZE = 1 << 20


@dataclass(frozen=True)
class Encoding:
    """How the chunks of one zarr array are encoded.

    Attributes
    ----------
    compressor : numcodecs.abc.Codec or None
        The zarr ``compressor`` (None: uncompressed).
    filters : list of numcodecs.abc.Codec or None
        The zarr ``filters``, applied before the compressor.
    order : str
        Memory order of each chunk, ``"C"`` (time-major) or ``"F"`` (channel-major).
    """

    compressor: Any
    filters: list[Any] | None = None
    order: str = "C"

    def zarr_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``zarr.create`` / ``Group.create_dataset``."""
        return {"compressor": self.compressor, "filters": self.filters, "order": self.order}


def encoding(name: str, dtype: str | np.dtype = "int16", level: int | None = None) -> Encoding:
    """The encoding called ``name`` for chunks of ``dtype``.

    Parameters
    ----------
    name : str
        One of :data:`CODECS`.
    dtype : str or numpy.dtype
        Sample type of the array.
    level : int, optional
        Compression level: Blosc's ``clevel`` (0-9; default 3, or 1 for ``zstd-delta``) or
        WavPack's level (1-4; default 1). Ignored for ``none``.

    Returns
    -------
    Encoding

    Raises
    ------
    ConfigError
        If ``name`` is unknown, or does not suit ``dtype``.
    MissingDependencyError
        If ``wavpack`` is asked for and ``wavpack-numcodecs`` is not installed.
    """
    dtype = np.dtype(dtype)
    if name not in CODECS:
        raise ConfigError(f"unknown compression {name!r}: expected one of {', '.join(CODECS)}")
    if name in INTEGER_ONLY and dtype.kind not in "iu":
        valid = [c for c in CODECS if c not in INTEGER_ONLY]
        raise ConfigError(
            f"compression {name!r} is for integer samples, but this store holds {dtype}: "
            f"use one of {', '.join(valid)}")
    if name == "none":
        return Encoding(None)
    bitshuffle = numcodecs.Blosc.BITSHUFFLE
    if name == "zstd-delta":
        return Encoding(
            numcodecs.Blosc("zstd", clevel=1 if level is None else level, shuffle=bitshuffle,
                            blocksize=DELTA_BLOCKSIZE),
            filters=[numcodecs.Delta(dtype=dtype.str)],
            order="F",
        )
    if name == "wavpack":
        return Encoding(_wavpack(1 if level is None else level, dtype))
    return Encoding(numcodecs.Blosc(name, clevel=3 if level is None else level, shuffle=bitshuffle))


def _wavpack(level: int, dtype: np.dtype) -> Any:
    if dtype.name not in ("int8", "int16", "int32"):
        raise ConfigError(f"WavPack stores int8, int16 or int32 samples, not {dtype}: choose another compression")
    try:
        from wavpack_numcodecs import WavPack
    except ImportError as exc:
        raise MissingDependencyError(
            "compression 'wavpack' needs the wavpack-numcodecs package, which is not installed "
            f"({exc}): pip install 'neuropool[wavpack]' (on Linux it builds against libwavpack: "
            "apt-get install wavpack libwavpack-dev first), or choose another compression: "
            f"{', '.join(c for c in CODECS if c != 'wavpack')}"
        ) from None
    if level not in (1, 2, 3, 4):
        raise ConfigError(f"WavPack level must be 1, 2, 3 or 4, got {level}")
    # one thread each way: neuropool's workers are single-threaded, parallelism is across blocks
    return WavPack(level=level, num_encoding_threads=1, num_decoding_threads=1)


def delta_from_time_diffs(diffs: np.ndarray) -> np.ndarray:
    """What the ``zstd-delta`` filter makes of a chunk, from its per-channel time differences.

    numcodecs' ``Delta`` differences the flattened channel-major chunk: ``x[t] - x[t-1]`` inside
    a channel, and at the start of channel ``c`` its first sample minus the last sample of
    channel ``c - 1``. mtscomp stores the same differences, except that each channel starts with
    its own first sample; only those starts change here.

    Parameters
    ----------
    diffs : numpy.ndarray
        Writable ``(n_channels, n_samples)`` integer array: row ``c`` holds channel ``c``'s
        first sample then its successive differences (wrapping in the dtype). Modified in place.

    Returns
    -------
    numpy.ndarray
        The flat encoded chunk (a view of ``diffs``), ready for the Blosc compressor.
    """
    last = diffs.sum(axis=1, dtype=diffs.dtype)  # each channel's last sample (wraps as the diffs did)
    diffs[1:, 0] -= last[:-1]
    return diffs.reshape(-1)


class Delta(numcodecs.Delta):
    """numcodecs' ``Delta`` filter with a compiled decoder for integer samples.

    Encoding, configuration and codec id are numcodecs' own, so stores stay readable by any zarr
    v2 reader; only ``decode`` of integer data with ``dtype == astype`` changes: the running sum
    wraps in the dtype exactly as ``numpy.cumsum`` cast to it does, ~6x faster (numba; compiled
    once per process, on first use, and cached on disk).
    """

    codec_id = "delta"

    def decode(self, buf: Any, out: Any = None) -> Any:  # noqa: D102 - numcodecs' contract
        if self.dtype != self.astype or self.dtype.kind not in "iu":
            return super().decode(buf, out)
        enc = numcodecs.compat.ensure_ndarray(buf).view(self.astype).reshape(-1, order="A")
        if out is not None:
            dec = numcodecs.compat.ensure_ndarray(out)
            if dec.dtype == self.dtype and dec.size == enc.size and dec.flags.c_contiguous:
                _running_sum()(enc, dec.reshape(-1))
                return out
        dec = np.empty_like(enc, dtype=self.dtype)
        _running_sum()(enc, dec)
        return numcodecs.compat.ndarray_copy(dec, out)


_RUNNING_SUM: Any = None


def warm_up() -> None:
    """Compile the delta decoder now (or load it from numba's cache: ~0.5 s in a fresh process)
    rather than during a worker's first read."""
    _running_sum()(np.zeros(1, np.int16), np.zeros(1, np.int16))


def _running_sum() -> Any:
    """The compiled ``out[i] = x[0] + ... + x[i]`` (wrapping in ``out``'s dtype), built once."""
    global _RUNNING_SUM
    if _RUNNING_SUM is None:
        import numba

        @numba.njit(nogil=True, cache=True)
        def running_sum(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
            acc = 0
            for i in range(x.size):
                acc += x[i]
                out[i] = acc  # the int64 sum truncated to out's dtype: the wrapped cumsum

        _RUNNING_SUM = running_sum
    return _RUNNING_SUM


numcodecs.register_codec(Delta)
