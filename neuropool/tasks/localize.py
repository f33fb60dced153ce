"""localize: unit and channel positions on the probe -> CCF coordinates (µm from bregma) -> regions.

Unit positions come from the SortingAnalyzer saved by ``qc`` (SpikeInterface's
``unit_locations``, monopolar triangulation); channel positions from the preprocessed store. With
a probe trajectory in the session metadata both are mapped through it (see
:mod:`neuropool.tasks.trajectory`); without one, CCF columns are NaN and the summary says why.

Brain regions need an Allen CCF annotation volume (``atlas.url``, see :mod:`neuropool.io.atlas`):
with one, the entry point is first moved to the brain surface as IBL does
(``atlas.snap_entry_to_surface``), and ``channels.pqt`` and ``units.pqt`` get the Allen
structure id (``atlas_id``) and ``acronym`` of each row. Without an atlas, or without a
trajectory, regions are left out, not guessed, and the summary says why.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from neuropool.io import atlas as ccf
from neuropool.io.timeseries import TimeseriesStore
from neuropool.tasks._scratch import fetch, publish, scratch_dir
from neuropool.tasks.base import RUN_ONLY, Params, Task, TaskContext
from neuropool.tasks.trajectory import Trajectory


class AtlasParams(Params):
    """Where the Allen CCF annotation volume is, and how trajectories meet it."""

    url: str = Field(..., min_length=1,
                     description="Allen CCF annotation volume (annotation_25.nrrd), any fsspec URL")
    bregma_um: tuple[float, float, float] = Field(
        ccf.IBL_BREGMA_UM, description="bregma in the volume, CCF µm (ML, AP, DV); IBL's by default")
    snap_entry_to_surface: bool = Field(
        True, description="replace the entry's z by the brain surface at (x, y), as IBL does")
    storage_options: dict[str, Any] | None = Field(
        None, json_schema_extra=RUN_ONLY,
        description="fsspec options for url (e.g. {anon: true}; no secrets: they are recorded); default: the run's own")


class LocalizeParams(Params):
    """Parameters of :class:`Localize`."""

    trajectory: Trajectory | None = Field(
        None, description="overrides the trajectory found in the session metadata")
    atlas: AtlasParams | None = Field(
        None, description="Allen CCF annotation volume for brain regions; none: regions left out")

    def fingerprint_fields(self) -> dict[str, Any]:
        """As :meth:`Params.fingerprint_fields`, also without the atlas's ``storage_options``."""
        out = super().fingerprint_fields()
        if isinstance(out.get("atlas"), dict):
            out["atlas"].pop("storage_options", None)
        return out


class Localize(Task):
    """Place channels and units in CCF coordinates through the probe trajectory, and in regions."""

    name = "localize"
    version = "2"
    Params = LocalizeParams
    inputs = ("ephys.preprocessed", "units.metrics")
    outputs = ("units.locations",)

    def trajectory(self, ctx: TaskContext) -> Trajectory | None:
        if self.params.trajectory is not None:
            return self.params.trajectory
        found = ctx.info.get("probe", {}).get("trajectory")
        return Trajectory.model_validate(found) if found else None

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        from neuropool.tasks.qc import load_analyzer

        store = TimeseriesStore(ctx.inputs["ephys.preprocessed"], ctx.storage_options)
        qc_dir, temporary = fetch(ctx.inputs["units.metrics"], ctx.storage_options)
        try:
            analyzer = load_analyzer(qc_dir)
            units_xyz = analyzer.get_extension("unit_locations").get_data()
            unit_ids = [str(u) for u in analyzer.unit_ids]
        finally:
            if temporary:
                shutil.rmtree(qc_dir, ignore_errors=True)
        channels = pd.DataFrame({"channel": store.channel_ids, "x": store.coord("x"), "y": store.coord("y")})
        units = pd.DataFrame({"unit_id": unit_ids, "x": units_xyz[:, 0], "y": units_xyz[:, 1]})
        if units_xyz.shape[1] > 2:
            units["z"] = units_xyz[:, 2]
        summary, traj = self._place(ctx, channels, units)
        out = scratch_dir("localize")
        try:
            channels.to_parquet(out / "channels.pqt")
            units.to_parquet(out / "units.pqt")
            (out / "trajectory.json").write_text(json.dumps(traj.model_dump() if traj else None, indent=2))
            publish(out, ctx.outputs["units.locations"], ctx.storage_options)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return summary

    def _place(self, ctx: TaskContext, channels: pd.DataFrame,
               units: pd.DataFrame) -> tuple[dict[str, Any], Trajectory | None]:
        """Add ``ml, ap, dv`` (and with an atlas ``atlas_id, acronym``) to both tables."""
        traj = self.trajectory(ctx)
        spec = self.params.atlas
        summary: dict[str, Any] = {"n_units": len(units), "n_channels": len(channels)}
        volume = None
        if traj is not None and spec is not None:
            options = ctx.storage_options if spec.storage_options is None else spec.storage_options
            volume = ccf.read_annotation(spec.url, options)
            summary["atlas"] = {"url": spec.url, "bregma_um": list(spec.bregma_um),
                                "shape_ap_dv_ml": list(volume.shape), "voxel_um": list(volume.voxel_um)}
            if spec.snap_entry_to_surface:
                traj, summary["entry_z_um"] = _snap(traj, volume, spec.bregma_um)
        for table in (channels, units):
            mlapdv = traj.to_ccf(table["y"].to_numpy()) if traj else np.full((len(table), 3), np.nan)
            table["ml"], table["ap"], table["dv"] = mlapdv.T
        summary["trajectory"] = traj.model_dump() if traj else None
        if traj is None:
            summary["note"] = "no probe trajectory in the session metadata: CCF coordinates are NaN"
        else:
            summary["tip_mlapdv_um"] = [round(float(v), 1) for v in traj.tip]
        if volume is None:
            summary["regions"] = _left_out(traj is not None, spec is not None)
            return summary, traj
        counts: dict[str, dict[str, int]] = {}
        unknown: set[int] = set()
        for label, table in (("channels", channels), ("units", units)):
            ids = volume.region_ids(table[["ml", "ap", "dv"]].to_numpy(), spec.bregma_um)
            table["atlas_id"] = ids
            table["acronym"] = ccf.acronyms(ids).astype(str)
            counts[label] = ccf.region_counts(ids)
            unknown.update(ccf.unknown_ids(ids))
        summary["region_counts"] = counts
        units_in = ", ".join(f"{a} {n}" for a, n in counts["units"].items())
        summary["regions"] = f"units by region: {units_in or 'no units'} (atlas {spec.url})"
        if unknown:
            summary["regions_note"] = (
                f"ids {sorted(unknown)[:10]} are not in the Allen structure ontology (acronym "
                f"{ccf.UNKNOWN_ACRONYM!r}): is {spec.url} an Allen CCF 2017 annotation volume?")
        return summary, traj


def _snap(traj: Trajectory, volume: ccf.AnnotationVolume,
          bregma_um: tuple[float, float, float]) -> tuple[Trajectory, dict[str, Any]]:
    """Move the entry to the brain surface at (x, y), as IBL's ``Insertion.from_dict`` does."""
    z = volume.surface_z(traj.x, traj.y, bregma_um)
    if z is None:
        return traj, {"given": traj.z, "used": traj.z,
                      "note": "no brain surface in the atlas at the entry's (x, y): z kept as given"}
    return traj.with_entry_z(z), {"given": traj.z, "used": round(z, 3), "snapped_to_surface": True}


def _left_out(has_trajectory: bool, has_atlas: bool) -> str:
    """Why brain regions were not looked up."""
    if not has_trajectory and not has_atlas:
        return "left out: no probe trajectory and no atlas configured (localize.atlas.url)"
    if not has_trajectory:
        return "left out: no probe trajectory in the session metadata (the atlas is not used)"
    return "left out: no atlas configured (localize.atlas.url: an Allen CCF annotation NRRD)"
