"""sort: preprocessed store -> spike trains, with any SpikeInterface sorter.

The sorter runs on a local scratch folder (sorters need a local disk), reading the preprocessed
store chunk by chunk through :class:`neuropool.io.sirecording.StoreRecording`; the result is saved
as a SpikeInterface numpy-folder sorting plus the sorter's own log, and published to the output.
kilosort4 declares a GPU, so it only runs on a worker that advertises one (``gpus`` overrides
the declaration either way: 0 to run kilosort4 on CPU, 1 to give any sorter a GPU worker).
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from pydantic import Field, field_validator

from neuropool.errors import ConfigError
from neuropool.io.sirecording import StoreRecording
from neuropool.tasks._scratch import publish, scratch_dir
from neuropool.tasks.base import RUN_ONLY, Params, Resources, Task, TaskContext

#: Sorters that need a CUDA GPU.
GPU_SORTERS = frozenset({"kilosort4", "kilosort3", "kilosort2_5", "kilosort2"})

#: Per-sorter defaults neuropool applies under the user's parameters. spykingcircus2's motion
#: correction (DREDGE) needs torch, which is not a dependency: it is off unless asked for.
SORTER_DEFAULTS: dict[str, dict[str, Any]] = {
    "spykingcircus2": {"apply_motion_correction": False},
}


class SortParams(Params):
    """Parameters of :class:`Sort`."""

    sorter: str = Field("spykingcircus2", description="any SpikeInterface sorter name")
    sorter_params: dict[str, Any] = Field(default_factory=dict, description="passed to the sorter")
    n_jobs: int = Field(-1, description="processes the sorter may use; -1 = all cores",
                        json_schema_extra=RUN_ONLY)
    gpus: int | None = Field(
        None, ge=0, json_schema_extra=RUN_ONLY,
        description="GPUs the sorter needs; null = 1 for GPU sorters (kilosort), 0 otherwise",
    )

    @field_validator("sorter")
    @classmethod
    def _known_sorter(cls, v: str) -> str:
        from spikeinterface.sorters import available_sorters

        if v not in available_sorters():
            raise ValueError(f"unknown sorter {v!r}; SpikeInterface knows: {', '.join(available_sorters())}")
        return v

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError(f"must be -1 (all cores) or a positive number, got {v}")
        return v


class Sort(Task):
    """Spike sorting with a SpikeInterface sorter."""

    name = "sort"
    limit_blas = False  # parallel through n_jobs
    version = "1"
    Params = SortParams
    inputs = ("ephys.preprocessed",)
    outputs = ("ephys.sorting",)

    def resources(self) -> Resources:
        gpus = self.params.gpus
        if gpus is None:
            gpus = 1 if self.params.sorter in GPU_SORTERS else 0
        return Resources(cpus=1, gpus=gpus)

    def sorter_params(self) -> dict[str, Any]:
        from spikeinterface.sorters import get_default_sorter_params

        defaults = get_default_sorter_params(self.params.sorter)
        given = {**SORTER_DEFAULTS.get(self.params.sorter, {}), **self.params.sorter_params}
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ConfigError(
                f"sort.sorter_params: {self.params.sorter} has no parameter(s) {unknown}; "
                f"its parameters are: {', '.join(defaults)}"
            )
        if "job_kwargs" in defaults and "job_kwargs" not in self.params.sorter_params:
            given["job_kwargs"] = {"n_jobs": self.params.n_jobs, "progress_bar": False}
        return given

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        from spikeinterface.core import load as si_load
        from spikeinterface.sorters import run_sorter, sorter_dict

        recording = StoreRecording(ctx.inputs["ephys.preprocessed"], ctx.storage_options)
        if not recording.has_probe():
            raise ConfigError(
                f"{ctx.inputs['ephys.preprocessed']}: the recording has no contact positions (its "
                "format does not record a probe layout, e.g. Open Ephys without a probe); sorters "
                "need them: name a probeinterface JSON file in session.json as "
                f"probes.{ctx.probe}.probe_file and run again"
            )
        params = self.sorter_params()
        work = scratch_dir("sort")
        out = scratch_dir("sorting")
        t0 = time.perf_counter()
        try:
            try:
                sorting = run_sorter(self.params.sorter, recording, folder=str(work / "sorter"),
                                     remove_existing_folder=True, verbose=False, **params)
            except Exception as e:
                log = _read_log(work / "sorter")
                raise RuntimeError(
                    f"{self.params.sorter} failed on {ctx.inputs['ephys.preprocessed']}: {e}"
                    + (f"\n--- sorter log (tail) ---\n{log[-3000:]}" if log else "")
                ) from e
            wall = time.perf_counter() - t0
            sorting.save(folder=str(out / "sorting"), format="numpy_folder")
            log_file = work / "sorter" / "spikeinterface_log.json"
            if log_file.exists():
                shutil.copy(log_file, out / "sorter_log.json")
            (out / "sorter.json").write_text(json.dumps({
                "sorter": self.params.sorter,
                "sorter_version": str(sorter_dict[self.params.sorter].get_sorter_version()),
                "sorter_params": params,
                "wall_s": round(wall, 3),
            }, indent=2, default=str))
            n_units = len(si_load(str(out / "sorting")).unit_ids)
            publish(out, ctx.outputs["ephys.sorting"], ctx.storage_options)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        if n_units == 0:
            raise RuntimeError(f"{self.params.sorter} found no units in {ctx.inputs['ephys.preprocessed']}")
        return {"sorter": self.params.sorter, "n_units": n_units, "sorter_wall_s": round(wall, 3)}


def _read_log(folder: Any) -> str:
    """The error trace a SpikeInterface sorter left in its folder, if any."""
    try:
        log = json.loads((folder / "spikeinterface_log.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(log.get("error_trace") or log.get("log") or "")
