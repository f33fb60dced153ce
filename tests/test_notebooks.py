"""The notebooks in ``notebooks/`` run top to bottom, as a scientist would run them.

Each notebook is executed in a fresh ``python3`` Jupyter kernel (nbclient) whose working folder is
a temporary one, so nothing is written into the repository; the kernel imports this checkout. The
notebooks run with their own parameters (small sessions): nothing is overridden. Every cell must
run without error, every cell that draws a figure must leave a PNG, and a few outputs are read
back: the quickstart's summary, the custom task's record in ``processing.json``, the lab pool's
failure and resumed retry. The notebook 03 starts ``neuropool scheduler`` and ``worker``
processes; the test checks that its last cell stopped them (and stops any it left, by pid).

The executions are slow (each sorts real, generated data): ``pytest -m slow``. One fast test
checks that the notebooks are committed without outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the test extra (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the test extra (nbclient)")
pytest.importorskip("ipykernel", reason="the notebook tests need the test extra (ipykernel)")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01-quickstart.ipynb", "02-your-own-task.ipynb", "03-lab-pool.ipynb")
#: Seconds one cell may take (a cell that runs a whole graph included).
CELL_TIMEOUT = 600
#: Seconds each notebook took, reported at the end of the module.
TIMES: dict[str, float] = {}


def execute(name: str, workdir: Path, nb: Any = None) -> Any:
    """Run notebook ``name`` in a fresh kernel working in ``workdir``; return it with its outputs.

    Parameters
    ----------
    name : str
        File name in ``notebooks/``.
    workdir : Path
        The kernel's working folder (where the notebook writes its sessions and assets).
    nb : nbformat.NotebookNode, optional
        The notebook as read from ``name``, to execute in place (its outputs are then there
        also when a cell fails); by default it is read here.

    Returns
    -------
    nbformat.NotebookNode
        The notebook with its outputs. A cell that raises fails the test with nbclient's
        ``CellExecutionError``, which quotes the cell and its traceback.
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4) if nb is None else nb
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    t0 = time.perf_counter()
    try:
        client.execute(env=env)
    finally:
        TIMES[name] = time.perf_counter() - t0
        print(f"{name}: {TIMES[name]:.0f} s")
    return nb


def code_cell(nb: Any, snippet: str) -> Any:
    """The one code cell whose source contains ``snippet``."""
    found = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    assert len(found) == 1, f"{len(found)} code cells contain {snippet!r}"
    return found[0]


def text(cell: Any, streams: tuple[str, ...] = ("stdout",)) -> str:
    """What a cell printed on ``streams``, and the text of its result (not of progress bars)."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            if out["name"] in streams:
                parts.append(out["text"])
        elif out["output_type"] == "execute_result":
            parts.append(out.get("data", {}).get("text/plain", "") + "\n")
    return "".join(parts)


def started_pids(nb: Any) -> list[int]:
    """The process ids notebook 03 printed for the services it started."""
    return [int(pid) for cell in nb.cells if cell.cell_type == "code"
            for pid in re.findall(r"^started: .* \(pid (\d+)\)$", text(cell), flags=re.M)]


def running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_group(pid: int) -> None:
    """SIGKILL the process group of a service notebook 03 started (its own session: pgid = pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Any:
    return execute("01-quickstart.ipynb", tmp_path_factory.mktemp("quickstart"))


@pytest.fixture(scope="module")
def own_task(tmp_path_factory) -> Any:
    return execute("02-your-own-task.ipynb", tmp_path_factory.mktemp("own-task"))


@pytest.fixture(scope="module")
def lab_pool(tmp_path_factory) -> Any:
    workdir = tmp_path_factory.mktemp("lab-pool")
    nb = nbformat.read(NOTEBOOKS / "03-lab-pool.ipynb", as_version=4)
    try:
        execute("03-lab-pool.ipynb", workdir, nb)
    except BaseException:  # stop what it started, then fail as it did
        for pid in started_pids(nb):
            kill_group(pid)
        raise
    leaked = [pid for pid in started_pids(nb) if running(pid)]
    for pid in started_pids(nb):
        kill_group(pid)
    assert not leaked, f"notebook 03 left its scheduler or workers running: pids {leaked}"
    return nb


@pytest.fixture(scope="module", autouse=True)
def report_times():
    yield
    if TIMES:
        print("\nnotebook run times: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMES.items()))


# -- committed without outputs (fast) -----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_committed_clean_with_a_parameters_cell_first(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs"
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell holds the parameters"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


# -- executed (slow) ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("fixture", ["quickstart", "own_task", "lab_pool"])
def test_every_plotting_cell_draws_a_figure(fixture, request):
    nb = request.getfixturevalue(fixture)
    plotting = [c for c in nb.cells if c.cell_type == "code" and "plt.show()" in c.source]
    assert plotting
    for cell in plotting:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert images, f"no figure from:\n{cell.source[:300]}\n{text(cell, ('stdout', 'stderr'))[-2000:]}"
    progress = [c for c in nb.cells if c.cell_type == "code" and ".progress()" in c.source]
    assert progress and all(c.outputs for c in progress), "every progress bar shows"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quickstart_finds_units_and_recovers_the_true_ones(quickstart):
    finished = code_cell(quickstart, "report = run.progress()")
    assert re.search(r"^sort\[probe00\] +done", text(finished), flags=re.M), text(finished)
    summary = text(quickstart.cells[-1])
    found = re.search(r"units found: (\d+); passing QC: (\d+)", summary)
    assert found, summary
    n_units, n_passing = map(int, found.groups())
    assert n_units >= 5 and 1 <= n_passing <= n_units, summary
    truth = re.search(r"ground truth: (\d+) of (\d+) true units recovered", summary)
    assert truth and int(truth[2]) == 10 and int(truth[1]) >= 3, summary
    assert "no atlas configured" in summary, summary


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_own_task_is_committed_with_its_record_and_reruns_alone(own_task):
    printed = text(code_cell(own_task, 'records["firing_rates[probe00]"]'))
    record = json.loads(printed[:printed.index("nodes in the dependency graph")])
    assert record["node"] == "firing_rates[probe00]" and record["task"] == "firing_rates"
    assert record["version"] == "1" and record["parameters"] == {"bin_s": 0.5}
    assert record["wall_s"] > 0 and record["host"]
    assert record["summary"]["n_units"] >= 1 and record["summary"]["n_bins"] == 8
    assert "firing_rates[probe00]" in printed.split("nodes in the dependency graph")[1]

    rerun = text(code_cell(own_task, "rerun = pool.submit("))
    states = dict(re.findall(r"^(\S+\[probe00\]) +(\w+)$", rerun, flags=re.M))
    assert states == {"decompress[probe00]": "cached", "preprocess[probe00]": "cached",
                      "sort[probe00]": "cached", "firing_rates[probe00]": "done"}, rerun
    assert "'bin_s': 1.0" in rerun and "'n_bins': 4" in rerun, rerun


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_lab_pool_shows_a_failure_then_a_resumed_retry(lab_pool):
    table = text(code_cell(lab_pool, "states = pd.DataFrame("))
    assert re.search(r"^sort\[probe00\] +done +done +failed$", table, flags=re.M), table

    failure = text(code_cell(lab_pool, "failed.result()"))
    assert failure.startswith("FAILED:") and "sort[probe00]" in failure, failure
    assert "sort.memory_limit_gb" in failure, failure
    assert "recorded in the asset: ['sort[probe00]']" in failure, failure

    retry = text(code_cell(lab_pool, "retry = pool.submit("))
    states = dict(re.findall(r"^ +(\S+\[probe00\]) +(\w+)$", retry, flags=re.M))
    assert states == {"decompress[probe00]": "cached", "preprocess[probe00]": "cached",
                      "sort[probe00]": "done"}, retry
    assert "same asset: True" in retry

    last = text(lab_pool.cells[-1])
    assert len(re.findall(r"^stopped: neuropool ", last, flags=re.M)) == 3, last
    assert len(started_pids(lab_pool)) == 3
