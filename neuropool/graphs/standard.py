"""The standard per-probe graph: decompress -> preprocess -> sort -> qc -> localize -> export, nwb,
with the LFP band (``lfp``) and the raw-data QC (``raw_qc``) branching off decompress (and off
``decompress_lf`` for a probe with a separate LF stream: NP1 and 3A), and where its results go (:func:`plan`, shared by the notebook client, the CLI and the flows)."""

from __future__ import annotations

from typing import Any

from neuropool.graphs.config import PipelineConfig, load_config
from neuropool.graphs.graph import Graph, dataset_key
from neuropool.io import urls
from neuropool.io.session import Session, open_session
from neuropool.io.spec import SOURCE_DATASET, SOURCE_LF_DATASET
from neuropool.io.store import DerivedAsset
from neuropool.tasks import STANDARD, get_task


def standard_graph(session: Session, config: PipelineConfig | None = None) -> Graph:
    """Build the standard graph for every probe of ``session``.

    A task whose config section says ``enabled: false`` (``lfp``, ``raw_qc``) is left out.
    """
    config = config or PipelineConfig()
    sources = {dataset_key(SOURCE_DATASET, probe): url for probe, url in session.probes.items()}
    sources.update({dataset_key(SOURCE_LF_DATASET, probe): url for probe, url in session.lf.items()
                    if probe in session.probes})
    graph = Graph(sources)
    graph.session = {"name": session.name, "url": session.url.split("@")[-1],
                     "probes": {p: session.probe_info(p) for p in session.probes}}
    for probe in session.probes:
        for task in STANDARD:
            if not getattr(getattr(config, task, None), "enabled", True):
                continue
            if task == "decompress_lf":  # only for a separate LF stream; decompress's settings
                if probe in session.lf:
                    graph.add(task, probe, config.task_params("decompress"), retries=config.retries)
                continue
            wanted = get_task(task).optional_inputs
            available = set(graph.producers()) | set(graph.sources) if wanted else set()
            optional = [d for d in wanted if dataset_key(d, probe) in available]
            graph.add(task, probe, config.task_params(task), retries=config.retries, optional=optional)
    return graph


def plan(
    work: Graph | str,
    *,
    out: str | None = None,
    asset: DerivedAsset | None = None,
    config: str | dict[str, Any] | PipelineConfig | None = None,
    storage_options: dict[str, Any] | None = None,
    new: bool = False,
    until: str | None = None,
    only: list[str] | None = None,
) -> tuple[Graph, DerivedAsset]:
    """The graph to run and the derived asset it goes into.

    Parameters
    ----------
    work : Graph or str
        A graph (its ``sources`` name the raw recordings), or a session URL (folder or file),
        for which the standard graph is built with ``config``.
    out : str, optional
        Folder for the derived asset; default: the folder holding the session.
    asset : DerivedAsset, optional
        Write into this asset instead (resuming what it has committed).
    config : path, dict or PipelineConfig, optional
        Pipeline parameters, for a session URL.
    storage_options : dict, optional
        fsspec options for the session and the asset (credentials, endpoint).
    new : bool
        Start a new asset instead of resuming the latest one for this session and label.
    until, only : optional
        Restrict the graph, as ``neuropool run --until/--only`` (see :meth:`Graph.subset`).

    Returns
    -------
    (Graph, DerivedAsset)
    """
    if isinstance(work, str):
        cfg = config if isinstance(config, PipelineConfig) else load_config(config)
        session = open_session(work, storage_options)
        graph = standard_graph(session, cfg)
        label, source = cfg.label, session.url
    else:
        graph = work
        label = "processed"
        source = graph.session.get("url") or next(iter(graph.sources.values()), None)
    if until or only:
        graph = graph.subset(until=until, only=only)
    if asset is None:
        if source is None:
            raise ValueError("the graph has no sources and no session url: pass asset=")
        fs, path = urls.get_fs(source, storage_options)
        session_dir = source if fs.isdir(path) else urls.parent(source)
        root = out or urls.parent(session_dir)
        make = DerivedAsset.create if new else DerivedAsset.open_or_create
        asset = make(root, session_dir, label=label, storage_options=storage_options)
    return graph, asset
