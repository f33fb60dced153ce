"""Gather what the QC report shows from a derived asset: plain data, no drawing.

Everything is read from what the asset's committed nodes wrote (a node's outputs count only once
its commit marker exists, :mod:`neuropool.io.store`), through fsspec, so an asset on S3 is read
the same way as one on disk, and never written to. Datasets are found where the naming spec puts
them inside the asset (:meth:`DerivedAsset.dataset_url`), not at the URLs the commits recorded,
so an asset that was copied or moved (to S3, say) reads the same. Each section of a probe is either its data or a
``{"note": ...}`` saying why it is missing: which node failed (with its error), did not run, or
is not part of the asset's graph.

The node states are those of ``neuropool status`` (:func:`neuropool.status.asset_status`).
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from neuropool import __version__
from neuropool.errors import ConfigError, SourceNotFoundError, StoreError
from neuropool.io import spec, urls
from neuropool.io.store import DerivedAsset

#: Most spikes drawn in a drift map (a random subset, the same one every time, beyond that).
MAX_DRIFT_SPIKES = 100_000
#: IBL's bad-channel codes (:mod:`neuropool.tasks.preprocessing.base`), repeated here so that
#: the report does not import the preprocessing chain.
LABEL_NAMES = {0: "good", 1: "dead", 2: "noisy", 3: "outside"}
#: SpikeGLX ``.meta`` keys shown in the probe table, when the raw store carries them.
META_KEYS = ("imDatPrb_type", "imDatPrb_pn", "imDatPrb_sn", "imDatHs_sn", "imAiRangeMax", "imMaxInt",
             "appVersion", "fileCreateTime")


class Unavailable(Exception):
    """A section's input is missing or unreadable; the message says why, for the page."""


# -- reading ------------------------------------------------------------------------------------


def _read_bytes(url: str, storage_options: dict[str, Any]) -> bytes:
    fs, path = urls.get_fs(url, storage_options)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise Unavailable(f"{url}: committed but missing (the asset was changed or damaged; "
                          "run the task again)") from None


def read_npy(url: str, storage_options: dict[str, Any]) -> np.ndarray:
    """A ``.npy`` file through fsspec (no pickles)."""
    try:
        return np.load(io.BytesIO(_read_bytes(url, storage_options)), allow_pickle=False)
    except ValueError as e:
        raise Unavailable(f"{url}: not a readable .npy file ({e})") from None


def read_parquet(url: str, storage_options: dict[str, Any]) -> pd.DataFrame:
    """A parquet table through fsspec."""
    try:
        return pd.read_parquet(io.BytesIO(_read_bytes(url, storage_options)))
    except (OSError, ValueError) as e:
        raise Unavailable(f"{url}: not a readable parquet table ({e})") from None


def _read_json(url: str, storage_options: dict[str, Any]) -> Any:
    try:
        return json.loads(_read_bytes(url, storage_options).decode())
    except ValueError as e:
        raise Unavailable(f"{url}: not valid JSON ({e})") from None


def _dataset_url(asset: DerivedAsset, rec: dict[str, Any], name: str, probe: str) -> str:
    """Where dataset ``name`` of ``probe`` is: where the naming spec puts it in the asset, or, when
    nothing is there, where its commit recorded it (an asset written by an older version)."""
    url = asset.dataset_url(name, probe)
    recorded = (rec.get("outputs") or {}).get(name)
    if recorded and recorded != url and not urls.exists(url, asset.storage_options) \
            and urls.exists(recorded, asset.storage_options):
        return recorded
    return url


# -- the asset ----------------------------------------------------------------------------------


def _split(nid: str) -> tuple[str, str]:
    task, _, probe = nid.partition("[")
    return task, probe.rstrip("]")


class _Nodes:
    """Node states and records of one asset, and why a node's outputs are not there."""

    def __init__(self, asset: DerivedAsset, processing: dict[str, Any] | None) -> None:
        from neuropool.status import asset_status

        self.asset = asset
        self.commits = asset.commits()
        self.failures = asset.failures()
        self.status = asset_status(asset, check_current=False)
        self.by_id = {n.node: n for n in self.status.nodes}
        graph = (processing or {}).get("dependency_graph") or {}
        self.params = {n["id"]: n.get("params", {}) for n in graph.get("nodes", [])}

    def committed(self, nid: str) -> dict[str, Any] | None:
        """The commit record of ``nid`` when its outputs count (committed, not failed since)."""
        node = self.by_id.get(nid)
        return self.commits.get(nid) if node is not None and node.state == "committed" else None

    def why_missing(self, nid: str) -> str:
        """Why ``nid``'s outputs are not in the asset, in a sentence."""
        node = self.by_id.get(nid)
        if node is None:
            return (f"{nid} is not part of this asset's graph: the run left it out (--until, --only, "
                    "or the task disabled in the pipeline config)")
        if node.state == "failed":
            failure = self.failures.get(nid, {})
            return f"{nid} failed ({failure.get('time', node.when or '?')}): {node.error}"
        if node.state == "not run":
            return f"{nid} did not run: {node.detail}"
        if node.state == "not committed":
            return (f"{nid} is not committed: it is running now, was interrupted, or was not "
                    "started (e.g. left out by --until)")
        return f"{nid}: {node.state}"

    def require(self, nid: str) -> dict[str, Any]:
        """The commit record of ``nid``, or :class:`Unavailable` saying why there is none."""
        record = self.committed(nid)
        if record is None:
            raise Unavailable(self.why_missing(nid))
        return record


def _section(fn: Any, *args: Any) -> dict[str, Any]:
    """``fn(*args)``, or ``{"note": why}`` when its inputs are missing or unreadable."""
    try:
        return fn(*args)
    except Unavailable as e:
        return {"note": str(e)}
    except (StoreError, SourceNotFoundError, OSError) as e:
        return {"note": f"unreadable: {type(e).__name__}: {e}".splitlines()[0]}
    except (KeyError, ValueError, TypeError, IndexError) as e:  # a file of another shape or version
        return {"note": f"unexpected content ({type(e).__name__}: {e}); was it written by another "
                        "version of neuropool? Run the task again".splitlines()[0]}


def collect(asset: DerivedAsset) -> dict[str, Any]:
    """Everything the report shows, as plain data (numpy arrays and tables included).

    Parameters
    ----------
    asset : DerivedAsset
        The asset (local or any fsspec URL; only read).

    Returns
    -------
    dict
        ``asset``, ``generated``, ``neuropool_version``, ``description``, ``session``,
        ``pipeline`` (name, version), ``nodes`` (one dict per node: state, times, wall time,
        version, parameters, error), ``failures``, ``status_notes`` and ``probes`` (per probe:
        ``meta``, ``raw_qc``, ``labels``, ``drift``, ``units``, ``locations``; each section is its
        data, or ``{"note": why it is missing}``).

    Raises
    ------
    SourceNotFoundError
        ``asset`` has no ``data_description.json`` (it is not a derived asset).
    """
    try:
        description = asset.read_description()
    except SourceNotFoundError:
        raise SourceNotFoundError(f"{asset.url}: not a derived asset (it has no "
                                  f"{spec.DATA_DESCRIPTION})") from None
    try:
        processing = asset.read_processing()
    except SourceNotFoundError:
        processing = None
    nodes = _Nodes(asset, processing)
    pipeline = (processing or {}).get("processing_pipeline", {})
    graph = (processing or {}).get("dependency_graph") or {}
    session = dict(graph.get("session") or {})
    probes = sorted({_split(n.node)[1] for n in nodes.status.nodes} | set(session.get("probes", {})))
    out: dict[str, Any] = {
        "asset": {"url": asset.url, "name": asset.name},
        "generated": datetime.now().isoformat(timespec="seconds"),
        "neuropool_version": __version__,
        "description": description,
        "session": _session(asset, session, description),
        "pipeline": {"name": pipeline.get("name", "neuropool"),
                     "version": pipeline.get("pipeline_version"),
                     "processing_json": processing is not None},
        "nodes": _node_rows(nodes),
        "failures": [{"node": nid, **{k: rec.get(k) for k in ("error", "traceback", "time", "host")}}
                     for nid, rec in sorted(nodes.failures.items())
                     if nodes.by_id.get(nid) is None or nodes.by_id[nid].state == "failed"],
        "status_notes": list(nodes.status.notes),
        "probes": {},
    }
    for probe in probes:
        out["probes"][probe] = {
            "meta": _section(_probe_meta, asset, nodes, probe, session.get("probes", {}).get(probe, {})),
            "raw_qc": _section(_raw_qc, asset, nodes, probe),
            "labels": _section(_labels, asset, nodes, probe),
            "drift": _section(_drift, asset, nodes, probe),
            "units": _section(_units, asset, nodes, probe),
            "locations": _section(_locations, asset, nodes, probe),
        }
    return out


def _session(asset: DerivedAsset, session: dict[str, Any], description: dict[str, Any]) -> dict[str, Any]:
    """Subject, date and number from the source's name (IBL's ``<subject>_<date>_<number>``)."""
    out = {"name": session.get("name") or (description.get("source_data") or [None])[0],
           "url": session.get("url") or description.get("source_url"),
           "created": description.get("creation_time"), "created_by": description.get("created_by")}
    try:
        subject, date, number = spec.one_session_path(asset.name).split("/")
        out.update(subject=subject, date=date, number=number)
    except ConfigError:
        out.update(subject=None, date=None, number=None)
    return out


def _node_rows(nodes: _Nodes) -> list[dict[str, Any]]:
    rows = []
    for n in nodes.status.nodes:
        task, probe = _split(n.node)
        rec = nodes.commits.get(n.node) if n.state == "committed" else None
        failure = nodes.failures.get(n.node) if n.state == "failed" else None
        rows.append({
            "node": n.node, "task": task, "probe": probe, "state": n.state,
            "start": rec.get("start_date_time") if rec else None,
            "end": rec.get("end_date_time") if rec else (failure or {}).get("time"),
            "wall_s": rec.get("wall_s") if rec else None,
            "host": ", ".join(rec.get("host") or []) if rec else (failure or {}).get("host"),
            "version": rec.get("version") if rec else None,
            "parameters": rec.get("parameters") if rec else nodes.params.get(n.node),
            "error": n.error, "detail": n.detail,
        })
    return rows


# -- per-probe sections -------------------------------------------------------------------------


def _raw_store(asset: DerivedAsset, nodes: _Nodes, probe: str) -> Any:
    from neuropool.io.timeseries import TimeseriesStore

    rec = nodes.require(f"decompress[{probe}]")
    return TimeseriesStore(_dataset_url(asset, rec, "ephys.raw", probe), asset.storage_options)


def _probe_meta(asset: DerivedAsset, nodes: _Nodes, probe: str, info: dict[str, Any]) -> dict[str, Any]:
    """Probe type, channels, sampling rate and duration (decompress's summary and raw store)."""
    rec = nodes.require(f"decompress[{probe}]")
    summary = rec.get("summary", {})
    out: dict[str, Any] = {
        "model": info.get("model"), "serial": info.get("serial"),
        "format": summary.get("format"),
        "n_channels": summary.get("n_channels"),
        "n_sync_channels": summary.get("n_sync_channels"),
        "sampling_frequency": summary.get("sampling_frequency"),
        "n_samples": summary.get("n_samples"),
        "duration_s": summary.get("duration_s"),
        "checksum_verified": summary.get("checksum_verified"),
        "source": rec.get("inputs", {}).get("ephys.source"),
        "trajectory": info.get("trajectory"),
    }
    try:
        attrs = _raw_store(asset, nodes, probe).attrs
    except StoreError as e:
        out["store_note"] = str(e).splitlines()[0]
        attrs = {}
    out["probe_type"] = attrs.get("probe_type") or None
    meta = attrs.get("metadata") or {}
    out["spikeglx"] = {k: meta[k] for k in META_KEYS if k in meta}
    lf = nodes.committed(f"decompress_lf[{probe}]")
    if lf:
        out["lf"] = {k: lf.get("summary", {}).get(k) for k in ("sampling_frequency", "n_channels", "duration_s")}
    return out


def _channel_positions(asset: DerivedAsset, nodes: _Nodes, probe: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """x, y (µm) and ids of the raw store's ephys channels (the order of the ``_iblqc_`` files)."""
    store = _raw_store(asset, nodes, probe)
    keep = np.flatnonzero(~store.coord("is_sync").astype(bool))
    ids = store.channel_ids
    return store.coord("x")[keep].astype(float), store.coord("y")[keep].astype(float), [ids[i] for i in keep]


def _raw_qc(asset: DerivedAsset, nodes: _Nodes, probe: str) -> dict[str, Any]:
    """IBL's ``_iblqc_`` arrays of the probe, with the channels' positions."""
    rec = nodes.require(f"raw_qc[{probe}]")
    out: dict[str, Any] = {}
    for name, key in spec.RAW_QC_DATASETS.items():
        out[key] = read_npy(_dataset_url(asset, rec, name, probe), asset.storage_options)
    out["x"], out["y"], out["channel_ids"] = _channel_positions(asset, nodes, probe)
    if len(out["y"]) != len(out["spike_rms"]):
        raise Unavailable(f"raw_qc[{probe}]: {len(out['spike_rms'])} channels in its files, "
                          f"{len(out['y'])} ephys channels in the raw store: run raw_qc again")
    summary = rec.get("summary", {})
    out["warnings"] = list(summary.get("warnings", []))
    out["summary"] = {k: summary.get(k) for k in ("n_windows", "n_spectral_windows", "median_spike_rms_uv",
                                                   "median_lfp_rms_uv")}
    return out


def _labels(asset: DerivedAsset, nodes: _Nodes, probe: str) -> dict[str, Any]:
    """Preprocess's bad-channel labels (IBL's codes) of every ephys channel, with positions."""
    rec = nodes.require(f"preprocess[{probe}]")
    url = _dataset_url(asset, rec, "ephysChannels.labels", probe)
    labels = read_npy(url, asset.storage_options).astype(int)
    x, y, ids = _channel_positions(asset, nodes, probe)
    if len(labels) != len(y):
        raise Unavailable(f"{url}: {len(labels)} labels for {len(y)} ephys channels")
    params = rec.get("parameters", {}).get("bad_channels", {})
    return {"labels": labels, "x": x, "y": y, "channel_ids": ids,
            "counts": {name: int(np.count_nonzero(labels == code)) for code, name in LABEL_NAMES.items()},
            "by_label": {name: [ids[i] for i in np.flatnonzero(labels == code)]
                         for code, name in LABEL_NAMES.items() if code},
            "detected": params.get("detect", True),
            "action": params.get("action"), "remove_outside": params.get("remove_outside")}


def _drift(asset: DerivedAsset, nodes: _Nodes, probe: str) -> dict[str, Any]:
    """Spike times, depths and amplitudes of the ALF export (a subset beyond MAX_DRIFT_SPIKES)."""
    alf = _dataset_url(asset, nodes.require(f"export[{probe}]"), "alf", probe)
    times = read_npy(urls.join(alf, "spikes.times.npy"), asset.storage_options)
    depths = read_npy(urls.join(alf, "spikes.depths.npy"), asset.storage_options)
    amps = read_npy(urls.join(alf, "spikes.amps.npy"), asset.storage_options)
    if not len(times) == len(depths) == len(amps):
        raise Unavailable(f"{alf}: spikes.times, spikes.depths and spikes.amps differ in length")
    n = len(times)
    shown = np.arange(n)
    if n > MAX_DRIFT_SPIKES:
        shown = np.sort(np.random.default_rng(0).choice(n, MAX_DRIFT_SPIKES, replace=False))
    return {"times": times[shown], "depths": depths[shown], "amps_uv": amps[shown] * 1e6,
            "n_spikes": n, "n_shown": len(shown), "alf": alf}


def _units(asset: DerivedAsset, nodes: _Nodes, probe: str) -> dict[str, Any]:
    """qc's metrics table, its thresholds and IBL criteria, and the yield."""
    rec = nodes.require(f"qc[{probe}]")
    qc = _dataset_url(asset, rec, "units.metrics", probe)
    metrics = read_parquet(urls.join(qc, "metrics.pqt"), asset.storage_options)
    params = rec.get("parameters", {})
    configured = {"thresholds": params.get("thresholds"), "ibl": params.get("ibl")}
    if configured["thresholds"] is None:  # a commit without its parameters: what qc wrote beside
        try:
            written = _read_json(urls.join(qc, "thresholds.json"), asset.storage_options)
        except Unavailable:
            written = {}
        # qc 2 writes {"thresholds": ..., "ibl": ...}; qc 1 wrote the thresholds alone
        configured = written if "thresholds" in written else {"thresholds": written, "ibl": None}
    thresholds = {col: {k: v for k, v in (b or {}).items() if v is not None}
                  for col, b in (configured.get("thresholds") or {}).items()}
    labels = metrics["ibl_label"].to_numpy(float) if "ibl_label" in metrics else np.array([])
    thirds = np.rint(labels * 3).astype(int) if labels.size else labels.astype(int)
    by_label = {name: int(np.count_nonzero(thirds == k)) for k, name in enumerate(("0", "0.33", "0.67", "1"))}
    summary = rec.get("summary", {})
    return {
        "metrics": metrics,
        "n_units": len(metrics),
        "n_passing": int(metrics["passes_qc"].sum()) if "passes_qc" in metrics else None,
        "by_ibl_label": by_label if "ibl_label" in metrics else None,
        "thresholds": thresholds,
        "thresholds_text": summary.get("thresholds") or {c: _bound_text(b) for c, b in thresholds.items()},
        "ibl": configured.get("ibl") or {},
        "summary": {k: summary.get(k) for k in ("n_units", "n_passing", "units_by_ibl_label")},
        "metric_params": summary.get("metric_params", {}),
    }


def _bound_text(bound: dict[str, float]) -> str:
    ops = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
    return " and ".join(f"{ops[k]} {v:g}" for k, v in bound.items() if k in ops)


def _locations(asset: DerivedAsset, nodes: _Nodes, probe: str) -> dict[str, Any]:
    """Unit and channel positions on the probe and in the CCF, with regions where there are."""
    rec = nodes.require(f"localize[{probe}]")
    loc = _dataset_url(asset, rec, "units.locations", probe)
    units = read_parquet(urls.join(loc, "units.pqt"), asset.storage_options)
    channels = read_parquet(urls.join(loc, "channels.pqt"), asset.storage_options)
    qc = nodes.committed(f"qc[{probe}]")
    if qc is not None:
        url = urls.join(_dataset_url(asset, qc, "units.metrics", probe), "metrics.pqt")
        try:
            metrics = read_parquet(url, asset.storage_options)[["unit_id", "passes_qc", "firing_rate"]]
            metrics["unit_id"] = metrics["unit_id"].astype(str)
            units = units.assign(unit_id=units["unit_id"].astype(str)).merge(metrics, on="unit_id", how="left")
        except (Unavailable, KeyError):
            pass
    if "passes_qc" not in units:
        units["passes_qc"] = False
    units["passes_qc"] = units["passes_qc"].fillna(False).astype(bool)
    summary = rec.get("summary", {})
    has_ccf = bool({"ml", "ap", "dv"} <= set(units) and np.isfinite(units[["ml", "ap", "dv"]].to_numpy(float)).any())
    has_regions = "acronym" in units
    out: dict[str, Any] = {"units": units, "channels": channels, "has_ccf": has_ccf,
                           "has_regions": has_regions, "regions": summary.get("regions"),
                           "trajectory": summary.get("trajectory"), "atlas": summary.get("atlas"),
                           "region_counts": summary.get("region_counts")}
    if not has_ccf:
        out["ccf_note"] = summary.get("note") or "no CCF coordinates: localize had no probe trajectory"
    if not has_regions:
        out["regions_note"] = summary.get("regions") or "brain regions left out: localize had no atlas"
    if summary.get("regions_note"):
        out["regions_warning"] = summary["regions_note"]
    return out
