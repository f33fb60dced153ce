"""qc: sorted units -> a SortingAnalyzer, quality metrics, and curation labels per unit.

The analyzer is computed once here, saved in the asset as zarr (``<probe>/qc/analyzer.zarr``),
and reused by ``localize`` and the exports. Its extensions: random spikes, waveforms, templates,
noise levels, spike amplitudes, spike and unit locations, template metrics, correlograms (and
principal components when ``pca_metrics``).

``<probe>/qc/metrics.pqt`` has one row per unit:

- SpikeInterface's quality metrics: every metric of its set that needs no principal components
  (:data:`METRICS`), plus the PCA metrics when ``pca_metrics`` is set;
- IBL's single-unit criteria and their ``ibl_label`` (0, 1/3, 2/3 or 1;
  :mod:`neuropool.tasks.ibl_units`), with thresholds from ``ibl``;
- ``passes_qc``: every bound of ``thresholds`` holds. The defaults are AIND's curation
  thresholds (``isi_violations_ratio < 0.5``, ``presence_ratio > 0.8``,
  ``amplitude_cutoff < 0.1``). A metric that cannot be computed (NaN, e.g. ``amplitude_cutoff``
  with too few spikes) fails its bound, so a pass is never a guess.

Template metrics (peak-to-valley, half width, ...) are in ``template_metrics.pqt``.
The summary in ``processing.json`` counts units per IBL label and passing the thresholds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from neuropool.errors import StoreError
from neuropool.io.sirecording import StoreRecording
from neuropool.tasks._scratch import fetch, publish, scratch_dir
from neuropool.tasks.base import RUN_ONLY, Params, Resources, Task, TaskContext
from neuropool.tasks.ibl_units import IBLCriteria, ibl_metrics, label_counts

#: SpikeInterface quality metrics always computed: its whole set but those needing principal
#: components. Thresholds may use any of their columns.
METRICS = ("num_spikes", "firing_rate", "presence_ratio", "snr", "isi_violation", "rp_violation",
           "sliding_rp_violation", "synchrony", "firing_range", "amplitude_cutoff", "noise_cutoff",
           "amplitude_median", "amplitude_cv", "drift", "sd_ratio")
#: SpikeInterface's metrics on principal components (``pca_metrics: true``; slower).
PCA_METRICS = ("mahalanobis", "d_prime", "nearest_neighbor", "silhouette")

#: Where the SortingAnalyzer lives inside the qc folder.
ANALYZER = "analyzer.zarr"


def load_analyzer(qc_dir: Any, url: str | None = None) -> Any:
    """The SortingAnalyzer that ``qc`` saved in the local folder ``qc_dir``, with its extensions.

    ``url`` names the qc folder in the error raised when there is no analyzer (default ``qc_dir``).
    """
    from spikeinterface.core import load_sorting_analyzer

    path = Path(qc_dir) / ANALYZER
    if not path.is_dir():
        raise StoreError(f"{url or qc_dir}: no SortingAnalyzer in the qc folder (expected {ANALYZER}, "
                         "written by qc version 2 and later); run qc again")
    return load_sorting_analyzer(str(path), load_extensions=True)


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


#: AIND's default curation (aind-ephys-curation): the default ``thresholds``.
AIND_THRESHOLDS = {
    "isi_violations_ratio": Bound(lt=0.5),
    "presence_ratio": Bound(gt=0.8),
    "amplitude_cutoff": Bound(lt=0.1),
}


class QCParams(Params):
    """Parameters of :class:`QC`."""

    thresholds: dict[str, Bound] = Field(default_factory=lambda: dict(AIND_THRESHOLDS),
                                         description="bounds on metric columns; default AIND's")
    ibl: IBLCriteria = Field(default_factory=IBLCriteria, description="IBL's single-unit criteria")
    pca_metrics: bool = Field(False, description="also compute SpikeInterface's PCA metrics")
    max_spikes_per_unit: int = Field(500, ge=10, description="spikes sampled for waveforms")
    ms_before: float = Field(1.0, gt=0, le=10)
    ms_after: float = Field(2.0, gt=0, le=10)
    n_jobs: int = Field(-1, description="processes for waveform extraction; -1 = all cores",
                        json_schema_extra=RUN_ONLY)
    metric_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="SpikeInterface quality-metric parameters, by metric")

    @model_validator(mode="after")
    def _known_metrics(self) -> QCParams:
        known = _metric_columns(self.pca_metrics) | set(IBL_COLUMNS)
        unknown = sorted(set(self.thresholds) - known)
        if unknown:
            raise ValueError(f"thresholds on unknown metric(s) {unknown}; known: {', '.join(sorted(known))}")
        return self


#: Columns of IBL's criteria, usable in ``thresholds`` too.
IBL_COLUMNS = ("ibl_rp_pass", "ibl_rp_min_contamination_pct", "ibl_noise_cutoff",
               "ibl_noise_cutoff_pass", "ibl_amp_median_uv", "ibl_amp_pass", "ibl_label")


def _metric_columns(pca: bool = False) -> set[str]:
    from spikeinterface.metrics.quality import ComputeQualityMetrics

    names = METRICS + (PCA_METRICS if pca else ())
    cols: set[str] = set()
    for metric in ComputeQualityMetrics.metric_list:
        if metric.metric_name in names:
            cols |= set(metric.metric_columns)
    return cols


class QC(Task):
    """Postprocessing and unit quality metrics, with pass/fail labels."""

    name = "qc"
    limit_blas = False  # parallel through n_jobs
    version = "2"
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
            analyzer = create_sorting_analyzer(sorting, recording, format="zarr",
                                               folder=str(out / ANALYZER), sparse=True,
                                               seed=0, job_kwargs=job)
            self.compute_extensions(analyzer, job)
            metric_params = self.metric_params(recording.get_total_duration())
            names = list(METRICS + (PCA_METRICS if p.pca_metrics else ()))
            qm = analyzer.compute("quality_metrics", metric_names=names,
                                  metric_params=metric_params, **job).get_data()
            table = qm.reset_index(drop=True)
            table.insert(0, "unit_id", [str(u) for u in qm.index])
            table = pd.concat([table, ibl_metrics(analyzer, p.ibl)], axis=1)
            table["passes_qc"] = self.label(table)
            table.to_parquet(out / "metrics.pqt")
            tm = analyzer.get_extension("template_metrics").get_data()
            tm.insert(0, "unit_id", [str(u) for u in tm.index])
            tm.reset_index(drop=True).to_parquet(out / "template_metrics.pqt")
            (out / "thresholds.json").write_text(json.dumps(
                {"thresholds": {k: v.model_dump(exclude_none=True) for k, v in p.thresholds.items()},
                 "ibl": p.ibl.model_dump()}, indent=2))
            n_units, n_pass = len(table), int(table["passes_qc"].sum())
            by_label = label_counts(table["ibl_label"].to_numpy())
            publish(out, ctx.outputs["units.metrics"], ctx.storage_options)
        finally:
            if temporary:
                shutil.rmtree(sorting_dir, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        return {
            "n_units": n_units,
            "n_passing": n_pass,
            "units_by_ibl_label": by_label,
            "thresholds": {k: str(v) for k, v in p.thresholds.items()},
            "ibl_criteria": p.ibl.model_dump(),
            "metric_params": metric_params,
        }

    def compute_extensions(self, analyzer: Any, job: dict[str, Any]) -> None:
        """Compute (and save in the analyzer) every extension curation and localisation need."""
        p = self.params
        analyzer.compute("random_spikes", max_spikes_per_unit=p.max_spikes_per_unit, seed=0)
        analyzer.compute("waveforms", ms_before=p.ms_before, ms_after=p.ms_after, **job)
        analyzer.compute("templates")
        analyzer.compute("noise_levels", **job)
        analyzer.compute("spike_amplitudes", **job)
        analyzer.compute("spike_locations", method="center_of_mass", **job)
        analyzer.compute("unit_locations", method="monopolar_triangulation")
        analyzer.compute("template_metrics", include_multi_channel_metrics=True)
        analyzer.compute("correlograms", window_ms=50.0, bin_ms=1.0)
        if p.pca_metrics:
            analyzer.compute("principal_components", n_components=5, mode="by_channel_local", **job)

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
