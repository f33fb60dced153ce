"""Run one SpikeInterface sorter in a child process, so that its crash is not the worker's.

A sorter can die in ways Python cannot catch: a segmentation fault in compiled code, or the
kernel's out-of-memory killer. Inside a pool worker either would take the worker down (and Dask
would retry the sort elsewhere, to die again). ``sort`` therefore runs the sorter here, as
``python -m neuropool.tasks.sorter_process JOB.json``, with the child's stdout and stderr going
to the sorter's log file; the parent watches its memory and exit status
(:func:`run_sorter_process`) and turns any failure into an error that quotes the log.

The job file holds the sorter's name and parameters, the pickled recording (a recipe: the store's
URL), the sorter's working folder and the folder to save the sorting into. On success the child
writes ``result.json`` (units found, the sorter's wall time) next to the job file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seconds between two looks at the child's memory and status.
POLL_S = 0.2


@dataclass
class SorterOutcome:
    """How the child process ended.

    Attributes
    ----------
    returncode : int
        The child's exit status (negative: killed by that signal).
    reason : str or None
        Why it failed, in words; None when it succeeded.
    peak_rss_gb : float
        Largest resident memory of the child and its own children seen, GB.
    result : dict
        The child's ``result.json`` (empty when it failed).
    """

    returncode: int
    reason: str | None
    peak_rss_gb: float
    result: dict[str, Any]


def _tree_rss(proc: Any) -> int:
    """Resident bytes of a psutil process and all its descendants (sorters fork workers)."""
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (the sorter's worker processes too)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_sorter_process(job: dict[str, Any], work: Path, log_path: Path,
                       memory_limit_gb: float | None = None) -> SorterOutcome:
    """Run the sorter job in a child process and wait for it.

    Parameters
    ----------
    job : dict
        ``sorter``, ``params``, ``recording`` (a pickle file), ``folder`` (the sorter's working
        folder), ``output`` (where the sorting is saved).
    work : Path
        Folder for the job and result files.
    log_path : Path
        File receiving the child's stdout and stderr (the sorter's own messages).
    memory_limit_gb : float, optional
        Kill the child (and its workers) when their resident memory together exceeds this.

    Returns
    -------
    SorterOutcome
    """
    import psutil

    job_file = work / "job.json"
    job_file.write_text(json.dumps(job, default=str))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "neuropool.tasks.sorter_process", str(job_file)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: one kill stops the sorter's workers
        )
    watched = psutil.Process(proc.pid)
    peak, over = 0, False
    try:
        while proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                peak = max(peak, _tree_rss(watched))
            if memory_limit_gb is not None and peak > memory_limit_gb * 1e9:
                over = True
                _kill_tree(proc)
                proc.wait()
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:  # the task itself was interrupted: leave nothing running
            _kill_tree(proc)
            proc.wait()
    code = proc.returncode
    peak_gb = peak / 1e9
    result_file = work / "result.json"
    if over:
        reason = (f"out of memory: the sorter's processes used {peak_gb:.2f} GB, over the "
                  f"limit of {memory_limit_gb:g} GB (sort.memory_limit_gb), and were stopped")
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        reason = f"the sorter process was killed by signal {name}"
        if -code == signal.SIGKILL:
            reason += (f" (most likely the system's out-of-memory killer; peak memory seen "
                       f"{peak_gb:.2f} GB)")
    elif code != 0:
        reason = f"the sorter process exited with status {code}"
    elif not result_file.exists():
        reason = "the sorter process ended without writing its result"
    else:
        reason = None
    result = json.loads(result_file.read_text()) if reason is None else {}
    return SorterOutcome(code, reason, peak_gb, result)


def _main(job_file: str) -> int:
    """The child: load the recording, run the sorter, save the sorting, write the result."""
    from spikeinterface.core import load
    from spikeinterface.sorters import run_sorter

    job = json.loads(Path(job_file).read_text())
    recording = load(job["recording"])
    t0 = time.perf_counter()
    sorting = run_sorter(job["sorter"], recording, folder=job["folder"], remove_existing_folder=True,
                         verbose=True, raise_error=True, **job["params"])
    wall = time.perf_counter() - t0
    sorting.save(folder=job["output"], format="numpy_folder")
    result = {"n_units": len(sorting.unit_ids), "wall_s": round(wall, 3)}
    (Path(job_file).parent / "result.json").write_text(json.dumps(result))
    print(f"neuropool: {job['sorter']} found {result['n_units']} units in {wall:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
