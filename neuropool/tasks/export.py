"""export: sorted, QC'd and localised units -> ALF datasets that IBL users load.

Written per probe into ``<asset>/<probe>/alf/``, in ALF's standard units:

==========================  ==============  ==================================================
dataset                     shape, dtype    meaning
==========================  ==============  ==================================================
spikes.times.npy            (nspi,) f8      spike times, s from the recording's first sample
spikes.clusters.npy         (nspi,) i8      cluster index of each spike (0..nclu-1)
spikes.amps.npy             (nspi,) f8      peak amplitude, V (positive)
spikes.depths.npy           (nspi,) f8      spike position along the probe, µm from the tip region
clusters.channels.npy       (nclu,) i8      index of each cluster's peak channel
clusters.depths.npy         (nclu,) f8      cluster position along the probe, µm
clusters.metrics.pqt        nclu rows       quality metrics, ``passes_qc`` label, sorter's unit id
clusters.mlapdv.npy         (nclu, 3) f8    CCF position, µm from bregma (NaN without trajectory)
channels.localCoordinates   (ncha, 2) f8    site positions on the probe, µm
channels.mlapdv.npy         (ncha, 3) f8    CCF position of each site, µm from bregma
channels.rawInd.npy         (ncha,) i8      column of each site in the raw file
==========================  ==============  ==================================================
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pandas as pd

from neuropool.io import spec, urls
from neuropool.tasks._scratch import fetch, publish, scratch_dir
from neuropool.tasks.base import Params, Task, TaskContext


class ExportParams(Params):
    """Parameters of :class:`Export` (none yet)."""


class Export(Task):
    """Write the ALF datasets of one probe."""

    name = "export"
    version = "1"
    Params = ExportParams
    inputs = ("units.metrics", "units.locations")
    outputs = ("alf",)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        from spikeinterface.core import get_template_extremum_channel, load_sorting_analyzer

        qc_dir, tmp_qc = fetch(ctx.inputs["units.metrics"], ctx.storage_options)
        loc_dir, tmp_loc = fetch(ctx.inputs["units.locations"], ctx.storage_options)
        out = scratch_dir("alf")
        try:
            analyzer = load_sorting_analyzer(str(qc_dir / "analyzer"), load_extensions=True)
            fs = analyzer.sampling_frequency
            spikes = analyzer.sorting.to_spike_vector()
            amps = analyzer.get_extension("spike_amplitudes").get_data()
            locs = analyzer.get_extension("spike_locations").get_data()
            metrics = pd.read_parquet(qc_dir / "metrics.pqt")
            units = pd.read_parquet(loc_dir / "units.pqt")
            channels = pd.read_parquet(loc_dir / "channels.pqt")
            unit_ids = [str(u) for u in analyzer.unit_ids]
            if list(metrics["unit_id"]) != unit_ids or list(units["unit_id"]) != unit_ids:
                raise RuntimeError(f"{ctx.node}: units of qc and localize disagree with the sorting")
            peak = get_template_extremum_channel(analyzer, outputs="index")
            channel_index = {c: i for i, c in enumerate(channels["channel"])}
            peak_rec_ids = [analyzer.channel_ids[peak[u]] for u in analyzer.unit_ids]
            data = {
                ("spikes", "times", "npy"): spikes["sample_index"].astype(np.float64) / fs,
                ("spikes", "clusters", "npy"): spikes["unit_index"].astype(np.int64),
                ("spikes", "amps", "npy"): np.abs(amps).astype(np.float64) * 1e-6,
                ("spikes", "depths", "npy"): locs["y"].astype(np.float64),
                ("clusters", "channels", "npy"): np.array([channel_index[c] for c in peak_rec_ids], dtype=np.int64),
                ("clusters", "depths", "npy"): units["y"].to_numpy(np.float64),
                ("clusters", "mlapdv", "npy"): units[["ml", "ap", "dv"]].to_numpy(np.float64),
                ("channels", "localCoordinates", "npy"): channels[["x", "y"]].to_numpy(np.float64),
                ("channels", "mlapdv", "npy"): channels[["ml", "ap", "dv"]].to_numpy(np.float64),
                ("channels", "rawInd", "npy"): np.arange(len(channels), dtype=np.int64),
            }
            for (obj, attr, ext), arr in data.items():
                np.save(out / spec.alf_filename(obj, attr, ext), arr)
            table = metrics.copy()
            table.insert(0, "cluster_id", np.arange(len(table)))
            table.to_parquet(out / spec.alf_filename("clusters", "metrics", "pqt"))
            names = sorted(p.name for p in out.iterdir())
            publish(out, ctx.outputs["alf"], ctx.storage_options)
        finally:
            for path, temporary in ((qc_dir, tmp_qc), (loc_dir, tmp_loc)):
                if temporary:
                    shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        return {"datasets": names, "n_spikes": int(len(spikes)), "n_clusters": len(unit_ids),
                "folder": urls.basename(ctx.outputs["alf"])}
