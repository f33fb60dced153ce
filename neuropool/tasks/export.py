"""export: sorted, QC'd and localised units -> ALF datasets that IBL's own tools load.

The datasets of each probe are written into an ONE session tree at the top of the derived asset,
``<asset>/<subject>/<date>/<number>/alf/<probe>/`` (:func:`neuropool.io.spec.one_session_path`),
and the asset's ONE cache tables (``sessions.pqt``, ``datasets.pqt``) are rebuilt after each
probe, so IBL's ``one-api`` loads them in local mode::

    from one.api import One
    one = One(cache_dir="<asset>", mode="local")
    eid = one.search()[0]
    spikes = one.load_object(eid, "spikes", collection="alf/probe00")

In ALF's standard units (IBL's definitions; ``nspi`` spikes, ``nclu`` clusters, ``ncha`` sites):

=====================================  ==============  ==========================================
dataset                                shape, dtype    meaning
=====================================  ==============  ==========================================
spikes.times.npy                       (nspi,) f8      spike times, s from the first sample
spikes.samples.npy                     (nspi,) i8      spike sample indices
spikes.clusters.npy                    (nspi,) i8      cluster index of each spike (0..nclu-1)
spikes.templates.npy                   (nspi,) i8      template of each spike (= its cluster)
spikes.amps.npy                        (nspi,) f8      peak-to-trough amplitude, V
spikes.depths.npy                      (nspi,) f8      spike position along the probe, µm (*)
clusters.channels.npy                  (nclu,) i8      index of each cluster's peak channel
clusters.depths.npy                    (nclu,) f8      cluster position along the probe, µm (*)
clusters.amps.npy                      (nclu,) f8      median of its spikes.amps, V
clusters.peakToTrough.npy              (nclu,) f8      template peak-to-trough time, ms
clusters.uuids.csv                     nclu rows       the sorter's unit id of each cluster
clusters.metrics.pqt                   nclu rows       quality metrics, ``ibl_label``, ``passes_qc``
clusters.mlapdv.npy                    (nclu, 3) f8    CCF position, µm from bregma (NaN without
                                                       a trajectory)
clusters.brainLocationIds_ccf_2017     (nclu,) i8      Allen structure id (with an atlas)
clusters.brainLocationAcronyms_ccf_..  (nclu,) str     Allen acronym (with an atlas)
templates.waveforms.npy                (nclu, ns, nc)  mean waveform on the cluster's channels, V
templates.waveformsChannels.npy        (nclu, nc) i8   those channels' indices (-1: none)
channels.localCoordinates.npy          (ncha, 2) f8    site positions on the probe, µm (*)
channels.mlapdv.npy                    (ncha, 3) f8    CCF position of each site, µm from bregma
channels.brainLocationIds_ccf_2017     (ncha,) i8      Allen structure id (with an atlas)
channels.rawInd.npy                    (ncha,) i8      column of each site in the raw file
=====================================  ==============  ==========================================

Region datasets are written only when ``localize`` had an atlas; without one they are left out.

(*) Heights on the probe are in IBL's frame: the first row of sites at ``site_offset_um`` (20 µm,
:mod:`neuropool.tasks.trajectory`), where SpikeGLX and our stores put it at 0. So IBL's own
``localCoordinates[:, 1] + 200 µm`` from the tip gives back ``channels.mlapdv``.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pandas as pd

from neuropool.errors import StoreError
from neuropool.io import spec, urls
from neuropool.tasks._scratch import fetch, publish, scratch_dir
from neuropool.tasks.base import Params, Task, TaskContext

#: ``templates.waveforms`` keeps each cluster's this many channels nearest its peak (IBL: 32).
WAVEFORM_CHANNELS = 32


class ExportParams(Params):
    """Parameters of :class:`Export` (none yet)."""


class Export(Task):
    """Write the ALF datasets of one probe, and the asset's ONE cache tables."""

    name = "export"
    version = "2"
    Params = ExportParams
    inputs = ("units.metrics", "units.locations")
    outputs = ("alf",)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        from neuropool.tasks.qc import load_analyzer

        qc_dir, tmp_qc = fetch(ctx.inputs["units.metrics"], ctx.storage_options)
        loc_dir, tmp_loc = fetch(ctx.inputs["units.locations"], ctx.storage_options)
        out = scratch_dir("alf")
        try:
            analyzer = load_analyzer(qc_dir)
            metrics = pd.read_parquet(qc_dir / "metrics.pqt")
            units = pd.read_parquet(loc_dir / "units.pqt")
            channels = pd.read_parquet(loc_dir / "channels.pqt")
            check_tables(ctx, analyzer, metrics, units, channels)
            unit_ids = [str(u) for u in analyzer.unit_ids]
            data = alf_datasets(analyzer, metrics, units, channels, _site_offset(loc_dir))
            for (obj, attr, ext), arr in data.items():
                np.save(out / spec.alf_filename(obj, attr, ext), arr)
            table = metrics.copy()
            table.insert(0, "cluster_id", np.arange(len(table)))
            table.to_parquet(out / spec.alf_filename("clusters", "metrics", "pqt"))
            pd.DataFrame({"uuids": unit_ids}).to_csv(out / "clusters.uuids.csv", index=False)
            names = sorted(p.name for p in out.iterdir())
            n_spikes = len(data[("spikes", "times", "npy")])
            publish(out, ctx.outputs["alf"], ctx.storage_options)
        finally:
            for path, temporary in ((qc_dir, tmp_qc), (loc_dir, tmp_loc)):
                if temporary:
                    shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        summary: dict[str, Any] = {"datasets": names, "n_spikes": n_spikes, "n_clusters": len(unit_ids),
                                   "collection": spec.alf_collection(ctx.probe)}
        if "atlas_id" not in channels:
            summary["regions"] = "left out: localize had no atlas"
        return summary

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        """Rebuild the asset's ONE cache tables, on the client (one probe at a time)."""
        from neuropool.io.one import write_one_tables

        summary = dict(results[0])
        root = ctx.outputs["alf"]
        for _ in range(5):  # <root>/<subject>/<date>/<number>/alf/<probe>
            root = urls.parent(root)
        summary["one"] = write_one_tables(root, ctx.storage_options)
        return summary


def check_tables(ctx: TaskContext, analyzer: Any, metrics: pd.DataFrame, units: pd.DataFrame,
                 channels: pd.DataFrame) -> None:
    """Refuse inputs whose units or channels disagree with the sorting, naming the file."""
    unit_ids = [str(u) for u in analyzer.unit_ids]
    for table, where in ((metrics, f"{ctx.inputs['units.metrics']}/metrics.pqt"),
                         (units, f"{ctx.inputs['units.locations']}/units.pqt")):
        if "unit_id" not in table or [str(u) for u in table["unit_id"]] != unit_ids:
            raise StoreError(f"{where}: its units are not the sorting's ({len(unit_ids)} units in the "
                             "qc analyzer): run qc and localize again")
    where = f"{ctx.inputs['units.locations']}/channels.pqt"
    for column in ("channel", "x", "y"):
        if column not in channels:
            raise StoreError(f"{where}: no {column!r} column")
    if sorted(map(str, channels["channel"])) != sorted(map(str, analyzer.channel_ids)):
        raise StoreError(f"{where}: its channels are not those of the sorted recording "
                         f"({len(channels)} rows, {len(analyzer.channel_ids)} channels sorted)")
    if analyzer.get_num_segments() != 1:
        raise StoreError(f"{ctx.inputs['units.metrics']}: the analyzer has "
                         f"{analyzer.get_num_segments()} segments; the exports handle one")


def _site_offset(loc_dir: Any) -> float:
    """The height of the first site row in IBL's frame: the trajectory's, else IBL's 20 µm."""
    import json

    from neuropool.tasks.trajectory import SITE_OFFSET_UM

    try:
        traj = json.loads((loc_dir / "trajectory.json").read_text()) or {}
    except (OSError, ValueError):
        traj = {}
    return float(traj.get("site_offset_um", SITE_OFFSET_UM))


def alf_datasets(analyzer: Any, metrics: pd.DataFrame, units: pd.DataFrame,
                 channels: pd.DataFrame, site_offset_um: float) -> dict[tuple[str, str, str], np.ndarray]:
    """The ALF arrays of one probe, keyed ``(object, attribute, extension)``.

    Heights on the probe (``*.depths``, ``channels.localCoordinates[:, 1]``) are shifted by
    ``site_offset_um`` into IBL's frame.
    """
    from spikeinterface.core import get_template_extremum_channel

    from neuropool.tasks.ibl_units import spike_amplitudes_ptt

    fs = analyzer.sampling_frequency
    spikes = analyzer.sorting.to_spike_vector()
    clusters = spikes["unit_index"].astype(np.int64)
    amps_v = spike_amplitudes_ptt(analyzer) * 1e-6
    locs = analyzer.get_extension("spike_locations").get_data()
    channel_index = {c: i for i, c in enumerate(channels["channel"])}
    to_store = np.array([channel_index[c] for c in analyzer.channel_ids], dtype=np.int64)
    peak = get_template_extremum_channel(analyzer, outputs="index")
    peak_store = np.array([to_store[peak[u]] for u in analyzer.unit_ids], dtype=np.int64)
    n_clu = len(analyzer.unit_ids)
    cluster_amps = np.array([np.median(amps_v[clusters == i]) if np.any(clusters == i) else np.nan
                             for i in range(n_clu)])
    templates = analyzer.get_extension("templates").get_data(operator="average")  # µV
    waves, wave_channels = _template_waveforms(templates, peak, analyzer, to_store)
    tm = analyzer.get_extension("template_metrics").get_data()
    data = {
        ("spikes", "times", "npy"): spikes["sample_index"].astype(np.float64) / fs,
        ("spikes", "samples", "npy"): spikes["sample_index"].astype(np.int64),
        ("spikes", "clusters", "npy"): clusters,
        ("spikes", "templates", "npy"): clusters,
        ("spikes", "amps", "npy"): amps_v,
        ("spikes", "depths", "npy"): locs["y"].astype(np.float64) + site_offset_um,
        ("clusters", "channels", "npy"): peak_store,
        ("clusters", "depths", "npy"): units["y"].to_numpy(np.float64) + site_offset_um,
        ("clusters", "amps", "npy"): cluster_amps,
        ("clusters", "peakToTrough", "npy"): tm["peak_to_trough_duration"].to_numpy(np.float64) * 1e3,
        ("clusters", "mlapdv", "npy"): units[["ml", "ap", "dv"]].to_numpy(np.float64),
        ("templates", "waveforms", "npy"): waves * 1e-6,
        ("templates", "waveformsChannels", "npy"): wave_channels,
        ("channels", "localCoordinates", "npy"): channels[["x", "y"]].to_numpy(np.float64) + [0.0, site_offset_um],
        ("channels", "mlapdv", "npy"): channels[["ml", "ap", "dv"]].to_numpy(np.float64),
        ("channels", "rawInd", "npy"): np.arange(len(channels), dtype=np.int64),
    }
    if "atlas_id" in channels and "atlas_id" in units:
        data[("channels", "brainLocationIds_ccf_2017", "npy")] = channels["atlas_id"].to_numpy(np.int64)
        data[("clusters", "brainLocationIds_ccf_2017", "npy")] = units["atlas_id"].to_numpy(np.int64)
        data[("clusters", "brainLocationAcronyms_ccf_2017", "npy")] = units["acronym"].to_numpy(str)
    return data


def _template_waveforms(templates: np.ndarray, peak: dict, analyzer: Any,
                        to_store: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's mean waveform on the (up to) 32 channels nearest its peak channel, µV."""
    positions = analyzer.get_channel_locations()
    n_keep = min(WAVEFORM_CHANNELS, templates.shape[2])
    waves = np.zeros((templates.shape[0], templates.shape[1], n_keep), dtype=np.float32)
    chans = np.full((templates.shape[0], n_keep), -1, dtype=np.int64)
    for i, unit in enumerate(analyzer.unit_ids):
        dist = np.linalg.norm(positions - positions[peak[unit]], axis=1)
        nearest = np.argsort(dist, kind="stable")[:n_keep]
        waves[i] = templates[i][:, nearest]
        chans[i] = to_store[nearest]
    return waves, chans
