"""Open Ephys GUI recordings in the "Binary" format.

A recording folder (``Record Node N/experimentE/recordingR/``) holds ``structure.oebin`` (JSON:
one entry per continuous stream with ``folder_name``, ``sample_rate``, ``num_channels`` and per
channel ``channel_name``, ``bit_volts``, ``units``) and, per stream,
``continuous/<folder_name>/continuous.dat``: headerless interleaved int16 samples.
``bit_volts`` is µV per bit for neural channels (``units`` ``"uV"`` or empty) and V per bit for
ADC inputs (``units`` ``"V"``); gains are converted to µV per bit either way.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, ClassVar

import numpy as np

from neuropool.errors import MetadataError, RawDataError, SourceNotFoundError

from .base import ByteSource, RawReader, RecordingInfo, child_url, read_interleaved

OEBIN = "structure.oebin"
_UNIT_TO_UV = {"": 1.0, "uv": 1.0, "µv": 1.0, "mv": 1e3, "v": 1e6}


def find_oebin(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Every ``structure.oebin`` at or below ``url`` (a folder or the file itself), sorted.

    Parameters
    ----------
    url : str
        A recording folder, any folder above one (up to four levels), or the file.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    list of str
        URLs of the headers found (empty if none).
    """
    source = ByteSource(url, storage_options)
    fs, path = source.fs, source.path.rstrip("/")
    if posixpath.basename(path) == OEBIN:
        return [url] if fs.exists(path) else []
    if not fs.isdir(path):
        return []
    found = [p for p in fs.find(path, maxdepth=5) if posixpath.basename(p) == OEBIN]
    return [child_url(url, fs, p) for p in sorted(found)]


class OpenEphysReader(RawReader):
    """One continuous stream of an Open Ephys binary recording.

    Parameters
    ----------
    url : str
        ``structure.oebin``, a ``continuous.dat`` (which picks its stream), or a folder holding
        exactly one recording (Record Node, experiment or recording folder).
    storage_options : dict, optional
        fsspec options.
    stream : str, optional
        ``stream_name`` or ``folder_name`` of the stream to read; default: the first one.
    """

    name: ClassVar[str] = "openephys"
    suffixes: ClassVar[tuple[str, ...]] = (OEBIN, "continuous.dat")

    @classmethod
    def guess_can_open(cls, url: str) -> bool:
        """True for ``structure.oebin`` and ``continuous.dat`` names."""
        return posixpath.basename(str(url).rstrip("/")).lower() in (OEBIN, "continuous.dat")

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, stream: str | None = None
    ) -> None:
        url = str(url).rstrip("/")
        self.storage_options = dict(storage_options or {})
        if posixpath.basename(url) == "continuous.dat":
            # <recording>/continuous/<folder_name>/continuous.dat
            folder = posixpath.dirname(url)
            stream = stream or posixpath.basename(folder)
            candidates = [posixpath.join(posixpath.dirname(posixpath.dirname(folder)), OEBIN)]
            if not ByteSource(url, storage_options).exists():
                raise SourceNotFoundError(f"{url}: no such file")
        else:
            source = ByteSource(url, storage_options)
            if not source.fs.exists(source.path):
                raise SourceNotFoundError(f"{url}: no such file or folder")
            candidates = find_oebin(url, storage_options)
        if not candidates:
            raise SourceNotFoundError(f"{url}: no {OEBIN} found in this folder or below it")
        if len(candidates) > 1:
            raise MetadataError(
                f"{url}: {len(candidates)} recordings found ({', '.join(candidates)}); "
                "open one of them (its structure.oebin or recording folder)"
            )
        self.oebin_url = oebin_url = candidates[0]
        try:
            header = json.loads(ByteSource(oebin_url, storage_options).read_text())
            streams = list(header["continuous"])
        except SourceNotFoundError as exc:
            raise MetadataError(f"{oebin_url}: no such file; the .dat needs its {OEBIN}") from exc
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise MetadataError(f"{oebin_url}: malformed {OEBIN} ({type(exc).__name__}: {exc})") from exc
        names = [f"{s.get('stream_name', '')} ({s.get('folder_name', '').rstrip('/')})" for s in streams]
        if not streams:
            raise MetadataError(f"{oebin_url}: no continuous stream in this recording")
        if stream is None:
            entry = streams[0]
        else:
            match = [s for s in streams if stream in (s.get("stream_name"), s.get("folder_name", "").rstrip("/"))]
            if len(match) != 1:
                raise MetadataError(
                    f"{oebin_url}: stream {stream!r} {'is ambiguous' if match else 'not found'}; "
                    f"streams: {', '.join(names)}"
                )
            entry = match[0]
        self.stream = entry.get("stream_name", entry.get("folder_name", "")).rstrip("/")
        self.info = self._info(oebin_url, header, entry)
        self._data = ByteSource(self.info.url, storage_options)
        size = self._data.size()
        row = self.info.n_channels * 2
        if size % row:
            raise RawDataError(
                f"{self.info.url}: {size} bytes is not a whole number of {row}-byte rows "
                f"({self.info.n_channels} channels x 2 bytes); {size % row} stray bytes at the end: "
                "the file is damaged (interrupted copy or recording?)"
            )
        self.info.n_samples = size // row

    @staticmethod
    def _info(oebin_url: str, header: dict, entry: dict) -> RecordingInfo:
        try:
            channels = entry["channels"]
            folder = entry["folder_name"].rstrip("/")
            rate = float(entry["sample_rate"])
            ids = [str(c["channel_name"]) for c in channels]
            gains = [
                float(c["bit_volts"]) * _UNIT_TO_UV.get(str(c.get("units", "")).lower(), 1.0)
                for c in channels
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataError(f"{oebin_url}: malformed stream entry ({type(exc).__name__}: {exc})") from exc
        if int(entry.get("num_channels", len(ids))) != len(ids):
            raise MetadataError(
                f"{oebin_url}: stream {folder} says num_channels={entry['num_channels']} "
                f"but lists {len(ids)} channels"
            )
        n = len(ids)
        return RecordingInfo(
            url=posixpath.join(posixpath.dirname(oebin_url), "continuous", folder, "continuous.dat"),
            format="openephys",
            sampling_frequency=rate, n_samples=0, channel_ids=ids, dtype=np.dtype("<i2"),
            gains_uv=np.asarray(gains), is_sync=np.zeros(n, dtype=bool),
            positions=np.full((n, 2), np.nan), shank_ids=np.zeros(n, dtype=int),
            adc_shifts=np.zeros(n), probe_type="",
            metadata={"GUI version": header.get("GUI version", ""), **entry},
        )

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` as a ``(n, n_channels)`` int16 array (clipped)."""
        return read_interleaved(self._data, self.info, start, stop)
