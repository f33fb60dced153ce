"""Spike sorters on generated recordings: accuracy against ground truth, QC, localisation, time.

For each seed, :func:`neuropool.demo.make_demo_session` writes a Neuropixels 1.0 session with
known true units (spike trains and positions under ``ground_truth/probe00``). For each sorter,
neuropool's own graph runs on it as a user runs it (``neuropool.connect()`` on a Dask
LocalCluster, ``client.submit(session, config={"sort": {"sorter": ...}}, until="localize")``,
a fresh derived asset per sorter: decompress -> preprocess -> sort -> qc -> localize), and the
committed outputs are compared with the truth:

- sorting (``probe00/sorting/sorting``) vs the true spike trains with SpikeInterface's
  ``compare_sorter_to_ground_truth`` (exhaustive ground truth): median accuracy, precision and
  recall over the true units; units well detected (accuracy >= 0.8, SpikeInterface's default);
  false positive units (sorted units matching no true unit), redundant and overmerged units;
- QC (``probe00/qc/metrics.pqt``): of the well-detected units, how many pass QC, and of the
  false positive units, how many pass it: ``passes_qc`` (AIND thresholds) and, where the table
  has it, ``ibl_label == 1`` (IBL's label; "n/a" otherwise);
- localisation (``probe00/localize/units.pqt``) of each well-detected unit vs its true position:
  median and 90th-percentile error in µm, in the probe plane (x, y) and along depth (y);
- wall time: the sort node's (``processing.json``), the sorter's own (``sorter.json``) and the
  whole graph's.

A sorter that is not installed, or that needs a GPU no worker has (kilosort4), is listed as not
run, with the reason; a sorter that fails is listed with its error.

With several seeds, rows "all" pool them (counts and times added, per-unit values together).
``--render FILE.json`` prints the tables of a results file again (also a partial one: the file is
rewritten after every sorter).

Usage: ``python benchmarks/bench_sorters.py [--duration 60] [--units 40] [--noise 6] [--seeds 0 1]
[--sorters spykingcircus2 tridesclous2 mountainsort5 kilosort4] [--workers 2] [--no-compress]
[--out FILE.json] [--keep] [--render FILE.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Sorters compared by default: the CPU ones neuropool supports, and kilosort4 when it can run.
DEFAULT_SORTERS = ("spykingcircus2", "tridesclous2", "mountainsort5", "kilosort4")
#: SpikeInterface's default agreement score for "well detected".
WELL_DETECTED = 0.8
PROBE = "probe00"
SORT_NODE = f"sort[{PROBE}]"


def why_not_run(sorter: str, worker_gpus: float) -> str | None:
    """The reason ``sorter`` cannot run here, or None when it can.

    Parameters
    ----------
    sorter : str
        SpikeInterface sorter name.
    worker_gpus : float
        GPUs advertised by the pool's workers, all together.
    """
    from spikeinterface.sorters import available_sorters, installed_sorters

    from neuropool.tasks.sort import GPU_SORTERS

    if sorter not in available_sorters():
        return f"unknown to SpikeInterface ({', '.join(available_sorters())})"
    if sorter not in installed_sorters():
        if sorter == "kilosort4":
            missing = [m for m in ("torch", "kilosort") if importlib.util.find_spec(m) is None]
            return f"not installed (missing Python packages: {', '.join(missing) or 'none'})"
        return "not installed"
    if sorter in GPU_SORTERS and worker_gpus < 1:
        return "needs a GPU: no worker of the pool advertises one"
    return None


def run_sorter_graph(client: Any, session: Path, sorter: str, out_root: Path) -> dict[str, Any]:
    """Run the graph up to ``localize`` with ``sorter``; states, errors and timings.

    Parameters
    ----------
    client : neuropool.client.Client
        Where the graph runs.
    session : Path
        The generated session.
    sorter : str
        Value of ``sort.sorter``.
    out_root : Path
        Folder for the derived asset (a fresh one).
    """
    t0 = time.perf_counter()
    run = client.submit(str(session), out=str(out_root), new=True, until="localize",
                        config={"sort": {"sorter": sorter}})
    run.wait()
    wall = time.perf_counter() - t0
    report = run.report
    out: dict[str, Any] = {"asset": run.asset.url, "graph_wall_s": round(wall, 1)}
    if report is None:  # the runner itself raised
        try:
            run.result()
        except BaseException as e:  # noqa: BLE001 - recorded, not hidden
            out.update(status="failed", error=f"{type(e).__name__}: {e}")
        return out
    out["states"] = {nid: r.state for nid, r in report.results.items()}
    bad = {nid: r for nid, r in report.results.items() if r.state not in ("done", "cached")}
    failed = [nid for nid, r in bad.items() if r.state == "failed"]
    if bad:
        first = failed[0] if failed else next(iter(bad))
        res = report.results[first]
        out.update(status="failed", failed_node=first, error=res.error or res.state,
                   traceback=getattr(res, "traceback", None))
    else:
        out["status"] = "ok"
    processes = run.asset.read_processing()["processing_pipeline"]["data_processes"]
    out["nodes_wall_s"] = {p["node"]: p.get("wall_s") for p in processes}
    out["sort_node_wall_s"] = out["nodes_wall_s"].get(SORT_NODE)
    return out


def _ids(values: Any) -> list[str]:
    return [str(v) for v in values]


def score(asset_url: str, session: Path) -> dict[str, Any]:
    """Compare the committed outputs of a run with the session's ground truth.

    Parameters
    ----------
    asset_url : str
        The derived asset (local folder).
    session : Path
        The generated session, with ``ground_truth/probe00``.

    Returns
    -------
    dict
        Counts, per-unit values (accuracy, precision, recall, localisation errors) and QC.
    """
    from spikeinterface.comparison import compare_sorter_to_ground_truth
    from spikeinterface.core import load as si_load

    asset = Path(asset_url) / PROBE
    truth_dir = session / json.loads((session / "session.json").read_text())["probes"][PROBE]["ground_truth"]
    truth = si_load(str(truth_dir / "sorting"))
    found = si_load(str(asset / "sorting" / "sorting"))
    cmp = compare_sorter_to_ground_truth(truth, found, exhaustive_gt=True,
                                         well_detected_score=WELL_DETECTED)
    perf = cmp.get_performance(method="by_unit").astype(float)
    well = _ids(cmp.get_well_detected_units(WELL_DETECTED))  # sorted units, matched >= 0.8
    to_true = {str(k): str(v) for k, v in cmp.hungarian_match_21.items()}
    false_units = _ids(cmp.get_false_positive_units())
    out: dict[str, Any] = {
        "n_true": len(truth.unit_ids),
        "n_found": len(found.unit_ids),
        "accuracy": perf["accuracy"].round(4).tolist(),
        "precision": perf["precision"].round(4).tolist(),
        "recall": perf["recall"].round(4).tolist(),
        "n_well_detected": len(well),
        "n_false_positive": len(false_units),
        "n_redundant": len(cmp.get_redundant_units()),
        "n_overmerged": len(cmp.get_overmerged_units()),
        "sorter_info": json.loads((asset / "sorting" / "sorter.json").read_text()),
    }
    metrics = pd.read_parquet(asset / "qc" / "metrics.pqt")
    metrics["unit_id"] = metrics["unit_id"].astype(str)
    metrics = metrics.set_index("unit_id")
    out["n_passing_aind"] = int(metrics["passes_qc"].sum())
    out["qc"] = {
        "aind": qc_counts(metrics["passes_qc"].astype(bool), well, false_units),
        "ibl": (qc_counts(metrics["ibl_label"] == 1, well, false_units)
                if "ibl_label" in metrics.columns else None),
    }
    criteria = [c for c in metrics.columns if c.startswith("ibl_") and c.endswith("_pass")]
    out["ibl_criteria"] = {c: qc_counts(metrics[c].astype(bool), well, false_units) for c in criteria}
    true_pos = pd.read_parquet(truth_dir / "units.pqt")
    true_pos["unit_id"] = true_pos["unit_id"].astype(str)
    est = pd.read_parquet(asset / "localize" / "units.pqt")
    est["unit_id"] = est["unit_id"].astype(str)
    true_xy = true_pos.set_index("unit_id").loc[[to_true[u] for u in well], ["x", "y"]].to_numpy(float)
    est_xy = est.set_index("unit_id").loc[well, ["x", "y"]].to_numpy(float)
    out["loc_error_2d_um"] = np.round(np.hypot(*(est_xy - true_xy).T), 2).tolist()
    out["loc_error_depth_um"] = np.round(np.abs(est_xy[:, 1] - true_xy[:, 1]), 2).tolist()
    return out


def qc_counts(passes: pd.Series, well: list[str], false_units: list[str]) -> dict[str, int]:
    """How many well-detected and false positive units pass a QC label.

    Parameters
    ----------
    passes : pandas.Series
        Boolean, indexed by sorted unit id (str).
    well, false_units : list of str
        Sorted unit ids of the well-detected and of the false positive units.
    """
    def n_pass(ids: list[str]) -> int:
        return int(passes.reindex(ids).fillna(False).astype(bool).sum())

    return {"well_pass": n_pass(well), "well_total": len(well),
            "false_pass": n_pass(false_units), "false_total": len(false_units)}


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _p90(values: list[float]) -> float | None:
    return float(np.percentile(values, 90)) if values else None


def combine(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for several seeds of a sorter: counts added, per-unit values pooled."""
    ok = [r for r in rows if r["status"] == "ok"]
    out: dict[str, Any] = {"sorter": rows[0]["sorter"], "seed": "all",
                           "status": "ok" if len(ok) == len(rows) else
                           f"{len(ok)} of {len(rows)} seeds ok"}
    if not ok:
        return out
    for key in ("n_true", "n_found", "n_well_detected", "n_false_positive", "n_redundant",
                "n_overmerged", "n_passing_aind"):
        out[key] = sum(r[key] for r in ok)
    for key in ("accuracy", "precision", "recall", "loc_error_2d_um", "loc_error_depth_um"):
        out[key] = [v for r in ok for v in r[key]]
    out["qc"] = {}
    for label in ("aind", "ibl"):
        parts = [r["qc"][label] for r in ok]
        out["qc"][label] = (None if any(p is None for p in parts)
                            else {k: sum(p[k] for p in parts) for k in parts[0]})
    names = set.intersection(*(set(r.get("ibl_criteria") or {}) for r in ok))  # in every row
    out["ibl_criteria"] = {c: {k: sum(r["ibl_criteria"][c][k] for r in ok)
                               for k in ("well_pass", "well_total", "false_pass", "false_total")}
                           for c in sorted(names)}
    for key in ("sort_node_wall_s", "graph_wall_s"):
        out[key] = round(sum(r[key] for r in ok), 1)
    own = [r["sorter_info"].get("wall_s") for r in ok]
    out["sorter_wall_s"] = None if None in own else round(sum(own), 1)
    return out


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, fmt)


def _mm(values: list[float]) -> str:
    """Median and (mean) of per-unit values, 3 decimals."""
    if not values:
        return "n/a"
    return f"{np.median(values):.3f} ({np.mean(values):.3f})"


def _qc_cell(qc: dict[str, int] | None, which: str) -> str:
    if qc is None:
        return "n/a"
    return f"{qc[which + '_pass']}/{qc[which + '_total']}"


def render(rows: list[dict[str, Any]]) -> str:
    """The results as two markdown tables: sorting accuracy and time; QC and localisation."""
    head1 = ("| seed | sorter | status | units found | well detected (accuracy >= 0.8) "
             "| accuracy: median (mean) | precision: median (mean) | recall: median (mean) "
             "| false positive | redundant | overmerged "
             "| sort node wall (sorter's own) | graph wall |")
    head2 = ("| seed | sorter | well detected passing AIND QC | false passing AIND QC "
             "| well detected passing IBL (label 1) | false passing IBL (label 1) "
             "| position error 2D: median / p90 | depth error: median / p90 |")
    lines1 = [head1, "|" + "---|" * head1.count(" | ") + "---|"]
    lines2 = [head2, "|" + "---|" * head2.count(" | ") + "---|"]
    for r in rows:
        lead = f"| {r['seed']} | {r['sorter']} |"
        if "n_true" not in r:
            reason = r.get("reason") or r.get("error") or r["status"]
            status = f"{r['status']}: {reason.splitlines()[0][:200]}" if reason != r["status"] else reason
            lines1.append(f"{lead} {status.replace('|', '/')} |" + " |" * 10)
            lines2.append(f"{lead}" + " |" * 6)
            continue
        own = r.get("sorter_wall_s", r.get("sorter_info", {}).get("wall_s"))
        lines1.append(
            f"{lead} {r['status']} | {r['n_found']} | {r['n_well_detected']} of {r['n_true']} "
            f"| {_mm(r['accuracy'])} | {_mm(r['precision'])} | {_mm(r['recall'])} "
            f"| {r['n_false_positive']} | {r['n_redundant']} "
            f"| {r['n_overmerged']} | {_num(r['sort_node_wall_s'], '.0f')} s ({_num(own, '.0f')} s) "
            f"| {_num(r['graph_wall_s'], '.0f')} s |")
        aind, ibl = r["qc"]["aind"], r["qc"]["ibl"]
        e2, ed = r["loc_error_2d_um"], r["loc_error_depth_um"]
        lines2.append(
            f"{lead} {_qc_cell(aind, 'well')} | {_qc_cell(aind, 'false')} | {_qc_cell(ibl, 'well')} "
            f"| {_qc_cell(ibl, 'false')} | {_num(_median(e2), '.1f')} / {_num(_p90(e2), '.1f')} µm "
            f"| {_num(_median(ed), '.1f')} / {_num(_p90(ed), '.1f')} µm |")
    text = "\n".join(lines1) + "\n\n" + "\n".join(lines2)
    criteria = list(dict.fromkeys(c for r in rows for c in r.get("ibl_criteria") or {}))
    if criteria:  # which of IBL's tests the units pass: well detected / false positive
        head3 = "| seed | sorter | " + " | ".join(f"{c}: well detected / false" for c in criteria) + " |"
        lines3 = [head3, "|" + "---|" * (len(criteria) + 2)]
        for r in rows:
            if r.get("ibl_criteria"):
                cells = [f"{_qc_cell(r['ibl_criteria'].get(c), 'well')} / "
                         f"{_qc_cell(r['ibl_criteria'].get(c), 'false')}" for c in criteria]
                lines3.append(f"| {r['seed']} | {r['sorter']} | " + " | ".join(cells) + " |")
        text += "\n\n" + "\n".join(lines3)
    return text


def machine() -> dict[str, Any]:
    """What ran the benchmark: cores, memory, CPU model, Python, versions of the sorters."""
    import spikeinterface
    from spikeinterface.sorters import installed_sorters, sorter_dict

    import neuropool

    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    code = Path(neuropool.__file__).parent
    git = subprocess.run(["git", "-C", str(code), "describe", "--always", "--dirty"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return {"cores": os.cpu_count(), "memory_gib": round(mem, 1), "cpu": cpu,
            "neuropool": f"{neuropool.__version__} from {code} (git: {git or 'not a checkout'})",
            "python": platform.python_version(), "spikeinterface": spikeinterface.__version__,
            "sorters": {s: str(sorter_dict[s].get_sorter_version()) for s in installed_sorters()}}


def main() -> None:
    """Parse the arguments, run every sorter on every seed, print the tables, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of each recording")
    ap.add_argument("--units", type=int, default=40, help="true units per recording")
    ap.add_argument("--noise", type=float, default=6.0, help="background noise, µV rms (demo: 6)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one recording per seed")
    ap.add_argument("--sorters", nargs="+", default=list(DEFAULT_SORTERS))
    ap.add_argument("--workers", type=int, default=2, help="workers of the LocalCluster")
    ap.add_argument("--out", default="bench_sorters.json", help="JSON file for the results")
    ap.add_argument("--workdir", default=None, help="where sessions and assets go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the sessions and derived assets")
    ap.add_argument("--no-compress", action="store_true",
                    help="leave the sessions as SpikeGLX .bin (skips ~1 min of mtscomp per 10 s)")
    ap.add_argument("--render", metavar="FILE.json", default=None,
                    help="only print the tables of a results file (also a partial one)")
    args = ap.parse_args()
    if args.render:
        print_results(json.loads(Path(args.render).read_text()))
        return

    import neuropool
    from neuropool.demo import make_demo_session

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-sorters-"))
    work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"command": "python benchmarks/bench_sorters.py " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in (("duration", args.duration), ("units", args.units), ("noise", args.noise),
                     ("seeds", args.seeds),
                     ("sorters", args.sorters), ("workers", args.workers)))
        + (" --no-compress" if args.no_compress else ""),
        "date": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
        "load_average_start": os.getloadavg(), "rows": []}
    rows: list[dict[str, Any]] = doc["rows"]
    try:
        with neuropool.connect(n_workers=args.workers, threads_per_worker=1) as client:
            dask_client = getattr(client.pool, "client", None)
            if dask_client is not None:  # a running pool's imports, paid once
                dask_client.run(importlib.import_module, "neuropool.graphs.runner")
            gpus = sum(w.get("GPU", 0) for w in client.pool.worker_resources())
            for seed in args.seeds:
                t0 = time.perf_counter()
                session = make_demo_session(work / f"raw{seed}", duration=args.duration,
                                            n_units=args.units, seed=seed,
                                            noise_uv=args.noise, compress=not args.no_compress)
                print(f"seed {seed}: {args.duration:g} s session with {args.units} true units "
                      f"written in {time.perf_counter() - t0:.0f} s", flush=True)
                for sorter in args.sorters:
                    row: dict[str, Any] = {"seed": seed, "sorter": sorter}
                    reason = why_not_run(sorter, gpus)
                    if reason is not None:
                        row.update(status="not run", reason=reason)
                    else:
                        out_root = work / f"derived{seed}_{sorter}"
                        try:
                            row.update(run_sorter_graph(client, session, sorter, out_root))
                        except Exception as e:  # noqa: BLE001 - refused at submission: a result too
                            row.update(status="failed", error=f"{type(e).__name__}: {e}")
                        if row["status"] == "ok":
                            try:
                                row.update(score(row["asset"], session))
                            except Exception as e:  # noqa: BLE001 - a scoring bug is a result too
                                row.update(status="failed", error=f"scoring: {type(e).__name__}: {e}")
                        if not args.keep:
                            shutil.rmtree(out_root, ignore_errors=True)
                    rows.append(row)
                    msg = row.get("reason") or row.get("error") or ""
                    wall = f" (graph {row['graph_wall_s']:.0f} s)" if "graph_wall_s" in row else ""
                    print(f"  {sorter}: {row['status']}{wall} {msg.splitlines()[0][:300] if msg else ''}",
                          flush=True)
                    Path(args.out).write_text(json.dumps(doc, indent=1, default=str))
                if not args.keep:
                    shutil.rmtree(work / f"raw{seed}", ignore_errors=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    doc["load_average_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(doc, indent=1, default=str))
    print()
    print_results(doc)
    print(f"\nJSON: {args.out}")


def print_results(doc: dict[str, Any]) -> None:
    """Print the command, the machine and the tables of a results document.

    With several seeds, a row per sorter pools them (counts added, per-unit values together).
    """
    rows = doc["rows"]
    combined = []
    if len({r["seed"] for r in rows}) > 1:
        for sorter in dict.fromkeys(r["sorter"] for r in rows):
            mine = [r for r in rows if r["sorter"] == sorter]
            if any("n_true" in r for r in mine):
                combined.append(combine(mine))
    end = doc.get("load_average_end")
    print(f"`{doc['command']}` ({doc['date'][:10]}; {doc['machine']['cores']} cores, "
          f"{doc['machine']['memory_gib']} GiB; load average at start "
          f"{doc['load_average_start'][0]:.1f}, at end {'n/a' if end is None else f'{end[0]:.1f}'})")
    print()
    print(render(rows + combined))


if __name__ == "__main__":
    main()
