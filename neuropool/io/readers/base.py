"""The contract every raw-format reader fulfils.

A reader is a small plugin (in the spirit of xarray's backends): ``guess_can_open(url)`` says
whether it recognises a path cheaply, from names alone; constructing it opens and validates the
headers; ``read(start, stop)`` returns a block of samples. Readers go through fsspec, so a URL may
be a local path, ``file://``, ``s3://`` or ``memory://``. Readers never write.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass
class RecordingInfo:
    """What a reader knows about one recorded stream, before any sample is read.

    Attributes
    ----------
    url : str
        The main data file (``.bin``, ``.cbin``, ``continuous.dat``).
    format : str
        Name of the reader that produced this (``"spikeglx"``, ``"mtscomp"``, ``"openephys"``).
    sampling_frequency : float
        Samples per second, as recorded (SpikeGLX's calibrated ``imSampRate``).
    n_samples : int
        Number of samples (rows) in the file.
    channel_ids : list of str
        One id per saved column, in file order, sync channel included (``"AP0"`` .. ``"SY0"``).
    dtype : numpy.dtype
        Sample type on disk (int16 for every format supported so far).
    gains_uv : numpy.ndarray
        Microvolts per bit for each saved column (1.0 for the sync channel).
    is_sync : numpy.ndarray of bool
        True for columns that are digital sync words, not voltage.
    positions : numpy.ndarray
        ``(n_columns, 2)`` contact positions in µm (x across the shank, y up from the tip
        region); NaN for the sync channel.
    shank_ids : numpy.ndarray of int
        Shank of each column (0 for the sync channel).
    adc_shifts : numpy.ndarray
        Fraction of a sample period by which each column lags the first one sampled (the ADC
        multiplexing delay that ``phase_shift`` corrects); 0 where unknown.
    probe_type : str
        ``"NP1"``, ``"NP2"``, ``"NP2.4"``, ``"3A"`` or ``""`` for non-Neuropixels data.
    metadata : dict
        The raw header as key/value pairs (the ``.meta``, the ``.oebin`` entry, ...).
    """

    url: str
    format: str
    sampling_frequency: float
    n_samples: int
    channel_ids: list[str]
    dtype: np.dtype
    gains_uv: np.ndarray
    is_sync: np.ndarray
    positions: np.ndarray
    shank_ids: np.ndarray
    adc_shifts: np.ndarray
    probe_type: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        """Number of saved columns, sync included."""
        return len(self.channel_ids)

    @property
    def duration(self) -> float:
        """Length of the recording in seconds."""
        return self.n_samples / self.sampling_frequency


class RawReader(ABC):
    """A raw recording opened for reading.

    Subclasses set ``name`` and ``suffixes``, implement ``guess_can_open``, ``__init__``
    (which must validate headers against file sizes and raise a :class:`neuropool.errors.RawDataError`
    subclass naming the file) and ``read``. Instances must pickle (they are shipped to workers):
    keep only URLs, storage options and small headers as state, open files lazily.
    """

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()
    info: RecordingInfo

    @classmethod
    @abstractmethod
    def guess_can_open(cls, url: str) -> bool:
        """Return True if ``url`` looks like this format, judging by names only (no I/O)."""

    @abstractmethod
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        """Open ``url`` and validate its headers."""

    @abstractmethod
    def read(self, start: int, stop: int) -> np.ndarray:
        """Return samples ``[start, stop)`` as a ``(stop - start, n_channels)`` array of ``info.dtype``.

        ``start`` and ``stop`` are clipped to ``[0, n_samples]``.
        """

    def verify(self) -> None:  # noqa: B027 (a no-op by default, on purpose)
        """Check the data themselves (checksums) where the format records them; no-op otherwise."""

    def __repr__(self) -> str:
        i = self.info
        return (
            f"<{type(self).__name__} {i.url!r}: {i.n_channels} channels, "
            f"{i.n_samples} samples at {i.sampling_frequency:g} Hz ({i.duration:.2f} s)>"
        )


# -- helpers shared by the readers (not part of the contract) -------------------------------


def with_suffix(url: str, old: str, new: str) -> str:
    """Return ``url`` with its trailing ``old`` suffix replaced by ``new`` (works on any URL).

    Parameters
    ----------
    url : str
        A path or URL ending with ``old``.
    old, new : str
        The suffix to drop and the one to put in its place (``".cbin"``, ``".ch"``).

    Returns
    -------
    str
        The sibling URL, in the same form (local path or ``proto://``) as ``url``.
    """
    if not url.endswith(old):
        raise ValueError(f"{url!r} does not end with {old!r}")
    return url[: len(url) - len(old)] + new


class ByteSource:
    """One file read by byte ranges through fsspec, opened lazily, pickled as URL + options.

    Reads are serialised by a lock (seek then read on one handle), so one source may be shared
    by threads; each process that unpickles it opens its own handle.

    Parameters
    ----------
    url : str
        Local path or fsspec URL (``s3://``, ``memory://``, ``file://``).
    storage_options : dict, optional
        Passed to the fsspec filesystem (credentials, ``client_kwargs``...).
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self._reset()

    def _reset(self) -> None:
        import threading

        self._fs: Any = None
        self._path: str | None = None
        self._file: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (created on first use)."""
        if self._fs is None:
            from fsspec.core import url_to_fs

            self._fs, self._path = url_to_fs(self.url, **self.storage_options)
        return self._fs

    @property
    def path(self) -> str:
        """The path of the file inside :attr:`fs`."""
        _ = self.fs
        assert self._path is not None
        return self._path

    def exists(self) -> bool:
        """Return True if the file exists (and is not a folder)."""
        try:
            return bool(self.fs.isfile(self.path))
        except (FileNotFoundError, PermissionError):
            return False

    def size(self) -> int:
        """Size in bytes; :class:`~neuropool.errors.SourceNotFoundError` if the file is absent."""
        from neuropool.errors import SourceNotFoundError

        try:
            return int(self.fs.size(self.path))
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"{self.url}: no such file") from exc

    def read_text(self) -> str:
        """Whole file decoded as UTF-8 (for small headers); SourceNotFoundError if absent."""
        from neuropool.errors import SourceNotFoundError

        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError as exc:
            raise SourceNotFoundError(f"{self.url}: no such file") from exc
        return data.decode("utf-8", errors="replace")

    def read(self, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes from ``offset``; TruncatedFileError if fewer exist."""
        from neuropool.errors import SourceNotFoundError, TruncatedFileError

        with self._lock:
            if self._file is None:
                try:
                    self._file = self.fs.open(self.path, "rb", cache_type="none")
                except FileNotFoundError as exc:
                    raise SourceNotFoundError(f"{self.url}: no such file") from exc
            self._file.seek(offset)
            data = self._file.read(length)
        if len(data) != length:
            raise TruncatedFileError(
                f"{self.url}: expected {length} bytes at offset {offset}, got {len(data)}; "
                "the file is shorter than its header says (was the copy interrupted?)"
            )
        return data

    def iter_blocks(self, block_size: int = 1 << 24):
        """Yield the whole file in blocks of at most ``block_size`` bytes (bounded memory)."""
        total = self.size()
        for offset in range(0, total, block_size):
            yield self.read(offset, min(block_size, total - offset))

    def close(self) -> None:
        """Close the open handle, if any (it is reopened on the next read)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def clip_range(start: int, stop: int, n: int) -> tuple[int, int]:
    """Clip ``[start, stop)`` to ``[0, n]``; an inverted range becomes empty at ``start``."""
    start = min(max(int(start), 0), n)
    return start, min(max(int(stop), start), n)


def read_interleaved(source: ByteSource, info: RecordingInfo, start: int, stop: int) -> np.ndarray:
    """Read rows ``[start, stop)`` of a headerless file of interleaved samples (``.bin``, ``.dat``).

    Returns a writable ``(n, n_channels)`` array of ``info.dtype``; the range is clipped.
    """
    start, stop = clip_range(start, stop, info.n_samples)
    row = info.n_channels * info.dtype.itemsize
    if stop == start:
        return np.empty((0, info.n_channels), dtype=info.dtype)
    data = source.read(start * row, (stop - start) * row)
    return np.frombuffer(data, dtype=info.dtype).reshape(stop - start, info.n_channels).copy()


def child_url(like: str, fs: Any, path: str) -> str:
    """Turn a path found inside ``fs`` back into a URL of the same form as ``like``."""
    return fs.unstrip_protocol(path) if "://" in like else path
