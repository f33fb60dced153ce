"""sort: preprocessed store -> spike trains, with any SpikeInterface sorter.

The sorter runs in a child process (:mod:`neuropool.tasks.sorter_process`) on a local scratch
folder (sorters need a local disk), reading the preprocessed store chunk by chunk through
:class:`neuropool.io.sirecording.StoreRecording`. The output folder (``<probe>/sorting/``) holds:

- ``sorting/``: the spike trains, a SpikeInterface numpy-folder sorting;
- ``sorter.log``: everything the sorter printed (stdout and stderr), plus its own log files
  (``sorter_log.json``: SpikeInterface's record with the error trace; ``sorter_*.log``);
- ``sorter.json``: sorter, version, parameters, units found, wall time, peak memory, error.

A sorter that fails (an exception, a crash, killed for memory, or no units found) fails its node
with an error quoting the end of its log; the log is still published into the asset (the node is
not committed, so nothing downstream trusts it, and the next run redoes the sort).
kilosort4 declares a GPU, so it only runs on a worker that advertises one (``gpus`` overrides
the declaration either way: 0 to run kilosort4 on CPU, 1 to give any sorter a GPU worker).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from neuropool.errors import ConfigError, MissingDependencyError, SortingError
from neuropool.io import urls
from neuropool.io.sirecording import StoreRecording
from neuropool.tasks._scratch import publish, scratch_dir
from neuropool.tasks.base import RUN_ONLY, Params, Resources, Task, TaskContext
from neuropool.tasks.sorter_process import run_sorter_process

#: The sorter's output (stdout and stderr) in the sorting folder.
SORTER_LOG = "sorter.log"

#: Sorters that need a CUDA GPU.
GPU_SORTERS = frozenset({"kilosort4", "kilosort3", "kilosort2_5", "kilosort2"})

#: Per-sorter defaults neuropool applies under the user's parameters. spykingcircus2's motion
#: correction (DREDGE) needs torch, which is not a dependency: it is off unless asked for.
SORTER_DEFAULTS: dict[str, dict[str, Any]] = {
    "spykingcircus2": {"apply_motion_correction": False},
}


class SortParams(Params):
    """Parameters of :class:`Sort`."""

    sorter: str = Field("tridesclous2", description="any SpikeInterface sorter name; default: the "
                        "most accurate CPU sorter in benchmarks/bench_sorters.py")
    sorter_params: dict[str, Any] = Field(default_factory=dict, description="passed to the sorter")
    n_jobs: int = Field(-1, description="processes the sorter may use; -1 = all cores",
                        json_schema_extra=RUN_ONLY)
    gpus: int | None = Field(
        None, ge=0, json_schema_extra=RUN_ONLY,
        description="GPUs the sorter needs; null = 1 for GPU sorters (kilosort), 0 otherwise",
    )
    memory_limit_gb: float | None = Field(
        None, gt=0, json_schema_extra=RUN_ONLY,
        description="stop the sorter (and fail the node) when its processes use more memory; "
                    "null = no limit of ours",
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
    version = "2"
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
        elif "n_jobs" in defaults and "n_jobs" not in self.params.sorter_params:  # mountainsort5
            given["n_jobs"] = self.params.n_jobs if self.params.n_jobs > 0 else (os.cpu_count() or 1)
        return given

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        from spikeinterface.sorters import sorter_dict

        source = ctx.inputs["ephys.preprocessed"]
        output = ctx.outputs["ephys.sorting"]
        recording = StoreRecording(source, ctx.storage_options)
        if not recording.has_probe():
            raise ConfigError(
                f"{source}: the recording has no contact positions (its "
                "format does not record a probe layout, e.g. Open Ephys without a probe); sorters "
                "need them: name a probeinterface JSON file in session.json as "
                f"probes.{ctx.probe}.probe_file and run again"
            )
        sorter_class = sorter_dict[self.params.sorter]
        if not sorter_class.is_installed():
            raise MissingDependencyError(
                f"{ctx.node}: sorter {self.params.sorter} is not installed on this worker "
                f"({socket.gethostname()}); SpikeInterface says: {' '.join(sorter_class.installation_mesg.split())}"
            )
        params = self.sorter_params()
        work = scratch_dir("sort")
        out = scratch_dir("sorting")
        try:
            recording.dump_to_pickle(work / "recording.pkl")
            job = {"sorter": self.params.sorter, "params": params, "recording": str(work / "recording.pkl"),
                   "folder": str(work / "sorter"), "output": str(out / "sorting")}
            outcome = run_sorter_process(job, work, out / SORTER_LOG, self.params.memory_limit_gb)
            record = {
                "sorter": self.params.sorter,
                "sorter_version": str(sorter_class.get_sorter_version()),
                "sorter_params": params,
                "peak_rss_gb": round(outcome.peak_rss_gb, 3),
                **outcome.result,
            }
            reason = outcome.reason
            if reason is None and outcome.result["n_units"] == 0:
                reason = "it found no units"
            _keep_sorter_logs(work / "sorter", out)
            if reason is not None:
                record["error"] = reason
            (out / "sorter.json").write_text(json.dumps(record, indent=2, default=str))
            log_tail = _tail(out / SORTER_LOG)
            publish(out, output, ctx.storage_options)  # the log stays in the asset, uncommitted
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        if reason is not None:
            raise SortingError(
                f"{self.params.sorter} failed on {source}: {reason}. Its log is saved as "
                f"{urls.join(output, SORTER_LOG)}; its last lines:\n{log_tail}"
            )
        return {"sorter": self.params.sorter, "n_units": outcome.result["n_units"],
                "sorter_wall_s": outcome.result["wall_s"], "peak_rss_gb": round(outcome.peak_rss_gb, 3)}


def _keep_sorter_logs(folder: Path, out: Path) -> None:
    """Copy the sorter's own log files (SpikeInterface's JSON log, ``*.log``) into ``out``."""
    if not folder.is_dir():
        return
    for path in folder.rglob("*"):
        if path.is_file() and (path.name == "spikeinterface_log.json" or path.suffix == ".log"):
            shutil.copy(path, out / ("sorter_" + path.name if path.suffix == ".log" else "sorter_log.json"))


def _tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, indented for quoting in an error message."""
    try:
        text = path.read_bytes().decode(errors="replace")  # read_text would turn \r into \n
    except OSError:
        return "    (no log was written)"
    # progress bars redraw with carriage returns: keep each bar's last state only
    kept = [line.split("\r")[-1] for line in text.split("\n")]
    kept = [line[:300] for line in kept if line.strip()][-lines:]
    return "\n".join("    " + line for line in kept) or "    (the log is empty)"
