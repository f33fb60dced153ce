"""qc: sorted units -> a SortingAnalyzer, quality metrics, and a pass/fail label per unit.

The analyzer (random spikes, waveforms, templates, noise levels, spike amplitudes, spike and unit
locations) is computed once here, saved in the asset, and reused by ``localize`` and ``export``.
A unit passes when every configured threshold holds; a metric that cannot be computed (NaN, e.g.
``amplitude_cutoff`` with too few spikes) fails its threshold, so a pass is never a guess.
The defaults are the AIND thresholds: ``rp_contamination < 0.5``, ``presence_ratio > 0.8``,
``amplitude_cutoff < 0.1``.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from neuropool.io.sirecording import StoreRecording
from neuropool.tasks._scratch import fetch, publish, scratch_dir
from neuropool.tasks.base import RUN_ONLY, Params, Resources, Task, TaskContext

#: Quality metrics always computed (SpikeInterface names); thresholds may use any of their columns.
METRICS = ("num_spikes", "firing_rate", "presence_ratio", "snr", "isi_violation",
           "rp_violation", "amplitude_cutoff", "amplitude_median")


class Bound(BaseModel):
    """Bounds a metric must respect to pass: any of ``lt``, ``le``, ``gt``, ``ge``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Bound:
        if all(v is None for v in (self.lt, self.le, self.gt, self.ge)):
            raise ValueError("a threshold needs at least one of lt, le, gt, ge")
        return self

    def passes(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask of the values within bounds (NaN never passes)."""
        v = np.asarray(values, dtype=float)
        ok = np.isfinite(v)
        with np.errstate(invalid="ignore"):
            for bound, test in ((self.lt, np.less), (self.le, np.less_equal),
                                (self.gt, np.greater), (self.ge, np.greater_equal)):
                if bound is not None:
                    ok &= test(v, bound)
        return ok

    def __str__(self) -> str:
        ops = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
        return " and ".join(f"{ops[k]} {v:g}" for k, v in self.model_dump().items() if v is not None)


AIND_THRESHOLDS = {
    "rp_contamination": Bound(lt=0.5),
    "presence_ratio": Bound(gt=0.8),
    "amplitude_cutoff": Bound(lt=0.1),
}


class QCParams(Params):
    """Parameters of :class:`QC`."""

    thresholds: dict[str, Bound] = Field(default_factory=lambda: dict(AIND_THRESHOLDS))
    max_spikes_per_unit: int = Field(500, ge=10, description="spikes sampled for waveforms")
    ms_before: float = Field(1.0, gt=0, le=10)
    ms_after: float = Field(2.0, gt=0, le=10)
    n_jobs: int = Field(-1, description="processes for waveform extraction; -1 = all cores",
                        json_schema_extra=RUN_ONLY)
    metric_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="SpikeInterface quality-metric parameters, by metric")

    @model_validator(mode="after")
    def _known_metrics(self) -> QCParams:
        known = _metric_columns()
        unknown = sorted(set(self.thresholds) - known)
        if unknown:
            raise ValueError(f"thresholds on unknown metric(s) {unknown}; known: {', '.join(sorted(known))}")
        return self


def _metric_columns() -> set[str]:
    from spikeinterface.metrics.quality import ComputeQualityMetrics

    cols: set[str] = set()
    for metric in ComputeQualityMetrics.metric_list:
        if metric.metric_name in METRICS:
            cols |= set(metric.metric_columns)
    return cols


class QC(Task):
    """Postprocessing and unit quality metrics, with pass/fail labels."""

    name = "qc"
    limit_blas = False  # parallel through n_jobs
    version = "1"
    Params = QCParams
    inputs = ("ephys.preprocessed", "ephys.sorting")
    outputs = ("units.metrics",)
    default_resources = Resources(cpus=1)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        from spikeinterface.core import create_sorting_analyzer
        from spikeinterface.core import load as si_load

        p = self.params
        recording = StoreRecording(ctx.inputs["ephys.preprocessed"], ctx.storage_options)
        sorting_dir, temporary = fetch(ctx.inputs["ephys.sorting"], ctx.storage_options)
        out = scratch_dir("qc")
        try:
            sorting = si_load(str(sorting_dir / "sorting"))
            job = {"n_jobs": p.n_jobs, "chunk_duration": "1s", "progress_bar": False}
            analyzer = create_sorting_analyzer(sorting, recording, format="binary_folder",
                                               folder=str(out / "analyzer"), sparse=True,
                                               seed=0, job_kwargs=job)
            analyzer.compute("random_spikes", max_spikes_per_unit=p.max_spikes_per_unit, seed=0)
            analyzer.compute("waveforms", ms_before=p.ms_before, ms_after=p.ms_after, **job)
            analyzer.compute("templates")
            analyzer.compute("noise_levels", **job)
            analyzer.compute("spike_amplitudes", **job)
            analyzer.compute("spike_locations", method="center_of_mass", **job)
            analyzer.compute("unit_locations", method="monopolar_triangulation")
            metric_params = self.metric_params(recording.get_total_duration())
            qm = analyzer.compute("quality_metrics", metric_names=list(METRICS),
                                  metric_params=metric_params, **job).get_data()
            labels = self.label(qm)
            table = qm.copy()
            table.insert(0, "unit_id", [str(u) for u in qm.index])
            table["passes_qc"] = labels
            table.reset_index(drop=True).to_parquet(out / "metrics.pqt")
            (out / "thresholds.json").write_text(json.dumps(
                {k: v.model_dump(exclude_none=True) for k, v in p.thresholds.items()}, indent=2))
            n_units, n_pass = len(table), int(labels.sum())
            publish(out, ctx.outputs["units.metrics"], ctx.storage_options)
        finally:
            if temporary:
                shutil.rmtree(sorting_dir, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        return {
            "n_units": n_units,
            "n_passing": n_pass,
            "thresholds": {k: str(v) for k, v in p.thresholds.items()},
            "metric_params": metric_params,
        }

    def metric_params(self, duration_s: float) -> dict[str, dict[str, Any]]:
        """SpikeInterface metric parameters, adapted to short recordings unless given.

        SpikeInterface's defaults suit hour-long recordings: presence ratio in 60 s bins (NaN for a
        recording shorter than a bin) and amplitude cutoff on a 100-bin histogram (NaN below 500
        spikes). Unless ``metric_params`` says otherwise, recordings under 10 minutes get presence
        bins of a tenth of their length and a 20-bin amplitude histogram (NaN below 100 spikes).
        """
        params: dict[str, dict[str, Any]] = {}
        if duration_s < 600:
            params["presence_ratio"] = {"bin_duration_s": min(60.0, duration_s / 10)}
            params["amplitude_cutoff"] = {"num_histogram_bins": 20}
        for metric, given in self.params.metric_params.items():
            params[metric] = {**params.get(metric, {}), **given}
        return params

    def label(self, metrics: pd.DataFrame) -> np.ndarray:
        """True for the units meeting every threshold."""
        ok = np.ones(len(metrics), dtype=bool)
        for column, bound in self.params.thresholds.items():
            ok &= bound.passes(metrics[column].to_numpy())
        return ok
