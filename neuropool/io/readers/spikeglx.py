"""SpikeGLX recordings: a ``.bin`` of interleaved int16 samples described by a ``.meta`` text file.

The ``.meta`` is ``key=value`` lines; table keys (``~imroTbl``, ``~snsChanMap``, ...) carry a ``~``
prefix that :func:`read_meta` strips. Per-channel geometry, gains and ADC shifts come from the
meta plus the Neuropixels probe table that ships with probeinterface (Bill Karsh's ProbeTable, read
as data, offline). Positions follow probeinterface's convention: x in µm from the centre of the
leftmost electrode column of shank 0 (SpikeGLX's ``snsGeomMap`` measures from the shank's left
edge, so its x is shifted by the probe's odd-row offset, 11 µm on NP1.0, 27 µm on NP2.0).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import numpy as np

from neuropool.errors import (
    ChecksumError,
    MetadataError,
    RawDataError,
    SourceNotFoundError,
    TruncatedFileError,
)

from .base import ByteSource, RawReader, RecordingInfo, read_interleaved, with_suffix

#: Keys SpikeGLX writes with a ``~`` prefix (tables), restored by :func:`write_meta`.
TABLE_KEYS = ("imroTbl", "muxTbl", "snsChanMap", "snsGeomMap", "snsShankMap", "svySBTT")


# -- the .meta text ------------------------------------------------------------------------------


def parse_meta(text: str, source: str = "<meta>") -> dict[str, str]:
    """Parse the text of a SpikeGLX ``.meta`` file.

    Parameters
    ----------
    text : str
        The file's content.
    source : str
        Name used in error messages (the file's URL).

    Returns
    -------
    dict of str to str
        Values as strings, ``~`` stripped from table keys; :class:`MetadataError` on a bad line.
    """
    meta: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lstrip("~")
        if not sep or not key:
            raise MetadataError(
                f"{source}: line {lineno} is not 'key=value' ({line[:60]!r}); "
                "a SpikeGLX .meta holds one key=value per line: is this the right file?"
            )
        meta[key] = value.strip()
    if not meta:
        raise MetadataError(f"{source}: the .meta file is empty; restore it from the acquisition")
    return meta


def read_meta(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Read a SpikeGLX ``.meta`` file from a local path or fsspec URL.

    Parameters
    ----------
    url : str
        The ``.meta`` file (:class:`SourceNotFoundError` if absent).
    storage_options : dict, optional
        fsspec options (credentials, endpoint).

    Returns
    -------
    dict of str to str
        See :func:`parse_meta`.
    """
    return parse_meta(ByteSource(url, storage_options).read_text(), source=url)


def write_meta(url: str, meta: dict[str, Any], storage_options: dict[str, Any] | None = None) -> None:
    """Write ``meta`` as a SpikeGLX ``.meta`` file (``~`` restored on the table keys).

    Parameters
    ----------
    url : str
        Destination path or fsspec URL.
    meta : dict
        Keys and values, written in order (values through ``str``).
    storage_options : dict, optional
        fsspec options.
    """
    from fsspec.core import url_to_fs

    lines = [f"{'~' if key in TABLE_KEYS else ''}{key}={value}" for key, value in meta.items()]
    fs, path = url_to_fs(url, **(storage_options or {}))
    with fs.open(path, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))


def _table(value: str) -> list[str]:
    """Split ``(a)(b)(c)`` into ``["a", "b", "c"]``."""
    value = value.strip()
    if not (value.startswith("(") and value.endswith(")")):
        raise ValueError(f"not a SpikeGLX table: {value[:40]!r}")
    return value[1:-1].split(")(")


def _int_list(text: str, sep: str | None = None) -> list[int]:
    return [int(float(v)) for v in text.replace(",", " ").split(sep)]


@lru_cache(maxsize=1)
def probe_table() -> dict[str, Any]:
    """The Neuropixels probe table (features of every part number) shipped with probeinterface."""
    ref = resources.files("probeinterface") / "resources" / "neuropixels_probe_features.json"
    return json.loads(ref.read_text(encoding="utf-8"))


# -- per-channel layout ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelLayout:
    """What the meta says about each saved column (see :class:`~.base.RecordingInfo`)."""

    channel_ids: list[str]
    is_sync: np.ndarray
    positions: np.ndarray
    shank_ids: np.ndarray
    gains_uv: np.ndarray
    adc_shifts: np.ndarray
    probe_type: str
    part_number: str
    geometry_source: str  # "snsGeomMap", "imroTbl", "snsShankMap" or "none"


def saved_channels(meta: dict[str, str], source: str = "<meta>") -> np.ndarray:
    """Acquisition index of each saved column (``snsSaveChanSubset``, ranges inclusive)."""
    n_saved = int(meta["nSavedChans"])
    subset = meta.get("snsSaveChanSubset", "all").strip()
    if subset == "all":
        return np.arange(n_saved)
    chans: list[int] = []
    for part in subset.split(","):
        lo, _, hi = part.partition(":")
        chans.extend(range(int(lo), int(hi or lo) + 1))
    if len(chans) != n_saved:
        raise MetadataError(f"{source}: snsSaveChanSubset lists {len(chans)} channels but nSavedChans={n_saved}")
    return np.asarray(chans)


def _part_number(meta: dict[str, str], imro_head: list[str]) -> str:
    if "imProbeOpt" in meta:  # phase 3A prototype: probeinterface maps it to NP1010 too
        return "NP1010"
    if meta.get("imDatPrb_pn"):
        return meta["imDatPrb_pn"]
    kind = imro_head[0] if imro_head else meta.get("imDatPrb_type", "0")
    return probe_table()["z_imro_format_type_to_part_number"].get(kind, kind)


def _imro(meta: dict[str, str], feat: dict[str, str] | None) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse ``imroTbl`` into (header fields, per-entry columns) using the table's formats."""
    groups = _table(meta["imroTbl"])
    head, rows = groups[0].split(","), np.array([_int_list(g) for g in groups[1:]])
    if len(head) == 3:  # 3A: (serial, option, n) then (channel bank ref ap_gain lf_gain)
        names = ["channel", "bank", "ref_id", "ap_gain", "lf_gain"]
        return {"type": "3A"}, {n: rows[:, i] for i, n in enumerate(names)}
    fmt = probe_table()["z_imro_format_type_to_imro_format"].get(head[0])
    fmt = fmt or (feat or {})["imro_table_format_type"]  # KeyError: unknown format
    formats = probe_table()["z_imro_formats"]
    names = formats[f"{fmt}_elm_flds"].strip("()").split()
    header = dict(zip(formats[f"{fmt}_hdr_flds"].strip("()").split(","), head, strict=False))
    return header, {n: rows[:, i] for i, n in enumerate(names) if i < rows.shape[1]}


_EVEN = "even_row_horz_offset_left_edge_to_leftmost_electrode_center_um"
_ODD = "odd_row_horz_offset_left_edge_to_leftmost_electrode_center_um"


def _grid_positions(feat: dict[str, str], shank, col, row) -> np.ndarray:
    """Positions of electrodes given (shank, column, row), in probeinterface's convention."""
    x = col * float(feat["electrode_pitch_horz_um"]) + (row % 2 == 0) * (
        float(feat[_EVEN]) - float(feat[_ODD])
    )
    x = x + shank * float(feat["shank_pitch_um"])
    return np.stack([x, row * float(feat["electrode_pitch_vert_um"])], axis=1).astype(float)


def _geometry(meta, feat, cols, idx, n):
    """(positions, shanks, source) of the ``n`` neural columns; ``idx``: their imro entries."""
    if "snsGeomMap" in meta:  # one (shank:x:y:used) per saved neural channel, x from shank edge
        groups = _table(meta["snsGeomMap"])
        pitch = float(groups[0].split(",")[2])
        entries = np.array([[float(v) for v in g.split(":")] for g in groups[1:]]).reshape(-1, 4)
        if len(entries) == n:
            shank = entries[:, 0].astype(int)
            x = entries[:, 1] - (float(feat[_ODD]) if feat else 0.0) + shank * pitch
            return np.stack([x, entries[:, 2]], axis=1), shank, "snsGeomMap"
    if feat is not None and idx is not None and ("electrode" in cols or "bank" in cols):
        # NP1-style tables give (channel, bank): electrode = bank * 384 + channel
        elec = cols["electrode"][idx] if "electrode" in cols else cols["bank"][idx] * 384 + cols["channel"][idx]
        shank = cols["shank"][idx] if "shank" in cols else np.zeros(n, dtype=int)
        row, col = np.divmod(elec, int(feat["cols_per_shank"]))
        return _grid_positions(feat, shank, col, row), shank.astype(int), "imroTbl"
    if feat is not None and "snsShankMap" in meta:  # (shank:col:row:used) per saved channel
        entries = np.array([_int_list(g, ":") for g in _table(meta["snsShankMap"])[1:]])
        if len(entries) == n:
            shank, col, row = entries[:, 0], entries[:, 1], entries[:, 2]
            return _grid_positions(feat, shank, col, row), shank.astype(int), "snsShankMap"
    return np.full((n, 2), np.nan), np.zeros(n, dtype=int), "none"


def _gains(meta, feat, imro, idx, kinds, source) -> np.ndarray:
    """Microvolts per bit of each neural column: ``imAiRangeMax / imMaxInt / gain * 1e6``."""
    bits = int(feat["adc_bit_depth"]) if feat else 10
    max_int = float(meta.get("imMaxInt", 2.0 ** (bits - 1)))
    if "imAiRangeMax" not in meta and not feat:
        raise MetadataError(f"{source}: no imAiRangeMax and unknown probe: cannot scale to µV")
    vmax = float(meta.get("imAiRangeMax", float(feat["adc_range_vpp"]) / 2 if feat else 0))
    header, cols = imro if imro is not None else ({}, {})
    gains = np.ones(len(kinds))
    for band in ("ap", "lf"):
        sel = kinds == band.upper()
        if not sel.any():
            continue
        if f"{band}_gain" in cols and idx is not None:  # NP1.0 family: per-channel imro gains
            gains[sel] = cols[f"{band}_gain"][idx[sel]]
        elif f"{band}_gain" in header:  # NP1110: one gain in the imro header
            gains[sel] = float(header[f"{band}_gain"])
        elif f"imChan0{band}Gain" in meta:  # newer SpikeGLX writes the fixed gain
            gains[sel] = float(meta[f"imChan0{band}Gain"])
        elif feat and f"{band}_gain_list" in feat:  # NP2.0 family: the probe's only gain (80)
            gains[sel] = float(feat[f"{band}_gain_list"].split(",")[0])
        else:
            raise MetadataError(
                f"{source}: cannot find the {band.upper()} gain (no imroTbl gain, no "
                f"imChan0{band}Gain, unknown probe): add imChan0{band}Gain to the .meta"
            )
    return vmax / max_int / gains * 1e6


def _shifts(meta, feat, readout) -> np.ndarray:
    """Fraction of a sample period by which each readout channel lags (ADC multiplexing).

    The mux table lists, per ADC cycle, the channels converted; a sample period spans
    ``per_adc * (1 + lf_rate / ap_rate)`` cycles: 13 on NP1.0 (12 AP + 1 LF), 16 on NP2.0.
    """
    mux = meta.get("muxTbl")
    if mux is None and feat is not None:
        mux = probe_table()["z_mux_tables"].get(feat["mux_table_format_type"])
    if mux is None:
        return np.zeros(len(readout))
    groups = _table(mux)
    per_adc = _int_list(groups[0])[1]
    order: dict[int, int] = {}
    for slot, group in enumerate(groups[1:]):
        for ch in _int_list(group):
            order.setdefault(ch, slot)
    if feat is not None:
        ratio = float(feat["lf_sample_frequency_hz"]) / float(feat["ap_sample_frequency_hz"])
    else:
        ratio = 1 / 12 if _int_list(meta.get("acqApLfSy", "0,0,0"))[1] else 0.0
    n_cycles = round(per_adc * (1 + ratio))
    return np.array([order.get(int(r), 0) / n_cycles for r in readout], dtype=float)


def channel_layout(meta: dict[str, str], source: str = "<meta>") -> ChannelLayout:
    """Channel ids, positions, shanks, gains (µV/bit) and ADC shifts of every saved column.

    Parameters
    ----------
    meta : dict
        A parsed ``.meta`` (:func:`read_meta`).
    source : str
        Name used in error messages.

    Returns
    -------
    ChannelLayout
        Arrays of length ``nSavedChans``; the sync column has gain 1, NaN position, shift 0.
        Missing keys or malformed tables raise :class:`MetadataError`.
    """
    try:
        saved = saved_channels(meta, source)
        n_ap, n_lf, _ = _int_list(meta.get("acqApLfSy", f"{len(saved)},0,0"))  # nidq: no sync
    except (KeyError, ValueError) as exc:
        raise MetadataError(f"{source}: missing or malformed channel counts ({exc})") from exc
    kinds = np.where(saved < n_ap, "AP", np.where(saved < n_ap + n_lf, "LF", "SY"))
    readout = np.where(saved < n_ap, saved, np.where(saved < n_ap + n_lf, saved - n_ap, 0))
    ids = [f"{k}{r}" if k != "SY" else "SY0" for k, r in zip(kinds, readout, strict=True)]
    names = [g.split(";")[0] for g in _table(meta["snsChanMap"])[1:]] if "snsChanMap" in meta else []
    ids = names if len(names) == len(saved) else ids
    n = len(saved)
    layout = dict(
        channel_ids=ids, is_sync=kinds == "SY", positions=np.full((n, 2), np.nan),
        shank_ids=np.zeros(n, dtype=int), gains_uv=np.ones(n), adc_shifts=np.zeros(n),
        probe_type="", part_number="", geometry_source="none",
    )
    if meta.get("typeThis", "imec") != "imec" or "imroTbl" not in meta:
        return ChannelLayout(**layout)  # nidq/obx or no probe table: gains unknown (1)
    try:
        part = _part_number(meta, _table(meta["imroTbl"])[0].split(","))
        feat = probe_table()["neuropixels_probes"].get(part)
        try:
            imro = _imro(meta, feat)
        except KeyError:
            imro = None  # a table format we do not know (positions may still come from maps)
        neural = kinds != "SY"
        idx = None
        if imro is not None and "channel" in imro[1]:
            where = {int(c): i for i, c in enumerate(imro[1]["channel"])}
            if all(int(r) in where for r in readout[neural]):
                idx = np.array([where[int(r)] for r in readout[neural]], dtype=int)
        cols = imro[1] if imro is not None else {}
        pos, shank, geo = _geometry(meta, feat, cols, idx, int(neural.sum()))
        layout["positions"][neural], layout["shank_ids"][neural] = pos, shank
        layout["gains_uv"][neural] = _gains(meta, feat, imro, idx, kinds[neural], source)
        layout["adc_shifts"][neural] = _shifts(meta, feat, readout[neural])
    except (ValueError, IndexError, KeyError) as exc:
        raise MetadataError(f"{source}: malformed probe tables ({type(exc).__name__}: {exc})") from exc
    bus = feat["databus_decoder_type"] if feat else ""
    ptype = "NP1" if bus == "1.0" else ("NP2" if bus.startswith("2.0") else "")
    if ptype == "NP2" and int(feat["num_shanks"]) > 1:
        ptype = "NP2.4"
    ptype = "3A" if "imProbeOpt" in meta else ptype
    layout.update(probe_type=ptype, part_number=part, geometry_source=geo)
    return ChannelLayout(**layout)


def sampling_rate(meta: dict[str, str], source: str = "<meta>") -> float:
    """The stream's sampling frequency (``imSampRate``, ``niSampRate`` or ``obSampRate``)."""
    for key in (k for k in ("imSampRate", "niSampRate", "obSampRate") if k in meta):
        return float(meta[key])
    raise MetadataError(f"{source}: no imSampRate/niSampRate in the .meta; cannot tell the rate")


def recording_info(meta: dict[str, str], url: str, fmt: str, n_samples: int, source: str) -> RecordingInfo:
    """Build the :class:`RecordingInfo` of a stream described by a SpikeGLX meta."""
    lay = channel_layout(meta, source)
    return RecordingInfo(
        url=url, format=fmt, sampling_frequency=sampling_rate(meta, source), n_samples=n_samples,
        channel_ids=list(lay.channel_ids), dtype=np.dtype("<i2"), gains_uv=lay.gains_uv,
        is_sync=lay.is_sync, positions=lay.positions, shank_ids=lay.shank_ids,
        adc_shifts=lay.adc_shifts, probe_type=lay.probe_type, metadata=dict(meta),
    )


# -- the reader --------------------------------------------------------------------------------


class SpikeGLXReader(RawReader):
    """A SpikeGLX ``.bin`` + ``.meta`` pair, read by byte ranges through fsspec.

    Parameters
    ----------
    url : str
        The ``.bin`` (or its ``.meta``); local path or fsspec URL.
    storage_options : dict, optional
        fsspec options.
    """

    name: ClassVar[str] = "spikeglx"
    suffixes: ClassVar[tuple[str, ...]] = (".ap.bin", ".lf.bin", ".bin", ".meta")

    @classmethod
    def guess_can_open(cls, url: str) -> bool:
        """True for ``*.bin`` and ``*.meta`` names."""
        name = str(url).rstrip("/").lower()
        return name.endswith((".bin", ".meta")) and not name.endswith(".cbin")

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        url = str(url)
        if url.endswith(".meta"):
            url = with_suffix(url, ".meta", ".bin")
        self._data = ByteSource(url, storage_options)
        meta_url = with_suffix(url, ".bin", ".meta") if url.endswith(".bin") else url + ".meta"
        size = self._data.size()  # SourceNotFoundError naming the .bin
        try:
            meta = read_meta(meta_url, storage_options)
        except SourceNotFoundError as exc:
            raise MetadataError(
                f"{meta_url}: no such file; the SpikeGLX data {url} cannot be read without "
                "its .meta (same name, .meta suffix): copy it beside the .bin"
            ) from exc
        try:
            n_saved, expected = int(meta["nSavedChans"]), int(meta.get("fileSizeBytes", size))
        except (KeyError, ValueError) as exc:
            raise MetadataError(f"{meta_url}: missing or malformed nSavedChans/fileSizeBytes") from exc
        row = n_saved * 2
        if size != expected:
            kind, what = (
                (TruncatedFileError, f"{expected - size} bytes missing: the copy is incomplete, copy it again")
                if size < expected
                else (RawDataError, "this .meta belongs to another file: pair the .bin with its own .meta")
            )
            raise kind(f"{url}: the file has {size} bytes but {meta_url} says fileSizeBytes={expected}; {what}")
        if size % row:
            raise RawDataError(
                f"{url}: {size} bytes is not a whole number of {row}-byte rows (nSavedChans={n_saved} x 2 "
                f"bytes); {size % row} stray bytes at the end: the file is damaged or the .meta is wrong"
            )
        self.info = recording_info(meta, url, self.name, size // row, meta_url)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` as a ``(n, n_channels)`` int16 array (clipped)."""
        return read_interleaved(self._data, self.info, start, stop)

    def verify(self) -> bool:
        """Check ``fileSHA1`` from the meta against the ``.bin`` (streamed); False if absent."""
        expected = self.info.metadata.get("fileSHA1", "").strip().lower()
        digest = hashlib.sha1()
        for block in self._data.iter_blocks() if expected else ():
            digest.update(block)
        if expected and digest.hexdigest() != expected:
            raise ChecksumError(
                f"{self.info.url}: SHA-1 is {digest.hexdigest()} but the .meta records "
                f"fileSHA1={expected}; the data changed since acquisition: copy it again"
            )
        return bool(expected)


# -- writing a meta, for generated data ------------------------------------------------------


def make_np1_meta(
    n_samples: int,
    sampling_frequency: float = 30000.0,
    *,
    file_size_bytes: int,
    sha1: str | None = None,
    file_name: str = "D:/data/demo_g0/demo_g0_imec0/demo_g0_t0.imec0.ap.bin",
    part_number: str = "PRB_1_4_0480_1",
    serial_number: str = "18005116811",
    ap_gain: int = 500,
    lf_gain: int = 250,
    bank: int = 0,
    create_time: str = "2024-01-01T12:00:00",
    first_sample: int = 0,
) -> dict[str, str]:
    """A Neuropixels 1.0 AP-stream meta, with the keys and key order SpikeGLX writes.

    Parameters
    ----------
    n_samples : int
        Samples in the ``.bin``.
    sampling_frequency : float
        ``imSampRate``.
    file_size_bytes : int
        ``fileSizeBytes`` (``n_samples * 385 * 2`` for a matching ``.bin``).
    sha1 : str, optional
        ``fileSHA1`` of the ``.bin`` (omitted when None).
    file_name, part_number, serial_number, create_time, first_sample
        ``fileName`` (neo parses run and probe names from it), ``imDatPrb_pn``,
        ``imDatPrb_sn``, ``fileCreateTime``, ``firstSample``.
    ap_gain, lf_gain, bank : int
        Gains and bank (0 or 1) written in every ``imroTbl`` entry.

    Returns
    -------
    dict of str to str
        Ready for :func:`write_meta`; includes ``imroTbl``, ``snsChanMap``, ``snsGeomMap`` and
        ``snsShankMap`` (written with their ``~``).
    """
    elec = bank * 384 + np.arange(384)
    if elec.max() >= 960:
        raise ValueError(f"bank {bank} has fewer than 384 electrodes on a NP1.0 probe")
    row, col = np.divmod(elec, 2)
    x_edge = col * 32 + np.where(row % 2 == 0, 27, 11)
    fmt = lambda v: format(float(v), ".15g")  # noqa: E731
    meta = {
        "acqApLfSy": "384,384,1", "appVersion": "20230425", "fileCreateTime": create_time,
        "fileName": file_name, "fileSHA1": (sha1 or "").upper(),
        "fileSizeBytes": str(int(file_size_bytes)),
        "fileTimeSecs": fmt(n_samples / sampling_frequency), "firstSample": str(first_sample),
        "gateMode": "Immediate", "imAiRangeMax": "0.6", "imAiRangeMin": "-0.6",
        "imCalibrated": "true", "imChan0apGain": str(ap_gain), "imChan0lfGain": str(lf_gain),
        "imDatPrb_pn": part_number, "imDatPrb_port": "1", "imDatPrb_slot": "2",
        "imDatPrb_sn": serial_number, "imDatPrb_type": "0", "imLEDEnable": "false",
        "imMaxInt": "512", "imRoFile": "", "imSampRate": fmt(sampling_frequency), "imStdby": "",
        "imTrgRising": "true", "imTrgSource": "0", "nSavedChans": "385",
        "snsApLfSy": "384,0,1", "snsSaveChanSubset": "0:383,768", "syncSourceIdx": "0",
        "syncSourcePeriod": "1", "trigMode": "Immediate", "typeImEnabled": "1",
        "typeThis": "imec", "userNotes": "",
        "imroTbl": "(0,384)" + "".join(f"({c} {bank} 0 {ap_gain} {lf_gain} 1)" for c in range(384)),
        "snsChanMap": "(384,384,1)" + "".join(f"(AP{c};{c}:{c})" for c in range(384)) + "(SY0;768:768)",
        "snsGeomMap": f"({part_number},1,0,70)"
        + "".join(f"(0:{x}:{r * 20}:1)" for x, r in zip(x_edge, row, strict=True)),
        "snsShankMap": "(1,2,480)" + "".join(f"(0:{c}:{r}:1)" for c, r in zip(col, row, strict=True)),
    }
    return {k: v for k, v in meta.items() if sha1 or k != "fileSHA1"}


def make_np1_lf_meta(ap_meta: dict[str, str], n_samples: int, sampling_frequency: float = 2500.0,
                     sha1: str | None = None) -> dict[str, str]:
    """The LF-stream meta that SpikeGLX writes beside an NP1 AP-stream meta (:func:`make_np1_meta`).

    Parameters
    ----------
    ap_meta : dict
        The AP stream's meta.
    n_samples : int
        Samples in the ``.lf.bin`` (385 columns: 384 LF channels and the sync word).
    sampling_frequency : float
        ``imSampRate`` of the LF stream (2.5 kHz on NP1).
    sha1 : str, optional
        ``fileSHA1`` of the ``.lf.bin``.

    Returns
    -------
    dict of str to str
        Ready for :func:`write_meta`.
    """
    fmt = lambda v: format(float(v), ".15g")  # noqa: E731
    meta = dict(ap_meta)
    meta.update({
        "fileName": ap_meta.get("fileName", "").replace(".ap.bin", ".lf.bin"),
        "fileSizeBytes": str(int(n_samples) * 385 * 2),
        "fileTimeSecs": fmt(n_samples / sampling_frequency),
        "imSampRate": fmt(sampling_frequency),
        "snsApLfSy": "0,384,1", "snsSaveChanSubset": "384:768",
        "snsChanMap": "(384,384,1)" + "".join(f"(LF{c};{384 + c}:{c})" for c in range(384)) + "(SY0;768:768)",
    })
    meta.pop("fileSHA1", None)
    if sha1:
        meta["fileSHA1"] = sha1.upper()
    return meta
