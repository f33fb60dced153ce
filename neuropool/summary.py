"""What a scientist wants to see after a run: units, QC, ground truth, brain positions, timings.

:func:`collect` gathers the facts from a run report and its committed outputs into plain data (so
tests can check them); :func:`render` turns them into text.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuropool.graphs.runner import RunReport
from neuropool.io import urls


def collect(report: RunReport, session: Any = None) -> dict[str, Any]:
    """Gather per-probe unit counts, QC, CCF positions, ground-truth recovery and timings."""
    asset = report.asset
    out: dict[str, Any] = {"asset": asset.url, "ok": report.ok, "wall_s": round(report.wall_s, 1),
                           "tasks": [], "probes": {}}
    for nid, res in report.results.items():
        out["tasks"].append({"node": nid, "state": res.state,
                             "wall_s": None if res.wall_s is None else round(res.wall_s, 1),
                             "error": res.error})
    commits = asset.commits()
    probes = sorted({nid.split("[")[1].rstrip("]") for nid in report.results})
    for probe in probes:
        p: dict[str, Any] = {"outputs": {}}
        for nid, rec in commits.items():
            if nid.endswith(f"[{probe}]"):
                p["outputs"].update(rec.get("outputs", {}))
        qc = commits.get(f"qc[{probe}]")
        if qc:
            p["n_units"] = qc["summary"]["n_units"]
            p["n_passing"] = qc["summary"]["n_passing"]
            p["thresholds"] = qc["summary"]["thresholds"]
            p["ibl_labels"] = qc["summary"].get("units_by_ibl_label")
        loc = commits.get(f"localize[{probe}]")
        if loc and qc:
            p["units"] = _units_table(asset.dataset_url("units.metrics", probe),
                                      asset.dataset_url("units.locations", probe))
            p["regions"] = loc["summary"].get("regions")
            p["trajectory_note"] = loc["summary"].get("note")
        sort = commits.get(f"sort[{probe}]")
        if sort and session is not None:
            truth = session.probe_info(probe).get("ground_truth")
            if truth:
                p["ground_truth"] = ground_truth_match(
                    asset.dataset_url("ephys.sorting", probe), urls.join(session.url, truth),
                    asset.dataset_url("units.locations", probe) if loc else None)
        out["probes"][probe] = p
    return out


def _units_table(qc_url: str, loc_url: str) -> list[dict[str, Any]]:
    metrics = pd.read_parquet(urls.join(qc_url, "metrics.pqt"))
    units = pd.read_parquet(urls.join(loc_url, "units.pqt"))
    table = units.merge(metrics[["unit_id", "passes_qc", "firing_rate", "snr"]], on="unit_id")
    return table.to_dict(orient="records")


def ground_truth_match(sorting_url: str, truth_url: str, locations_url: str | None,
                       min_accuracy: float = 0.8) -> dict[str, Any]:
    """Compare a sorting with the true units saved beside a demo session.

    Returns the number of true units, how many were recovered with at least ``min_accuracy``,
    the median accuracy, and, when unit locations exist, the median distance in µm between each
    recovered unit's estimated position and its true position on the probe.
    """
    from spikeinterface.comparison import compare_sorter_to_ground_truth
    from spikeinterface.core import load as si_load

    from neuropool.tasks._scratch import fetch

    sorting_dir, tmp_sorting = fetch(sorting_url)
    truth_dir, tmp_truth = fetch(truth_url)
    try:
        return _compare(si_load(str(sorting_dir / "sorting")), si_load(str(truth_dir / "sorting")),
                        truth_dir, locations_url, min_accuracy, compare_sorter_to_ground_truth)
    finally:
        for path, temporary in ((sorting_dir, tmp_sorting), (truth_dir, tmp_truth)):
            if temporary:
                shutil.rmtree(path, ignore_errors=True)


def _compare(found: Any, truth: Any, truth_dir: Path, locations_url: str | None,
             min_accuracy: float, compare: Any) -> dict[str, Any]:
    cmp = compare(truth, found, exhaustive_gt=True)
    perf = cmp.get_performance()
    accuracy = perf["accuracy"].astype(float)
    recovered = [str(u) for u in accuracy.index[accuracy >= min_accuracy]]
    result: dict[str, Any] = {
        "n_true": len(truth.unit_ids),
        "n_recovered": len(recovered),
        "min_accuracy": min_accuracy,
        "median_accuracy": round(float(np.median(accuracy)), 3),
    }
    if locations_url is not None and recovered:
        true_pos = pd.read_parquet(truth_dir / "units.pqt").set_index("unit_id")
        est = pd.read_parquet(urls.join(locations_url, "units.pqt")).set_index("unit_id")
        best = {str(k): str(v) for k, v in cmp.best_match_12.items()}
        errors = [
            float(np.hypot(*(true_pos.loc[gt, ["x", "y"]].to_numpy(float)
                             - est.loc[best[gt], ["x", "y"]].to_numpy(float))))
            for gt in recovered
        ]
        result["median_location_error_um"] = round(float(np.median(errors)), 1)
    return result


def render(summary: dict[str, Any], max_units: int = 12) -> str:
    """The summary as text for the terminal."""
    lines = [f"Derived asset: {summary['asset']}", "", "Tasks (wall time):"]
    for t in summary["tasks"]:
        wall = "" if t["wall_s"] is None else f"{t['wall_s']:8.1f} s"
        lines.append(f"  {t['node']:<22} {t['state']:<8} {wall}")
        if t["error"]:
            lines.append(f"      {t['error'].splitlines()[0][:300]}")
    lines.append(f"  {'total':<22} {'':<8} {summary['wall_s']:8.1f} s")
    for probe, p in summary["probes"].items():
        lines += ["", f"{probe}:"]
        if "n_units" in p:
            crit = ", ".join(f"{k} {v}" for k, v in p["thresholds"].items())
            lines.append(f"  units found: {p['n_units']}; passing QC: {p['n_passing']} ({crit})")
            if p.get("ibl_labels"):
                by = ", ".join(f"{k}: {v}" for k, v in p["ibl_labels"].items())
                lines.append(f"  IBL label (slidingRP, noise cutoff, amplitude > 50 µV): {by}")
        gt = p.get("ground_truth")
        if gt:
            line = (f"  ground truth: {gt['n_recovered']} of {gt['n_true']} true units recovered "
                    f"(accuracy >= {gt['min_accuracy']}), median accuracy {gt['median_accuracy']}")
            if "median_location_error_um" in gt:
                line += f", median position error {gt['median_location_error_um']} µm"
            lines.append(line)
        units = [u for u in p.get("units", []) if u["passes_qc"]]
        if units:
            lines.append("  units passing QC, CCF position (µm from bregma):")
            lines.append(f"    {'unit':>6} {'depth':>7} {'ML':>8} {'AP':>8} {'DV':>8} {'rate Hz':>8}")
            for u in sorted(units, key=lambda u: u["y"])[:max_units]:
                lines.append(f"    {u['unit_id']:>6} {u['y']:7.0f} {u['ml']:8.0f} {u['ap']:8.0f} "
                             f"{u['dv']:8.0f} {u['firing_rate']:8.1f}")
            if len(units) > max_units:
                lines.append(f"    ... and {len(units) - max_units} more (clusters.mlapdv.npy)")
        if p.get("trajectory_note"):
            lines.append(f"  note: {p['trajectory_note']}")
        if p.get("regions"):
            lines.append(f"  brain regions: {p['regions']}")
        if p["outputs"]:
            lines.append("  outputs:")
            for name, url in sorted(p["outputs"].items()):
                lines.append(f"    {name:<20} {url}")
    return "\n".join(lines)
