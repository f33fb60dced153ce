"""The standard per-probe graph: decompress -> preprocess -> sort -> qc -> localize -> export."""

from __future__ import annotations

from neuropool.graphs.config import PipelineConfig
from neuropool.graphs.graph import Graph, dataset_key
from neuropool.io.session import Session
from neuropool.io.spec import SOURCE_DATASET
from neuropool.tasks import STANDARD


def standard_graph(session: Session, config: PipelineConfig | None = None) -> Graph:
    """Build the standard graph for every probe of ``session``."""
    config = config or PipelineConfig()
    graph = Graph({dataset_key(SOURCE_DATASET, probe): url for probe, url in session.probes.items()})
    graph.session = {"name": session.name, "url": session.url.split("@")[-1],
                     "probes": {p: session.probe_info(p) for p in session.probes}}
    for probe in session.probes:
        for task in STANDARD:
            graph.add(task, probe, config.task_params(task), retries=config.retries)
    return graph
