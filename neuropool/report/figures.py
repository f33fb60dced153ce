"""The report's figures: matplotlib, drawn off-screen (Agg), returned as ``data:image/png`` URIs.

Figures are made with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so
drawing a report changes no global matplotlib state (backend, open figures) of the caller. Each
function takes a section of :func:`neuropool.report.collect.collect`'s output.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Colours of the bad-channel labels (IBL's codes).
LABEL_COLOURS = {"good": "#9aa5b1", "dead": "#222222", "noisy": "#d62728", "outside": "#ff7f0e"}
#: Colours of node states in the timeline.
STATE_COLOURS = {"committed": "#2ca02c", "failed": "#d62728"}
PASS, FAIL = "#2ca02c", "#b0b0b0"
DPI = 100


def new_figure(width: float, height: float) -> Figure:
    """An off-screen figure (Agg canvas) of ``width`` x ``height`` inches."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(values: Any) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return v[np.isfinite(v)]


def _when(iso: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(iso) if iso else None
    except ValueError:
        return None


# -- tasks --------------------------------------------------------------------------------------


def timeline(nodes: list[dict[str, Any]]) -> str | None:
    """A Gantt chart of the committed nodes (start to end) and the failures (when); None if none."""
    rows = [(n, _when(n.get("start")), _when(n.get("end"))) for n in nodes]
    rows = [(n, s, e) for n, s, e in rows if e is not None and (s is not None or n["state"] == "failed")]
    if not rows:
        return None
    t0 = min(s or e for _, s, e in rows)
    tasks = sorted({n["task"] for n, _, _ in rows})
    colours = [f"C{i}" for i in range(10) if i != 3]  # C3 (red) is for failures
    palette = {t: colours[i % len(colours)] for i, t in enumerate(tasks)}
    fig = new_figure(10, 1.2 + 0.32 * len(rows))
    ax = fig.add_subplot()
    for i, (n, s, e) in enumerate(rows):
        end = (e - t0).total_seconds()
        if n["state"] == "failed" or s is None:
            ax.plot([end], [i], marker="X", ms=10, color=STATE_COLOURS["failed"], linestyle="none")
            ax.annotate("failed", (end, i), xytext=(8, -4), textcoords="offset points",
                        color=STATE_COLOURS["failed"], fontsize=8)
            continue
        start = (s - t0).total_seconds()
        # start and end are recorded to the second, the wall time to the millisecond: the bar
        # starts at the start and is as long as the wall time (a sliver at least)
        wall = n.get("wall_s")
        width = max(float(wall) if wall is not None else end - start, 0.002 * max(1.0, end))
        ax.barh(i, width, left=start, height=0.6, color=palette[n["task"]], edgecolor="black",
                linewidth=0.4)
        if wall is not None:
            ax.annotate(f"{wall:.1f} s", (start + width, i), xytext=(4, -4), textcoords="offset points",
                        fontsize=8)
    ax.set_yticks(range(len(rows)), [n["node"] for n, _, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds since {t0.isoformat(sep=' ')}")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.08)
    return to_data_uri(fig)


# -- raw QC -------------------------------------------------------------------------------------


def raw_rms(raw: dict[str, Any], labels: dict[str, Any] | None) -> str:
    """AP and LF RMS per channel against depth (coloured by bad-channel label), and AP RMS over time."""
    y = np.asarray(raw["y"], dtype=float)
    names = (np.array([_label_name(v) for v in labels["labels"]]) if labels
             else np.array(["good"] * len(y)))
    fig = new_figure(11, 6)
    axes = fig.subplots(1, 3, sharey=True, width_ratios=[1, 1, 1.6])
    for ax, key, title in ((axes[0], "spike_rms", "AP RMS (µV)"), (axes[1], "lfp_rms", "LF RMS (µV)")):
        values = np.asarray(raw[key], dtype=float)
        for name, colour in LABEL_COLOURS.items():
            pick = names == name
            if pick.any():
                ax.scatter(values[pick], y[pick], s=6 if name == "good" else 16, color=colour,
                           label=f"{name} ({int(pick.sum())})", zorder=2 if name == "good" else 3)
        if not np.isfinite(values).any():
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center")
        ax.set_xlabel(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("height on the probe (µm)")
    axes[0].legend(fontsize=8, loc="best", title="channel label" if labels else "no labels",
                   title_fontsize=8)
    rms = np.asarray(raw["time_rms"], dtype=float)
    t = np.asarray(raw["timestamps"], dtype=float)
    ax = axes[2]
    if rms.size and t.size:
        order = np.argsort(y, kind="stable")
        finite = _finite(rms)
        hi = float(np.percentile(finite, 98)) if finite.size else 1.0
        half = (t[1] - t[0]) / 2 if t.size > 1 else 1.0
        image = ax.imshow(rms[:, order].T, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=hi,
                          extent=(t[0] - half, t[-1] + half, y[order][0], y[order][-1]),
                          interpolation="nearest")
        fig.colorbar(image, ax=ax, label="AP RMS (µV)")
    ax.set_xlabel("time (s)")
    ax.set_title("AP RMS per window", fontsize=10)
    return to_data_uri(fig)


def _label_name(code: Any) -> str:
    return {0: "good", 1: "dead", 2: "noisy", 3: "outside"}.get(int(code), "good")


def spectra(raw: dict[str, Any]) -> str:
    """AP and LF power spectral density: median over channels with the 10-90 % band, and per
    channel (dB) against depth."""
    y = np.asarray(raw["y"], dtype=float)
    order = np.argsort(y, kind="stable")
    fig = new_figure(11, 7)
    axes = fig.subplots(2, 2, height_ratios=[1, 1.4])
    for col, (band, fkey, pkey, fmax) in enumerate((("AP", "ap_freqs", "ap_power", None),
                                                   ("LF", "lf_freqs", "lf_power", 300.0))):
        freqs = np.asarray(raw[fkey], dtype=float)
        power = np.asarray(raw[pkey], dtype=float)  # (n_freqs, n_channels)
        keep = freqs > 0 if fmax is None else (freqs > 0) & (freqs <= fmax)
        ax = axes[0, col]
        if keep.sum() < 2 or not np.isfinite(power[keep]).any():
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center")
            axes[1, col].set_axis_off()
            continue
        lo, med, hi = np.nanpercentile(power[keep], [10, 50, 90], axis=1)
        ax.fill_between(freqs[keep], lo, hi, color="C0", alpha=0.25, label="10-90 % of channels")
        ax.plot(freqs[keep], med, color="C0", label="median")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel("PSD (µV²/Hz)")
        ax.set_title(f"{band} band", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax = axes[1, col]
        with np.errstate(divide="ignore", invalid="ignore"):
            db = 10 * np.log10(power[keep][:, order])
        finite = _finite(db)
        vmin, vmax = (np.percentile(finite, [2, 98]) if finite.size else (0, 1))
        image = ax.imshow(db.T, aspect="auto", origin="lower", cmap="magma", vmin=vmin, vmax=vmax,
                          extent=(freqs[keep][0], freqs[keep][-1], y[order][0], y[order][-1]),
                          interpolation="nearest")
        fig.colorbar(image, ax=ax, label="dB (µV²/Hz)")
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel("height on the probe (µm)")
    return to_data_uri(fig)


# -- spikes and units ---------------------------------------------------------------------------


def drift_map(drift: dict[str, Any]) -> str:
    """Spike depth against time, coloured by amplitude."""
    fig = new_figure(11, 5.5)
    ax = fig.add_subplot()
    amps = np.asarray(drift["amps_uv"], dtype=float)
    finite = _finite(amps)
    vmin, vmax = (np.percentile(finite, [2, 98]) if finite.size else (0, 1))
    points = ax.scatter(drift["times"], drift["depths"], c=amps, s=2, cmap="plasma_r", vmin=vmin, vmax=vmax,
                        linewidths=0, rasterized=True)
    fig.colorbar(points, ax=ax, label="amplitude (µV, peak to trough)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("depth on the probe (µm, IBL frame)")
    shown = "" if drift["n_shown"] == drift["n_spikes"] else f", {drift['n_shown']:,} shown at random"
    ax.set_title(f"{drift['n_spikes']:,} spikes{shown}", fontsize=10)
    return to_data_uri(fig)


def _metric_panels(units: dict[str, Any]) -> list[tuple[str, list[tuple[str, float]], str]]:
    """(column, [(operator, bound)], source) for each panel: the thresholds, IBL's criteria, and a
    few descriptive metrics."""
    ops = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
    metrics = units["metrics"]
    panels: list[tuple[str, list[tuple[str, float]], str]] = []
    for column, bound in units["thresholds"].items():
        panels.append((column, [(ops[k], float(v)) for k, v in bound.items() if k in ops], "QC threshold"))
    ibl = units.get("ibl") or {}
    for column, key, op in (("ibl_rp_min_contamination_pct", "rp_contamination_pct", "<"),
                            ("ibl_noise_cutoff", "noise_cutoff_max", "<"),
                            ("ibl_amp_median_uv", "min_amplitude_uv", ">")):
        if column in metrics and column not in units["thresholds"]:
            panels.append((column, [(op, float(ibl[key]))] if key in ibl else [], "IBL criterion"))
    for column in ("firing_rate", "snr", "num_spikes"):
        if column in metrics and column not in units["thresholds"]:
            panels.append((column, [], ""))
    return panels


def metric_distributions(units: dict[str, Any]) -> str:
    """A histogram per metric (units passing QC stacked on the others), thresholds drawn."""
    metrics = units["metrics"]
    panels = _metric_panels(units)
    n_cols = 3
    n_rows = -(-len(panels) // n_cols)
    fig = new_figure(11, 2.6 * n_rows + 0.4)
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols)).ravel()
    passes = metrics["passes_qc"].to_numpy(bool) if "passes_qc" in metrics else np.zeros(len(metrics), bool)
    for ax, (column, bounds, source) in zip(axes, panels, strict=False):
        values = metrics[column].to_numpy(float)
        finite = np.isfinite(values)
        if finite.any():
            lo, hi = float(values[finite].min()), float(values[finite].max())
            for _, b in bounds:
                lo, hi = min(lo, b), max(hi, b)
            edges = np.linspace(lo, hi if hi > lo else lo + 1, 21)
            ax.hist([values[finite & passes], values[finite & ~passes]], bins=edges, stacked=True,
                    color=[PASS, FAIL], label=["passing QC", "not passing"])
        else:
            ax.text(0.5, 0.5, "not computed (NaN) for every unit", transform=ax.transAxes,
                    ha="center", fontsize=8)
        for op, b in bounds:
            ax.axvline(b, color="#d62728", linestyle="--", linewidth=1.2)
            ax.annotate(f"{op} {b:g}", (b, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", color="#d62728", fontsize=8)
        n_nan = int((~finite).sum())
        title = "; ".join(t for t in (source, f"{n_nan} unit(s) NaN" if n_nan else "") if t)
        ax.set_title(title, fontsize=8, color="#57606a")
        ax.set_xlabel(column, fontsize=9)
        ax.set_ylabel("units", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    labelled = next((ax for ax in axes if ax.get_legend_handles_labels()[0]), None)
    if labelled is not None:
        labelled.legend(fontsize=7)
    return to_data_uri(fig)


def yield_bars(units: dict[str, Any]) -> str:
    """Units found, passing QC, and per IBL label."""
    fig = new_figure(8, 2.8)
    axes = fig.subplots(1, 2, width_ratios=[1, 1.6])
    counts = [units["n_units"], units["n_passing"] or 0]
    bars = axes[0].bar(["found", "passing QC"], counts, color=["#1f77b4", PASS])
    axes[0].bar_label(bars, fontsize=8)
    axes[0].set_ylabel("units")
    by_label = units.get("by_ibl_label") or {}
    if by_label:
        bars = axes[1].bar(list(by_label), list(by_label.values()),
                           color=["#d62728", "#ff7f0e", "#bcbd22", PASS][: len(by_label)])
        axes[1].bar_label(bars, fontsize=8)
        axes[1].set_xlabel("IBL label (fraction of the 3 criteria met)")
    else:
        axes[1].text(0.5, 0.5, "no IBL labels in metrics.pqt", transform=axes[1].transAxes, ha="center")
    return to_data_uri(fig)


def probe_positions(loc: dict[str, Any]) -> str:
    """Sites and unit positions on the probe; units passing QC in colour."""
    channels, units = loc["channels"], loc["units"]
    fig = new_figure(4.5, 7)
    ax = fig.add_subplot()
    ax.scatter(channels["x"], channels["y"], marker="s", s=10, color="#dddddd", label="sites")
    passes = units["passes_qc"].to_numpy(bool)
    ax.scatter(units["x"][~passes], units["y"][~passes], s=22, facecolors="none", edgecolors="#7f7f7f",
               label=f"not passing ({int((~passes).sum())})")
    ax.scatter(units["x"][passes], units["y"][passes], s=26, color=PASS, edgecolors="black", linewidths=0.4,
               label=f"passing QC ({int(passes.sum())})")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("height on the probe (µm)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    return to_data_uri(fig)


def ccf_positions(loc: dict[str, Any]) -> str:
    """Sites and units in CCF coordinates (µm from bregma), coronal (ML-DV) and sagittal (AP-DV)
    views: the sites coloured by brain region where there are regions, units passing QC filled,
    the others hollow."""
    channels, units = loc["channels"], loc["units"]
    passes = units["passes_qc"].to_numpy(bool)
    fig = new_figure(10, 5.5)
    axes = fig.subplots(1, 2, sharey=True)
    regions = list(dict.fromkeys(channels["acronym"])) if loc["has_regions"] else []
    colours = {r: f"C{i % 10}" for i, r in enumerate(regions)}
    for ax, (h, name) in zip(axes, (("ml", "ML"), ("ap", "AP")), strict=True):
        if regions:
            for r in regions:
                pick = (channels["acronym"] == r).to_numpy()
                ax.scatter(channels[h][pick], channels["dv"][pick], marker="s", s=12, color=colours[r],
                           label=f"sites in {r}", zorder=1)
        else:
            ax.plot(channels[h], channels["dv"], color="#bbbbbb", linewidth=3, label="probe sites", zorder=1)
        ax.scatter(units[h][~passes], units["dv"][~passes], s=22, facecolors="none", edgecolors="#555555",
                   label=f"units not passing ({int((~passes).sum())})", zorder=2)
        ax.scatter(units[h][passes], units["dv"][passes], s=28, color=PASS, edgecolors="black", linewidths=0.5,
                   label=f"units passing QC ({int(passes.sum())})", zorder=3)
        ax.set_xlabel(f"{name} (µm from bregma)")
        ax.grid(alpha=0.3)
        ax.set_aspect("equal", adjustable="datalim")
    axes[0].set_ylabel("DV (µm from bregma)")
    axes[0].set_title("coronal view", fontsize=10)
    axes[1].set_title("sagittal view", fontsize=10)
    axes[1].legend(fontsize=8, loc="best", ncols=1 + len(regions) // 12)
    return to_data_uri(fig)
