"""The naming spec, written once and used everywhere.

- Dataset names are ``<object>.<attribute>`` as in ONE/ALF: ``ephys.raw``, ``ephys.preprocessed``.
- A derived asset is named after its source, AIND style: ``<source>_<label>_<YYYY-MM-DD>_<HH-MM-SS>``.
- Inside an asset each probe has a folder (``probe00``); each dataset a fixed relative path.
- ALF files are ``<object>.<attribute>.<extension>`` (``spikes.times.npy``).
"""

from __future__ import annotations

import re
from datetime import datetime

from neuropool.errors import ConfigError

#: Where each dataset lives inside a probe folder of a derived asset.
DATASET_PATHS: dict[str, str] = {
    "ephys.raw": "raw.zarr",
    # a probe's separate LF stream (SpikeGLX NP1/3A .lf), decompressed like the AP one
    "ephys.rawLf": "raw_lf.zarr",
    "ephys.preprocessed": "preprocessed.zarr",
    "ephys.sorting": "sorting",
    "units.metrics": "qc",
    "units.locations": "localize",
    # the ALF export is not in the probe folder but in an ONE session tree at the top of the
    # asset: <subject>/<date>/<number>/alf/<probe> (one_session_path, DerivedAsset.dataset_url)
    "alf": "alf",
    # the NWB file of the probe's units (neuropool.tasks.nwb): <session>_<probe>.nwb inside
    "nwb": "nwb",
    # the LFP band (neuropool.tasks.lfp), beside the AP band
    "ephys.lfp": "lfp.zarr",
    # raw-data QC (neuropool.tasks.rawqc): IBL's _iblqc_ files, in the probe's folder
    "ephysTimeRmsAP.rms": "_iblqc_ephysTimeRmsAP.rms.npy",
    "ephysTimeRmsAP.timestamps": "_iblqc_ephysTimeRmsAP.timestamps.npy",
    "ephysChannels.rawSpikeRms": "_iblqc_ephysChannels.rawSpikeRms.npy",
    "ephysChannels.rawLfpRms": "_iblqc_ephysChannels.rawLfpRms.npy",
    # bad-channel labels of every ephys channel (IBL's codes), written by preprocess
    "ephysChannels.labels": "_iblqc_ephysChannels.labels.npy",
    "ephysSpectralDensityAP.freqs": "_iblqc_ephysSpectralDensityAP.freqs.npy",
    "ephysSpectralDensityAP.power": "_iblqc_ephysSpectralDensityAP.power.npy",
    "ephysSpectralDensityLF.freqs": "_iblqc_ephysSpectralDensityLF.freqs.npy",
    "ephysSpectralDensityLF.power": "_iblqc_ephysSpectralDensityLF.power.npy",
}

#: The datasets raw_qc writes (IBL's ``_iblqc_`` files) and the names of their arrays, which
#: the task computes and the report reads.
RAW_QC_DATASETS: dict[str, str] = {
    "ephysTimeRmsAP.rms": "time_rms",
    "ephysTimeRmsAP.timestamps": "timestamps",
    "ephysChannels.rawSpikeRms": "spike_rms",
    "ephysChannels.rawLfpRms": "lfp_rms",
    "ephysSpectralDensityAP.freqs": "ap_freqs",
    "ephysSpectralDensityAP.power": "ap_power",
    "ephysSpectralDensityLF.freqs": "lf_freqs",
    "ephysSpectralDensityLF.power": "lf_power",
}

#: The input every per-probe graph starts from: the raw recording's URL (never written to).
SOURCE_DATASET = "ephys.source"
#: A probe's separate LF recording, where it has one (SpikeGLX ``.lf``; never written to).
SOURCE_LF_DATASET = "ephys.sourceLf"

#: Names of the sidecar files at the top of every derived asset.
DATA_DESCRIPTION = "data_description.json"
PROCESSING = "processing.json"
#: Hidden folder holding the commit markers, one per node.
COMMITS_DIR = "_commits"
#: Folder of a derived asset holding one record per node whose last attempt failed.
FAILURES_DIR = "_failures"

_NAME = re.compile(r"^[a-z][a-zA-Z0-9]*\.[a-zA-Z][a-zA-Z0-9_]*$")
_ASSET = re.compile(r"^(?P<source>.+)_(?P<label>[A-Za-z0-9-]+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<time>\d{2}-\d{2}-\d{2})$")
_PROBE = re.compile(r"^probe\d{2}$")


def check_dataset_name(name: str) -> str:
    """Return ``name`` if it is an ``object.attribute`` dataset name, else raise ConfigError."""
    if name not in (SOURCE_DATASET, SOURCE_LF_DATASET) and name not in DATASET_PATHS and not _NAME.match(name):
        raise ConfigError(
            f"dataset name {name!r} is not of the form 'object.attribute' (e.g. 'ephys.raw')"
        )
    return name


def dataset_path(name: str, probe: str) -> str:
    """Relative path, inside a derived asset, of dataset ``name`` for ``probe``."""
    check_probe_name(probe)
    rel = DATASET_PATHS.get(name, name)
    return f"{probe}/{rel}"


def check_probe_name(probe: str) -> str:
    """Return ``probe`` if it follows IBL's ``probeNN`` convention, else raise ConfigError."""
    if not _PROBE.match(probe):
        raise ConfigError(f"probe name {probe!r} must look like 'probe00', 'probe01', ...")
    return probe


def asset_name(source: str, label: str = "processed", when: datetime | None = None) -> str:
    """Name a derived asset after its source: ``<source>_<label>_<date>_<time>``.

    Parameters
    ----------
    source : str
        Name of the raw session (a folder name, not a path).
    label : str
        What was done (``processed``, ``sorted``); letters, digits and dashes only.
    when : datetime, optional
        Creation time; now (local time) by default.
    """
    if not re.fullmatch(r"[A-Za-z0-9-]+", label):
        raise ConfigError(f"asset label {label!r} may contain only letters, digits and dashes")
    if "/" in source or not source:
        raise ConfigError(f"asset source {source!r} must be a non-empty name, not a path")
    when = when or datetime.now()
    return f"{source}_{label}_{when:%Y-%m-%d}_{when:%H-%M-%S}"


def parse_asset_name(name: str) -> dict[str, str] | None:
    """Split an asset name into ``source``, ``label``, ``date``, ``time``; None if it is not one."""
    m = _ASSET.match(name)
    return m.groupdict() if m else None


#: IBL's session folder naming: ``<subject>/<YYYY-MM-DD>/<number>``; a source named
#: ``<subject>_<date>_<number>`` (``mouse_2024-01-01_001``) gives exactly that.
_ONE_SOURCE = re.compile(r"^(?P<subject>[\w.-]+?)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<number>\d{1,3})$")


def one_session_path(asset: str) -> str:
    """The ONE session path (``<subject>/<date>/<number>``) of a derived asset's ALF datasets.

    The ALF export lives in the asset as an ONE session tree, so that IBL's ``one-api`` loads
    it in local mode with the asset as its cache folder. A source named like an IBL session
    (``<subject>_<YYYY-MM-DD>_<number>``) keeps its subject, date and number; any other source
    becomes the subject, on the asset's date, number ``001``.
    """
    parts = parse_asset_name(asset)
    if parts is None:
        raise ConfigError(f"{asset!r} is not a derived asset name (<source>_<label>_<date>_<time>)")
    m = _ONE_SOURCE.match(parts["source"])
    if m:
        return f"{m['subject']}/{m['date']}/{int(m['number']):03d}"
    subject = re.sub(r"[^\w.-]", "-", parts["source"])
    return f"{subject}/{parts['date']}/001"


def alf_collection(probe: str) -> str:
    """The ALF collection of a probe's spike sorting inside its ONE session: ``alf/<probe>``."""
    return f"alf/{check_probe_name(probe)}"


def alf_filename(obj: str, attribute: str, extension: str) -> str:
    """``spikes``, ``times``, ``npy`` -> ``spikes.times.npy``."""
    for part in (obj, attribute, extension):
        if not re.fullmatch(r"[A-Za-z0-9_]+", part):
            raise ConfigError(f"ALF name part {part!r} may contain only letters, digits and '_'")
    return f"{obj}.{attribute}.{extension}"
