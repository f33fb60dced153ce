"""The report page: one self-contained HTML document (inline CSS, figures as ``data:`` URIs).

The page makes no request of its own (no script, stylesheet, font or image from elsewhere) and
needs no JavaScript. Numbers that tools may want to read back carry ids and ``data-``
attributes: ``#pipeline-version``, ``tr[data-node]`` (``data-state``, ``data-wall-s``),
``tr[data-task-node]`` (``data-version``), ``#<probe>-units-found``, ``#<probe>-units-passing``
(``data-value``), ``td[data-ibl-label]`` (``data-probe``, ``data-value``), and
``.missing[data-section]`` for each section whose inputs are missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any

import numpy as np

from neuropool.report import figures

#: Rows of the table of units passing QC (the rest are in the asset's tables).
MAX_UNIT_ROWS = 400

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 1.2em 2em 4em; color: #1b1f24; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; word-break: break-all; }
h2 { border-bottom: 2px solid #d0d7de; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-top: 1.6em; }
.sub { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.when { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.state-failed td { background: #ffebe9; }
tr.state-not-run td, tr.state-not-committed td { color: #57606a; background: #f6f8fa; }
.missing { background: #fff8c5; border-left: 4px solid #d4a72c; padding: 0.5em 0.8em; }
.warning { background: #ffebe9; border-left: 4px solid #cf222e; padding: 0.5em 0.8em; }
.ok { color: #1a7f37; font-weight: 600; }
.bad { color: #cf222e; font-weight: 600; }
pre { background: #f6f8fa; padding: 0.6em; overflow-x: auto; font-size: 0.85em; margin: 0.3em 0; }
figure { margin: 0.8em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 0.9em; }
nav a { margin-right: 1em; }
code { background: #f6f8fa; padding: 0 0.2em; }
details summary { cursor: pointer; color: #0969da; }
"""


def e(value: Any) -> str:
    """``value`` as HTML-escaped text (quotes included, for attributes)."""
    return escape("" if value is None else str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A value for a table cell: numbers rounded, missing ones as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return "—" if not np.isfinite(value) else f"{float(value):.{digits}g}"
    return e(value)


def missing(section: str, what: str, why: str) -> str:
    """The note that replaces a section whose inputs are missing."""
    return (f'<p class="missing" data-section="{e(section)}"><strong>{e(what)} not available.</strong> '
            f"{e(why)}</p>")


def figure(draw: Callable[..., str | None], *args: Any, alt: str, caption: str = "", fig_id: str = "") -> str:
    """``<figure>`` with the image ``draw(*args)`` returns; a note if it cannot be drawn."""
    try:
        uri = draw(*args)
    except Exception as err:  # noqa: BLE001 - a figure that fails must not cost the whole report
        return (f'<p class="warning" data-figure-error="{e(fig_id)}">The figure “{e(alt)}” could not be drawn: '
                f"{e(type(err).__name__)}: {e(str(err).splitlines()[0] if str(err) else '')}</p>")
    if uri is None:
        return ""
    cap = f"<figcaption>{e(caption)}</figcaption>" if caption else ""
    return f'<figure id="{e(fig_id)}"><img src="{uri}" alt="{e(alt)}">{cap}</figure>'


def kv_table(rows: list[tuple[str, Any]], table_id: str = "") -> str:
    """A two-column table of ``(name, value)`` rows, leaving out missing values."""
    body = "".join(f"<tr><th>{e(k)}</th><td>{fmt(v)}</td></tr>" for k, v in rows if v not in (None, "", {}))
    return f'<table id="{e(table_id)}">{body}</table>'


def table(header: list[str], rows: list[list[str]], attrs: str = "") -> str:
    """A table; each row is a list of ready-made HTML pieces (``<tr ...>``, the cells, ``</tr>``)."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(''.join(r) for r in rows)}</tbody></table>"


def _day_time(iso: str | None) -> str | None:
    """``2026-11-22T13:25:09`` -> ``2026-11-22 13:25:09``."""
    return iso.replace("T", " ") if iso else None


def _params(params: dict[str, Any] | None) -> str:
    """A task's parameters: a short summary that opens onto them all (no JavaScript needed)."""
    if not params:
        return "none"
    names = ", ".join(sorted(params))
    return f"<details><summary>{e(names[:120])}{' …' if len(names) > 120 else ''}</summary>{_pre_json(params)}</details>"


def _pre_json(value: Any) -> str:
    return f"<pre>{e(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>"


# -- the page -----------------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    """The report page of ``data`` (:func:`neuropool.report.collect.collect`'s output)."""
    probes = data["probes"]
    nav = "".join(f'<a href="#{e(p)}">{e(p)}</a>' for p in probes)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>QC report: {e(data['asset']['name'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>QC report: {e(data['asset']['name'])}</h1>",
        f'<p class="sub">{e(data["asset"]["url"])}<br>generated {e(data["generated"])} by neuropool '
        f'{e(data["neuropool_version"])}</p>',
        f'<nav><a href="#session">session</a><a href="#tasks">tasks</a>{nav}'
        '<a href="#versions">versions and parameters</a></nav>',
        _session(data),
        _tasks(data),
    ]
    for probe, sections in probes.items():
        parts.append(_probe(probe, sections))
    if not probes:
        parts.append(missing("probes", "Probe results", "no node of this asset names a probe: "
                             "nothing is committed or recorded as failed yet"))
    parts.append(_versions(data))
    parts.append("</body></html>")
    return "\n".join(parts)


def _session(data: dict[str, Any]) -> str:
    s, d = data["session"], data["description"]
    rows = [("subject", s.get("subject")), ("session date", s.get("date")), ("session number", s.get("number")),
            ("session", s.get("name")), ("source", s.get("url")),
            ("asset created", s.get("created")), ("created by", s.get("created_by")),
            ("data level", d.get("data_level")), ("modality", ", ".join(d.get("modality") or [])),
            ("process name", d.get("process_name"))]
    out = ['<section id="session"><h2>Session</h2>', kv_table(rows, "session-table"), "<h3>Probes</h3>"]
    probe_rows = []
    for probe, sections in data["probes"].items():
        m = sections["meta"]
        if "note" in m:
            probe_rows.append([f"<tr><td>{e(probe)}</td>",
                               f'<td colspan="8">{missing(f"{probe}-meta", "Probe metadata", m["note"])}</td></tr>'])
            continue
        sn = m["spikeglx"].get("imDatPrb_sn") or m.get("serial")
        probe_type = m.get("model") or m.get("probe_type")
        if m.get("probe_type") and m.get("model") and m["probe_type"] not in str(m["model"]):
            probe_type = f"{m['model']} ({m['probe_type']})"
        lf = m.get("lf")
        probe_rows.append([
            f'<tr data-probe="{e(probe)}"><td>{e(probe)}</td>', f"<td>{fmt(probe_type)}</td>", f"<td>{fmt(sn)}</td>",
            f'<td class="num" data-value="{e(m.get("n_channels"))}">{fmt(m.get("n_channels"))}'
            f"{' (' + fmt(m.get('n_sync_channels')) + ' sync)' if m.get('n_sync_channels') else ''}</td>",
            f'<td class="num">{fmt(m.get("sampling_frequency"), 6)} Hz</td>',
            f'<td class="num">{fmt(m.get("duration_s"), 6)} s</td>',
            f"<td>{fmt(m.get('format'))}</td>",
            f"<td>{fmt(lf['sampling_frequency'], 6) + ' Hz' if lf else 'none'}</td>",
            f"<td>{fmt(m.get('checksum_verified'))}</td></tr>"])
    if probe_rows:
        out.append(table(["probe", "type", "serial", "channels", "sampling rate", "duration", "format",
                          "LF stream", "checksum verified"], probe_rows, 'id="probes-table"'))
    for probe, sections in data["probes"].items():
        m = sections["meta"]
        extra = [(k, v) for k, v in (m.get("spikeglx") or {}).items()]
        if m.get("trajectory"):
            extra.append(("trajectory (µm, °)", ", ".join(f"{k} {v}" for k, v in m["trajectory"].items())))
        if m.get("source"):
            extra.append(("raw recording", m["source"]))
        if extra:
            out.append(f"<details><summary>{e(probe)}: recording metadata</summary>{kv_table(extra)}</details>")
    out.append("</section>")
    return "\n".join(out)


def _tasks(data: dict[str, Any]) -> str:
    nodes = data["nodes"]
    out = ['<section id="tasks"><h2>Tasks</h2>']
    if not data["pipeline"]["processing_json"]:
        out.append('<p class="missing" data-section="processing-json">This asset has no processing.json yet '
                   "(the runner writes it at a run's first commit): only committed and failed nodes are shown.</p>")
    if not nodes:
        out.append(missing("tasks", "Task timeline", "no node is committed or recorded as failed"))
        out.append("</section>")
        return "\n".join(out)
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n["state"]] = counts.get(n["state"], 0) + 1
    done = [n["wall_s"] for n in nodes if n["wall_s"] is not None]
    out.append(f'<p id="node-counts">{", ".join(f"{v} {e(k)}" for k, v in counts.items())}; '
               f"total wall time of the committed nodes {sum(done):.1f} s.</p>")
    out.append(figure(figures.timeline, nodes, alt="task timeline", fig_id="timeline",
                      caption="Each committed node from its start to its end (wall time noted); "
                              "failures at the time they were recorded."))
    rows = []
    for n in nodes:
        wall = "" if n["wall_s"] is None else f'{float(n["wall_s"]):.3f}'
        detail = n["error"] or n["detail"] or ""
        state_cls = "state-" + n["state"].replace(" ", "-")
        rows.append([
            f'<tr class="{e(state_cls)}" data-node="{e(n["node"])}" data-state="{e(n["state"])}" data-wall-s="{e(wall)}">',
            f"<td>{e(n['node'])}</td>", f"<td>{e(n['state'])}</td>",
            f'<td class="when" data-iso="{e(n["start"])}">{fmt(_day_time(n["start"]))}</td>',
            f'<td class="when" data-iso="{e(n["end"])}">{fmt(_day_time(n["end"]))}</td>',
            f'<td class="num">{e(wall) or "—"}</td>',
            f"<td>{fmt(n['version'])}</td>", f"<td>{fmt(n['host'])}</td>", f"<td>{e(detail[:500])}</td></tr>"])
    out.append(table(["node", "state", "start", "end", "wall time (s)", "version", "host", "error / detail"],
                     rows, 'id="nodes-table"'))
    for note in data["status_notes"]:
        out.append(f'<p class="sub">Note: {e(note)}</p>')
    out.append('<h3 id="failures">Failed nodes</h3>')
    if not data["failures"]:
        out.append('<p class="ok" id="no-failures">No node failed.</p>')
    for f in data["failures"]:
        tb = f.get("traceback") or ""
        out.append(f'<div class="warning" data-failed-node="{e(f["node"])}"><strong>{e(f["node"])}</strong> '
                   f"failed at {fmt(f.get('time'))} on {fmt(f.get('host'))}:<pre>{e(f.get('error'))}</pre>"
                   + (f"<details><summary>traceback</summary><pre>{e(tb)}</pre></details>" if tb else "")
                   + "</div>")
    out.append("</section>")
    return "\n".join(out)


# -- per probe ----------------------------------------------------------------------------------


def _probe(probe: str, s: dict[str, Any]) -> str:
    return "\n".join([f'<section id="{e(probe)}"><h2>{e(probe)}</h2>', _raw_qc(probe, s["raw_qc"], s["labels"]),
                      _drift(probe, s["drift"]), _units(probe, s["units"]),
                      _locations(probe, s["locations"]), "</section>"])


def _raw_qc(probe: str, raw: dict[str, Any], labels: dict[str, Any]) -> str:
    out = [f'<h3 id="{e(probe)}-raw-qc">Raw data QC</h3>']
    has_labels = "note" not in labels
    if "note" in raw:
        out.append(missing(f"{probe}-raw-qc", "Raw QC (RMS, spectra)", raw["note"]))
    else:
        summ = raw["summary"]
        out.append(f"<p>{fmt(summ.get('n_windows'))} windows; median AP RMS {fmt(summ.get('median_spike_rms_uv'))} µV, "
                   f"median LF RMS {fmt(summ.get('median_lfp_rms_uv'))} µV "
                   f"({fmt(summ.get('n_spectral_windows'))} spectral windows).</p>")
        for w in raw["warnings"]:
            out.append(f'<p class="warning">{e(w)}</p>')
        out.append(figure(figures.raw_rms, raw, labels if has_labels else None, alt=f"{probe} RMS per channel",
                          fig_id=f"{probe}-rms", caption="AP (300 Hz high-passed) and LF RMS of every ephys "
                          "channel against its height on the probe, coloured by preprocess's bad-channel "
                          "label; right: AP RMS of every window."))
        out.append(figure(figures.spectra, raw, alt=f"{probe} spectra", fig_id=f"{probe}-spectra",
                          caption="Power spectral density of the raw AP and LF bands (Welch)."))
    out.append("<h4>Bad channels</h4>")
    if not has_labels:
        out.append(missing(f"{probe}-labels", "Bad-channel labels", labels["note"]))
        return "\n".join(out)
    counts = labels["counts"]
    rows = [[f"<tr><td>{e(name)}</td>", f'<td class="num" data-label="{e(name)}" data-probe="{e(probe)}" '
             f'data-value="{n}">{n}</td>',
             f"<td>{e(', '.join(labels['by_label'].get(name, [])[:60]))}"
             f"{' …' if len(labels['by_label'].get(name, [])) > 60 else ''}</td></tr>"]
            for name, n in counts.items()]
    out.append(table(["label", "channels", "channel ids"], rows, f'id="{e(probe)}-labels-table"'))
    action = labels.get("action")
    if not labels.get("detected", True):
        out.append('<p class="sub">Bad-channel detection was off (preprocess.bad_channels.detect: false).</p>')
    elif action:
        out.append(f'<p class="sub">Dead and noisy channels: {e(action)}; outside the brain: '
                   f"{'removed' if labels.get('remove_outside') else 'kept'} (preprocess.bad_channels).</p>")
    return "\n".join(out)


def _drift(probe: str, drift: dict[str, Any]) -> str:
    out = [f'<h3 id="{e(probe)}-drift">Drift map</h3>']
    if "note" in drift:
        out.append(missing(f"{probe}-drift", "Drift map", drift["note"]))
    else:
        out.append(figure(figures.drift_map, drift, alt=f"{probe} drift map", fig_id=f"{probe}-drift-map",
                          caption="Spike depth (ALF spikes.depths) against time (spikes.times), coloured by "
                                  "amplitude (spikes.amps)."))
    return "\n".join(out)


def _units(probe: str, u: dict[str, Any]) -> str:
    out = [f'<h3 id="{e(probe)}-units">Units and quality metrics</h3>']
    if "note" in u:
        out.append(missing(f"{probe}-units", "Unit yield and quality metrics", u["note"]))
        return "\n".join(out)
    crit = "; ".join(f"{c} {t}" for c, t in u["thresholds_text"].items()) or "none"
    passing = u["n_passing"]
    out.append(table(["units found", "passing QC", "QC thresholds (all must hold)"], [[
        f'<tr><td class="num" id="{e(probe)}-units-found" data-value="{u["n_units"]}">{u["n_units"]}</td>',
        f'<td class="num" id="{e(probe)}-units-passing" data-value="{e(passing)}">{fmt(passing)}</td>',
        f'<td id="{e(probe)}-thresholds">{e(crit)}</td></tr>']], f'id="{e(probe)}-yield"'))
    if u["by_ibl_label"] is not None:
        ibl = u.get("ibl") or {}
        head = [f"IBL label {k}" for k in u["by_ibl_label"]]
        cells = [f'<td class="num" data-ibl-label="{e(k)}" data-probe="{e(probe)}" data-value="{v}">{v}</td>'
                 for k, v in u["by_ibl_label"].items()]
        out.append(table(head, [["<tr>", *cells, "</tr>"]], f'id="{e(probe)}-ibl-labels"'))
        if ibl:
            out.append(f'<p class="sub">IBL label: the fraction of IBL\'s three single-unit criteria met '
                       f"(sliding refractory period, contamination &lt; {fmt(ibl.get('rp_contamination_pct'))} % "
                       f"at {fmt(ibl.get('rp_confidence_pct'))} % confidence; noise cutoff &lt; "
                       f"{fmt(ibl.get('noise_cutoff_max'))}; median amplitude &gt; {fmt(ibl.get('min_amplitude_uv'))} µV).</p>")
    summary = u["summary"]
    if summary.get("n_units") is not None and (summary["n_units"], summary["n_passing"]) != (u["n_units"], passing):
        out.append(f'<p class="warning">processing.json says {summary["n_units"]} units, {summary["n_passing"]} '
                   "passing: metrics.pqt disagrees (it changed since qc committed?).</p>")
    out.append(figure(figures.yield_bars, u, alt=f"{probe} unit yield", fig_id=f"{probe}-yield-figure"))
    if u["n_units"]:
        out.append(figure(figures.metric_distributions, u, alt=f"{probe} metric distributions",
                          fig_id=f"{probe}-metrics", caption="Distributions of the metrics with a QC threshold "
                          "(dashed: the bound), of IBL's criteria, and of firing rate and SNR; units passing QC "
                          "in green."))
    if u.get("metric_params"):
        out.append(f"<details><summary>metric parameters</summary>{_pre_json(u['metric_params'])}</details>")
    return "\n".join(out)


def _locations(probe: str, loc: dict[str, Any]) -> str:
    out = [f'<h3 id="{e(probe)}-locations">Unit positions</h3>']
    if "note" in loc:
        out.append(missing(f"{probe}-locations", "Unit positions", loc["note"]))
        return "\n".join(out)
    out.append(figure(figures.probe_positions, loc, alt=f"{probe} units on the probe", fig_id=f"{probe}-probe",
                      caption="Unit positions on the probe (monopolar triangulation)."))
    if loc["has_ccf"]:
        out.append(figure(figures.ccf_positions, loc, alt=f"{probe} units in the CCF", fig_id=f"{probe}-ccf",
                          caption="Sites (coloured by brain region where there are regions) and units in CCF "
                                  "coordinates, µm from bregma; units passing QC filled."))
    else:
        out.append(missing(f"{probe}-ccf", "CCF coordinates", loc["ccf_note"]))
    if not loc["has_regions"]:
        out.append(missing(f"{probe}-regions", "Brain regions", loc["regions_note"]))
    else:
        out.append(_regions_table(probe, loc))
    if loc.get("regions_warning"):
        out.append(f'<p class="warning">{e(loc["regions_warning"])}</p>')
    units = loc["units"]
    good = units[units["passes_qc"].to_numpy(bool)]
    if "y" in good:
        good = good.sort_values("y")
    columns = [c for c in ("unit_id", "x", "y", "ml", "ap", "dv", "acronym", "firing_rate") if c in good]
    def cell(column: str, value: Any) -> str:
        if column == "acronym":
            return f"<td>{e(value)}</td>"
        if column in ("x", "y", "ml", "ap", "dv"):  # µm, to a tenth
            text = "—" if value is None or not np.isfinite(value) else f"{float(value):.1f}"
            return f'<td class="num">{text}</td>'
        return f'<td class="num">{fmt(value)}</td>'

    rows = [[f'<tr data-unit="{e(r["unit_id"])}">', *(cell(c, r[c]) for c in columns), "</tr>"]
            for _, r in good.head(MAX_UNIT_ROWS).iterrows()]
    names = {"unit_id": "unit", "x": "x (µm)", "y": "height (µm)", "ml": "ML", "ap": "AP", "dv": "DV",
             "acronym": "region", "firing_rate": "rate (Hz)"}
    out.append(f"<h4>Units passing QC ({len(good)})</h4>")
    if len(good):
        out.append(table([names[c] for c in columns], rows, f'id="{e(probe)}-units-table"'))
        if len(good) > MAX_UNIT_ROWS:
            out.append(f'<p class="sub">First {MAX_UNIT_ROWS} of {len(good)}; all are in localize/units.pqt.</p>')
    else:
        out.append("<p>No unit passes QC.</p>")
    return "\n".join(out)


def _regions_table(probe: str, loc: dict[str, Any]) -> str:
    """Units (all, and passing QC) and sites per brain region, deepest region first."""
    units, channels = loc["units"], loc["channels"]
    order = channels.sort_values("y")["acronym"] if "y" in channels else channels["acronym"]
    regions = list(dict.fromkeys([*order, *units["acronym"]]))
    rows = []
    for r in regions:
        in_r = (units["acronym"] == r).to_numpy()
        n_pass = int((in_r & units["passes_qc"].to_numpy(bool)).sum())
        rows.append([f'<tr data-region="{e(r)}" data-units="{int(in_r.sum())}" data-passing="{n_pass}">',
                     f"<td>{e(r)}</td>", f'<td class="num">{int(in_r.sum())}</td>', f'<td class="num">{n_pass}</td>',
                     f'<td class="num">{int((channels["acronym"] == r).sum())}</td></tr>'])
    atlas = (loc.get("atlas") or {}).get("url")
    note = f'<p class="sub">Allen CCF regions from {e(atlas)}.</p>' if atlas else ""
    return table(["region (deepest first)", "units", "passing QC", "sites"], rows,
                 f'id="{e(probe)}-regions-table"') + note


def _versions(data: dict[str, Any]) -> str:
    p = data["pipeline"]
    out = ['<section id="versions"><h2>Versions and parameters</h2>',
           f'<p>Pipeline {e(p["name"])} version <span id="pipeline-version" data-value="{e(p["version"])}">'
           f"{fmt(p['version'])}</span>; this report by neuropool {e(data['neuropool_version'])}.</p>"]
    software = data["description"].get("software") or {}
    if software:
        out.append(f"<p>Asset created by {e(software.get('name'))} {e(software.get('version'))}.</p>")
    rows = []
    for n in data["nodes"]:
        params = n["parameters"]
        rows.append([f'<tr data-task-node="{e(n["node"])}" data-version="{e(n["version"] or "")}">',
                     f"<td>{e(n['node'])}</td>", f"<td>{fmt(n['version'])}</td>",
                     f"<td>{_params(params)}</td></tr>"])
    if rows:
        out.append(table(["node", "task version", "parameters"], rows, 'id="versions-table"'))
    out.append("</section>")
    return "\n".join(out)
