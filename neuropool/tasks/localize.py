"""localize: unit and channel positions on the probe -> CCF coordinates (µm from bregma).

Unit positions come from the SortingAnalyzer saved by ``qc`` (SpikeInterface's
``unit_locations``, monopolar triangulation); channel positions from the preprocessed store. With
a probe trajectory in the session metadata both are mapped through it (see
:mod:`neuropool.tasks.trajectory`); without one, CCF columns are NaN and the summary says why.
Brain regions need an atlas volume, which is not configured yet: they are left out, not guessed.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from neuropool.io.timeseries import TimeseriesStore
from neuropool.tasks._scratch import fetch, publish, scratch_dir
from neuropool.tasks.base import Params, Task, TaskContext
from neuropool.tasks.trajectory import Trajectory


class LocalizeParams(Params):
    """Parameters of :class:`Localize`."""

    trajectory: Trajectory | None = Field(
        None, description="overrides the trajectory found in the session metadata")


class Localize(Task):
    """Place channels and units in CCF coordinates through the probe trajectory."""

    name = "localize"
    version = "1"
    Params = LocalizeParams
    inputs = ("ephys.preprocessed", "units.metrics")
    outputs = ("units.locations",)

    def trajectory(self, ctx: TaskContext) -> Trajectory | None:
        if self.params.trajectory is not None:
            return self.params.trajectory
        found = ctx.info.get("probe", {}).get("trajectory")
        return Trajectory.model_validate(found) if found else None

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        from spikeinterface.core import load_sorting_analyzer

        store = TimeseriesStore(ctx.inputs["ephys.preprocessed"], ctx.storage_options)
        qc_dir, temporary = fetch(ctx.inputs["units.metrics"], ctx.storage_options)
        try:
            analyzer = load_sorting_analyzer(str(qc_dir / "analyzer"), load_extensions=True)
            units_xyz = analyzer.get_extension("unit_locations").get_data()
            unit_ids = [str(u) for u in analyzer.unit_ids]
        finally:
            if temporary:
                shutil.rmtree(qc_dir, ignore_errors=True)
        traj = self.trajectory(ctx)
        channels = pd.DataFrame({"channel": store.channel_ids, "x": store.coord("x"), "y": store.coord("y")})
        units = pd.DataFrame({"unit_id": unit_ids, "x": units_xyz[:, 0], "y": units_xyz[:, 1]})
        if units_xyz.shape[1] > 2:
            units["z"] = units_xyz[:, 2]
        for table in (channels, units):
            mlapdv = traj.to_ccf(table["y"].to_numpy()) if traj else np.full((len(table), 3), np.nan)
            table["ml"], table["ap"], table["dv"] = mlapdv.T
        out = scratch_dir("localize")
        try:
            channels.to_parquet(out / "channels.pqt")
            units.to_parquet(out / "units.pqt")
            (out / "trajectory.json").write_text(json.dumps(traj.model_dump() if traj else None, indent=2))
            publish(out, ctx.outputs["units.locations"], ctx.storage_options)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        summary: dict[str, Any] = {"n_units": len(units), "n_channels": len(channels),
                                   "trajectory": traj.model_dump() if traj else None,
                                   "regions": "left out: no atlas configured"}
        if traj is None:
            summary["note"] = "no probe trajectory in the session metadata: CCF coordinates are NaN"
        else:
            summary["tip_mlapdv_um"] = [round(float(v), 1) for v in traj.tip]
        return summary
