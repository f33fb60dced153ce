"""Task graphs: how steps are wired, validated, serialised and run."""

from neuropool.graphs.config import PipelineConfig, load_config
from neuropool.graphs.graph import Graph, Node
from neuropool.graphs.runner import RunReport, run_graph
from neuropool.graphs.standard import standard_graph

__all__ = ["Graph", "Node", "PipelineConfig", "RunReport", "load_config", "run_graph", "standard_graph"]
