"""nwb: sorted, QC'd and localised units -> one NWB file per probe, for pynwb users.

Written per probe into ``<asset>/<probe>/nwb/<session>_<probe>.nwb`` (HDF5), or, with
``format: zarr``, ``<session>_<probe>.nwb.zarr`` (NWB-Zarr, a folder; needs hdmf-zarr:
``pip install neuropool[nwb-zarr]``). Read it with ``pynwb.NWBHDF5IO(path).read()`` or
``hdmf_zarr.NWBZarrIO(path, mode="r").read()``.

==================  ==========================================================================
table               content
==================  ==========================================================================
electrodes          one row per channel of the preprocessed recording (``localize/channels.pqt``,
                    in its order): ``rel_x``, ``rel_y`` (site position on the probe, µm);
                    ``ml``, ``ap``, ``dv`` (µm from bregma, IBL convention, NaN without a
                    trajectory); ``location`` (the region's acronym, ``"unknown"`` without an
                    atlas) and ``atlas_id`` (Allen id, with an atlas); ``channel_name``; ``shank``;
                    ``group``: the probe's ElectrodeGroup, on a Device describing the probe
units               one row per unit of the sorting; ``id`` is the unit's index (ALF's cluster
                    index), ``unit_name`` the sorter's id; ``spike_times`` (s from the first
                    sample, ascending; ``resolution`` one sample); ``electrodes`` and
                    ``waveform_mean`` / ``waveform_sd`` (V, see below); ``peak_channel``; every
                    column of ``qc/metrics.pqt`` (quality metrics, ``passes_qc``, ``ibl_label``...)
                    and of ``localize/units.pqt`` (``x, y, z`` -> ``rel_x, rel_y, rel_z``;
                    ``ml, ap, dv``; ``acronym`` -> ``location``; ``atlas_id``...)
==================  ==========================================================================

CCF ``x, y, z`` electrode columns are left out: NWB means Allen CCF coordinates there, and the
trajectory gives positions from bregma (``ml, ap, dv``), which are written as they are.

Waveforms. NWB's ``waveform_mean`` has one shape for every unit, ``(samples, electrodes)``, the
electrodes being those of the unit's ``electrodes`` entry, in that order. The analyzer's templates
are sparse (only the channels near each unit are averaged; the others read zero), so each unit gets
the same number K of channels: the K channels of its sparsity nearest its peak channel, K being the
smallest sparsity of the sorting, in electrode order. Every value written is a real average of
the unit's spikes, none a zero filling. A dense analyzer gives every channel to every unit. The
templates (µV in the analyzer) are written in volts, NWB's unit for waveforms.

Session start time, timezone-aware, from the first of: ``session_start_time`` in
``session.json`` (ISO 8601); the SpikeGLX ``fileCreateTime`` kept in the raw store's metadata;
a date in ``session.json`` (``date``) or in the session's name (``YYYY-MM-DD``, at midnight);
else the Unix epoch, a placeholder the file's ``notes`` and the summary say is one. A time
without a UTC offset is read in the ``timezone`` parameter (UTC by default). Spike times count
from the recording's first sample, taken as the session start.

Subject, experimenter, lab, institution come from ``session.json`` where it has them (read from
the session folder; a change there alone does not redo the file).
"""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from neuropool.errors import MetadataError, MissingDependencyError, StoreError
from neuropool.io import urls
from neuropool.io.timeseries import TimeseriesStore
from neuropool.tasks._scratch import fetch, publish, scratch_dir
from neuropool.tasks.base import Params, Task, TaskContext
from neuropool.tasks.export import check_tables
from neuropool.tasks.qc import load_analyzer

#: The session's metadata file, in the session folder.
SESSION_FILE = "session.json"
#: Subject fields taken from ``session.json``'s ``subject`` when it is a mapping.
SUBJECT_FIELDS = ("subject_id", "species", "sex", "age", "date_of_birth", "strain", "genotype",
                  "weight", "description")
#: NWBFile fields taken from ``session.json`` as they are.
FILE_FIELDS = ("experimenter", "lab", "institution", "experiment_description", "keywords",
               "protocol", "surgery", "virus", "stimulus_notes", "data_collection")

_MLAPDV = {
    "ml": "medio-lateral position, µm from bregma (+ right), through the probe trajectory; NaN without one",
    "ap": "antero-posterior position, µm from bregma (+ anterior), through the probe trajectory; NaN without one",
    "dv": "dorso-ventral position, µm from bregma (+ dorsal), through the probe trajectory; NaN without one",
    "atlas_id": "Allen CCF id of the brain region",
    "location": "acronym of the brain region (Allen CCF); 'unknown' without an atlas",
}
ELECTRODE_COLUMNS: dict[str, str] = {
    "channel_name": "channel id in the recording (e.g. AP0)",
    "shank": "shank index on the probe",
    **_MLAPDV,
}
UNIT_COLUMNS: dict[str, str] = {
    "unit_name": "the sorter's unit id",
    "peak_channel": "row of the electrodes table where the unit's template peaks",
    "rel_x": "unit position on the probe, µm, across the shank (monopolar triangulation)",
    "rel_y": "unit position on the probe, µm, along the shank (as the electrodes' rel_y)",
    "rel_z": "unit distance from the probe plane, µm (monopolar triangulation)",
    "passes_qc": "True when every QC threshold holds (qc/thresholds.json)",
    "ibl_label": "IBL's unit label: fraction of IBL's quality metrics passed (0..1)",
    **_MLAPDV,
}
#: Names the Units table defines itself: a metric or location column of that name gets a prefix.
_RESERVED_UNITS = {"id", "spike_times", "electrodes", "electrode_group", "waveform_mean",
                   "waveform_sd", "waveforms", "obs_intervals", "unit_name", "peak_channel"}
_RESERVED_ELECTRODES = {"id", "group", "group_name", "location", "rel_x", "rel_y", "rel_z", "x",
                        "y", "z", "imp", "filtering", "reference", "channel_name", "shank"}


class NwbParams(Params):
    """Parameters of :class:`Nwb`."""

    format: Literal["hdf5", "zarr"] = Field(
        "hdf5", description="hdf5: a .nwb file; zarr: a .nwb.zarr folder (pip install neuropool[nwb-zarr])")
    waveforms: bool = Field(True, description="write the units' templates (waveform_mean, waveform_sd)")
    timezone: str = Field("UTC", description="IANA time zone of start times given without a UTC offset")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as 'UTC' or 'Europe/London'") from None
        return v


class Nwb(Task):
    """Write the NWB file of one probe: electrodes and units tables."""

    name = "nwb"
    version = "1"
    Params = NwbParams
    inputs = ("units.metrics", "units.locations")
    #: the raw store's metadata holds the acquisition's start time (SpikeGLX ``fileCreateTime``)
    optional_inputs = ("ephys.raw",)
    outputs = ("nwb",)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        io_class, options = writer(self.params.format)  # a missing hdmf-zarr fails before any work
        session_meta, meta_url = read_session_metadata(ctx)
        raw_attrs = read_raw_attrs(ctx)
        session_name = ctx.info.get("session", {}).get("name") or "session"
        start, start_source = session_start_time(session_meta, raw_attrs, session_name,
                                                 self.params.timezone, meta_url)
        qc_dir, tmp_qc = fetch(ctx.inputs["units.metrics"], ctx.storage_options)
        loc_dir, tmp_loc = fetch(ctx.inputs["units.locations"], ctx.storage_options)
        out = scratch_dir("nwb")
        suffix = ".nwb" if self.params.format == "hdf5" else ".nwb.zarr"
        filename = f"{session_name}_{ctx.probe}{suffix}"
        try:
            analyzer = load_analyzer(qc_dir, ctx.inputs["units.metrics"])
            metrics = pd.read_parquet(qc_dir / "metrics.pqt")
            units = pd.read_parquet(loc_dir / "units.pqt")
            channels = pd.read_parquet(loc_dir / "channels.pqt")
            check_tables(ctx, analyzer, metrics, units, channels)
            nwbfile = self.build(ctx, analyzer, metrics, units, channels, session_meta, raw_attrs,
                                 start, start_source, session_name)
            k = len(nwbfile.units["electrodes"][0]) if len(nwbfile.units) else 0
            n_units, n_electrodes = len(nwbfile.units), len(nwbfile.electrodes)
            with io_class(str(out / filename), mode="w", **options) as io:
                io.write(nwbfile)
            publish(out, ctx.outputs["nwb"], ctx.storage_options)
        finally:
            for path, temporary in ((qc_dir, tmp_qc), (loc_dir, tmp_loc)):
                if temporary:
                    shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        return {"file": filename, "format": self.params.format, "n_units": n_units,
                "n_electrodes": n_electrodes, "waveforms": self.params.waveforms,
                "channels_per_unit": k, "session_start_time": start.isoformat(),
                "session_start_time_source": start_source, "folder": urls.basename(ctx.outputs["nwb"])}

    def build(self, ctx: TaskContext, analyzer: Any, metrics: pd.DataFrame, units: pd.DataFrame,
              channels: pd.DataFrame, session_meta: dict[str, Any], raw_attrs: dict[str, Any],
              start: datetime, start_source: str, session_name: str) -> Any:
        """The NWBFile (in memory) of one probe."""
        from pynwb import NWBFile

        from neuropool import __version__

        extra = {k: session_meta[k] for k in FILE_FIELDS if session_meta.get(k)}
        for k in ("experimenter", "keywords"):
            if isinstance(extra.get(k), str):
                extra[k] = [extra[k]]
        nwbfile = NWBFile(
            session_description=f"Spike-sorted, quality-checked and localised units of {ctx.probe}, "
                                f"session {session_name}",
            identifier=str(uuid.uuid4()),
            session_start_time=start,
            session_id=session_name,
            subject=make_subject(session_meta, self.params.timezone),
            notes=f"session_start_time: {start_source}. Spike times count from the recording's "
                  f"first sample. Written by neuropool {__version__} (task nwb, version {self.version}).",
            source_script=f"neuropool {__version__}",
            source_script_file_name="neuropool/tasks/nwb.py",
            **extra,
        )
        group = add_probe(nwbfile, ctx, raw_attrs, channels)
        add_electrodes(nwbfile, group, analyzer, channels)
        add_units(nwbfile, group, analyzer, metrics, units, channels, self.params.waveforms,
                  self.params.format, qc_thresholds(ctx))
        return nwbfile


# -- inputs --------------------------------------------------------------------------------------


def writer(format: str) -> tuple[type, dict[str, Any]]:
    """The IO class writing ``format`` and its options; names what to install when hdmf-zarr is
    missing.

    NWB-Zarr is written by hdmf-zarr's ``ZarrIO`` with pynwb's type map (what ``NWBZarrIO`` does,
    which reads it back) and object references in JSON: ``NWBZarrIO`` does not pass its codec
    on, and hdmf-zarr's default (pickle) is refused by numcodecs when reading unless the reader
    declares the file trusted.
    """
    if format == "hdf5":
        from pynwb import NWBHDF5IO

        return NWBHDF5IO, {}
    try:
        import numcodecs
        from hdmf_zarr import ZarrIO
    except ImportError as e:
        raise MissingDependencyError(
            f"nwb.format: 'zarr' writes NWB-Zarr with hdmf-zarr, which is not installed ({e.name}); "
            "install it with: pip install neuropool[nwb-zarr] (or set nwb.format: hdf5)"
        ) from e
    from pynwb import get_manager

    return ZarrIO, {"manager": get_manager(), "object_codec_class": numcodecs.JSON}


def read_session_metadata(ctx: TaskContext) -> tuple[dict[str, Any], str | None]:
    """``session.json`` of the session (the runner's copy when it passes one), and its URL."""
    session = ctx.info.get("session", {})
    if isinstance(session.get("metadata"), dict):
        return session["metadata"], SESSION_FILE
    url = session.get("url")
    if not url:
        return {}, None
    meta_url = urls.join(url, SESSION_FILE)
    if not urls.exists(meta_url, ctx.storage_options):
        return {}, None
    meta = urls.read_json(meta_url, ctx.storage_options)
    if not isinstance(meta, dict):
        raise MetadataError(f"{meta_url}: expected a JSON object, found {type(meta).__name__}")
    return meta, meta_url


def read_raw_attrs(ctx: TaskContext) -> dict[str, Any]:
    """Attributes of the raw store (acquisition metadata, probe type); empty without one."""
    url = ctx.inputs.get("ephys.raw")
    if not url or not urls.exists(url, ctx.storage_options):
        return {}
    return TimeseriesStore(url, ctx.storage_options).attrs


def qc_thresholds(ctx: TaskContext) -> str:
    """The QC thresholds as text (``rp_contamination < 0.5 and ...``), for ``passes_qc``."""
    url = urls.join(ctx.inputs["units.metrics"], "thresholds.json")
    if not urls.exists(url, ctx.storage_options):
        return ""
    ops = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
    found = urls.read_json(url, ctx.storage_options)
    return ", ".join(f"{metric} " + " and ".join(f"{ops.get(k, k)} {v}" for k, v in bound.items())
                     for metric, bound in found.items())


# -- session start time and subject ------------------------------------------------------------


def parse_time(value: Any, tz: str, where: str) -> datetime:
    """An ISO 8601 date or date-time as an aware datetime (naive ones read in ``tz``)."""
    try:
        when = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise MetadataError(f"{where}: {value!r} is not an ISO 8601 date-time "
                            "(e.g. 2026-11-21T10:15:00+01:00)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=ZoneInfo(tz))


def session_start_time(session_meta: dict[str, Any], raw_attrs: dict[str, Any], session_name: str,
                       tz: str, meta_url: str | None = None) -> tuple[datetime, str]:
    """The session's start time (timezone-aware) and where it came from.

    Parameters
    ----------
    session_meta : dict
        ``session.json``: its ``session_start_time`` wins, its ``date`` is a fallback.
    raw_attrs : dict
        Attributes of the raw store: ``metadata.fileCreateTime`` (SpikeGLX) is the next choice.
    session_name : str
        Searched for a ``YYYY-MM-DD`` date after the above.
    tz : str
        IANA zone of times given without a UTC offset.
    meta_url : str, optional
        ``session.json``'s URL, for error messages.

    Returns
    -------
    (datetime, str)
        The Unix epoch, with a source saying it is a placeholder, when nothing gives a time.
    """
    where = meta_url or SESSION_FILE
    if session_meta.get("session_start_time"):
        return (parse_time(session_meta["session_start_time"], tz, f"{where}: session_start_time"),
                f"{SESSION_FILE} session_start_time")
    created = (raw_attrs.get("metadata") or {}).get("fileCreateTime")
    if created:
        try:
            return parse_time(created, tz, "fileCreateTime"), f"SpikeGLX fileCreateTime ({tz} unless given)"
        except MetadataError:
            pass  # an unreadable .meta time: fall back to the dates below
    if session_meta.get("date"):
        return parse_time(session_meta["date"], tz, f"{where}: date"), f"{SESSION_FILE} date (midnight, {tz})"
    found = re.search(r"\d{4}-\d{2}-\d{2}", session_name)
    if found:
        try:
            return parse_time(found.group(), tz, session_name), f"the session name's date (midnight, {tz})"
        except MetadataError:
            pass
    return datetime(1970, 1, 1, tzinfo=UTC), "unknown: the Unix epoch is a placeholder"


def make_subject(session_meta: dict[str, Any], tz: str) -> Any:
    """An NWB Subject from ``session.json``'s ``subject`` (an id, or a mapping of fields)."""
    from pynwb.file import Subject

    subject = session_meta.get("subject")
    if subject in (None, ""):
        return None
    if not isinstance(subject, dict):
        return Subject(subject_id=str(subject))
    fields: dict[str, Any] = {k: subject[k] for k in SUBJECT_FIELDS if subject.get(k) not in (None, "")}
    if "subject_id" not in fields and (subject.get("id") or subject.get("name")):
        fields["subject_id"] = subject.get("id") or subject.get("name")
    if "date_of_birth" in fields:
        fields["date_of_birth"] = parse_time(fields["date_of_birth"], tz, f"{SESSION_FILE}: subject.date_of_birth")
    for k in ("subject_id", "species", "sex", "age", "strain", "genotype", "description"):
        if k in fields:
            fields[k] = str(fields[k])
    if "weight" in fields and not isinstance(fields["weight"], int | float):
        fields["weight"] = str(fields["weight"])
    return Subject(**fields)


# -- tables --------------------------------------------------------------------------------------


def column_values(series: pd.Series) -> np.ndarray | list[str]:
    """A table column as NWB takes it: bool, int or float arrays (NaN for missing), else text."""
    if pd.api.types.is_bool_dtype(series.dtype) and not series.isna().any():
        return series.to_numpy(bool)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        if series.isna().any() or not pd.api.types.is_integer_dtype(series.dtype):
            return series.to_numpy(np.float64, na_value=np.nan)
        return series.to_numpy(np.int64)
    if pd.api.types.is_bool_dtype(series.dtype):  # nullable booleans with missing values
        return series.astype("float64").to_numpy(np.float64, na_value=np.nan)
    return ["" if pd.isna(v) else str(v) for v in series]


def region_names(table: pd.DataFrame) -> list[str]:
    """The ``acronym`` column, ``"unknown"`` where missing (or without one)."""
    if "acronym" not in table:
        return ["unknown"] * len(table)
    return ["unknown" if pd.isna(v) or str(v) in ("", "nan") else str(v) for v in table["acronym"]]


def extra_columns(table: pd.DataFrame, rename: dict[str, str], skip: set[str], reserved: set[str],
                  prefix: str) -> dict[str, Any]:
    """Column name in the NWB table -> values, for every column of ``table`` but ``skip``."""
    out: dict[str, Any] = {}
    for column in table.columns:
        if column in skip:
            continue
        name = rename.get(column, str(column))
        if column not in rename and (name in reserved or name in out):
            name = f"{prefix}_{name}"
        out[name] = column_values(table[column])
    return out


def add_probe(nwbfile: Any, ctx: TaskContext, raw_attrs: dict[str, Any], channels: pd.DataFrame) -> Any:
    """The probe's Device and ElectrodeGroup."""
    meta = raw_attrs.get("metadata") or {}
    info = ctx.info.get("probe", {})
    probe_type = str(raw_attrs.get("probe_type") or "")
    part_number = str(meta.get("imDatPrb_pn") or "")
    model_name = str(info.get("model") or part_number or probe_type)
    serial = str(info.get("serial") or meta.get("imDatPrb_sn") or "") or None
    neuropixels = probe_type.upper().startswith(("NP", "3A", "3B")) or "neuropixels" in model_name.lower()
    model = None
    if model_name:
        model = nwbfile.create_device_model(
            name=model_name, manufacturer="IMEC" if neuropixels else "unknown",
            model_number=part_number or None,
            description=f"probe type {probe_type}" if probe_type else None)
    device = nwbfile.create_device(name=ctx.probe, description=f"probe {ctx.probe}" + (
        f": {model_name}" if model_name else ""), serial_number=serial, model=model)
    regions = [r for r in dict.fromkeys(region_names(channels)) if r != "unknown"]
    return nwbfile.create_electrode_group(
        name=ctx.probe, description=f"the recorded sites of {ctx.probe}", device=device,
        location=", ".join(regions) if regions else "unknown")


def add_electrodes(nwbfile: Any, group: Any, analyzer: Any, channels: pd.DataFrame) -> None:
    """One electrodes row per row of ``channels.pqt``, in its order."""
    rename = {"channel": "channel_name", "x": "rel_x", "y": "rel_y", "acronym": "location"}
    columns = extra_columns(channels, rename, set(), _RESERVED_ELECTRODES, "localize")
    columns["location"] = region_names(channels)
    ids = [str(c) for c in analyzer.channel_ids]
    shank = analyzer.get_recording_property("shank") if "shank" in analyzer.get_recording_property_keys() else None
    if shank is not None and "shank" not in columns:
        by_id = dict(zip(ids, np.asarray(shank), strict=True))
        columns["shank"] = np.array([by_id[str(c)] for c in channels["channel"]], dtype=np.int64)
    standard = {"location", "rel_x", "rel_y"}
    for name in columns:
        if name not in standard:
            nwbfile.add_electrode_column(name=name, description=ELECTRODE_COLUMNS.get(
                name, f"'{name}' of the channel, from localize/channels.pqt"))
    for i in range(len(channels)):
        row = {name: values[i] for name, values in columns.items()}
        nwbfile.add_electrode(group=group, **{k: float(v) if k in ("rel_x", "rel_y") else v
                                              for k, v in row.items()})


def main_channels(analyzer: Any) -> np.ndarray:
    """Index, among the analyzer's channels, of each unit's peak (main) channel."""
    if hasattr(analyzer, "get_main_channels"):  # SpikeInterface >= 0.105
        return np.asarray(analyzer.get_main_channels(outputs="index"), dtype=np.int64)
    from spikeinterface.core import get_template_extremum_channel

    peak = get_template_extremum_channel(analyzer, outputs="index")
    return np.array([peak[u] for u in analyzer.unit_ids], dtype=np.int64)


def unit_channels(analyzer: Any, peaks: np.ndarray, rows: np.ndarray) -> tuple[list[np.ndarray], int]:
    """For each unit, the analyzer channels its waveform covers (see the module docstring),
    in electrode order, and their number K."""
    n_units, n_channels = len(analyzer.unit_ids), len(analyzer.channel_ids)
    mask = analyzer.sparsity.mask if analyzer.sparsity is not None else np.ones((n_units, n_channels), bool)
    k = int(mask.sum(axis=1).min()) if n_units else 0
    positions = analyzer.get_channel_locations()
    chosen = []
    for u in range(n_units):
        idx = np.flatnonzero(mask[u])
        dist = np.linalg.norm(positions[idx] - positions[peaks[u]], axis=1)
        near = idx[np.lexsort((rows[idx], dist))[:k]]
        chosen.append(near[np.argsort(rows[near])])
    return chosen, k


def add_units(nwbfile: Any, group: Any, analyzer: Any, metrics: pd.DataFrame, units: pd.DataFrame,
              channels: pd.DataFrame, waveforms: bool, fmt: str, thresholds: str) -> None:
    """The units table: spike times, electrodes, templates, metrics, locations."""
    from pynwb.misc import Units

    fs = float(analyzer.sampling_frequency)
    templates = analyzer.get_extension("templates")
    if templates is None:
        raise StoreError("the qc analyzer has no templates: run qc again")
    row_of = {str(c): i for i, c in enumerate(channels["channel"])}
    rows = np.array([row_of[str(c)] for c in analyzer.channel_ids])
    peaks = main_channels(analyzer)
    chosen, _ = unit_channels(analyzer, peaks, rows)
    table = Units(
        name="units", description="units of the spike sorting, with quality metrics and locations",
        electrode_table=nwbfile.electrodes, resolution=1.0 / fs,
        waveform_rate=fs if waveforms else None, waveform_unit="volts",
        waveform_time_before_peak_in_ms=float(templates.params["ms_before"]) if waveforms else None,
    )
    nwbfile.units = table
    columns: dict[str, Any] = {"unit_name": [str(u) for u in analyzer.unit_ids],
                               "peak_channel": rows[peaks]}
    columns.update(extra_columns(metrics, {}, {"unit_id"}, _RESERVED_UNITS, "qc"))
    loc_rename = {"x": "rel_x", "y": "rel_y", "z": "rel_z", "acronym": "location"}
    loc = extra_columns(units, loc_rename, {"unit_id"}, _RESERVED_UNITS | set(columns), "localize")
    if "acronym" in units:
        loc["location"] = region_names(units)
    columns.update(loc)
    for name in columns:
        desc = UNIT_COLUMNS.get(name) or (f"'{name}' from localize/units.pqt" if name in loc
                                          else f"quality metric '{name}' (SpikeInterface), from qc/metrics.pqt")
        if name == "passes_qc" and thresholds:
            desc = f"True when every QC threshold holds: {thresholds}"
        table.add_column(name=name, description=desc)
    spikes = analyzer.sorting.to_spike_vector()
    order = np.argsort(spikes["unit_index"], kind="stable")
    bounds = np.searchsorted(spikes["unit_index"][order], np.arange(len(analyzer.unit_ids) + 1))
    times = spikes["sample_index"][order].astype(np.float64) / fs
    if waveforms:
        mean = templates.get_templates(operator="average")
        std = templates.get_templates(operator="std") if "std" in templates.params["operators"] else None
    for u in range(len(analyzer.unit_ids)):
        row: dict[str, Any] = {name: values[u] for name, values in columns.items()}
        if waveforms:
            row["waveform_mean"] = (mean[u][:, chosen[u]] * 1e-6).astype(np.float32)
            if std is not None:
                row["waveform_sd"] = (std[u][:, chosen[u]] * 1e-6).astype(np.float32)
        table.add_unit(spike_times=times[bounds[u]:bounds[u + 1]], electrodes=rows[chosen[u]].tolist(),
                       electrode_group=group, id=u, **row)
    if fmt == "hdf5" and len(table):
        from pynwb import H5DataIO

        for name in ("spike_times", "waveform_mean", "waveform_sd"):
            if name in table:
                column = table[name]
                column = getattr(column, "target", column)  # spike_times: the data, not its index
                column.set_data_io(H5DataIO, {"compression": "gzip", "compression_opts": 4})
