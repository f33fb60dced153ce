"""Graphs: edges from datasets, validation before running, serialisation, subsets."""

from __future__ import annotations

import pytest

from neuropool.errors import ConfigError, GraphError, ResourceError
from neuropool.graphs.graph import Graph
from neuropool.graphs.standard import standard_graph
from neuropool.io.session import Session
from tests.graphs import toytasks  # noqa: F401


def std(probes=("probe00",), **cfg):
    from neuropool.graphs.config import load_config

    session = Session("/data/s1", "s1", {p: f"/data/s1/{p}.ap.cbin" for p in probes},
                      {"probes": {"probe00": {"trajectory": {"x": 0, "y": 0, "depth": 3000}}}})
    return standard_graph(session, load_config(cfg or None))


def test_standard_graph_edges_follow_datasets():
    g = std(("probe00", "probe01"))
    assert len(g.nodes) == 18  # 9 tasks per probe
    edges = set(g.edges())
    assert ("decompress[probe00]", "preprocess[probe00]") in edges
    assert ("decompress[probe00]", "lfp[probe00]") in edges
    assert ("decompress[probe00]", "raw_qc[probe00]") in edges
    assert ("preprocess[probe00]", "sort[probe00]") in edges
    assert ("sort[probe00]", "qc[probe00]") in edges
    assert ("qc[probe00]", "localize[probe00]") in edges
    assert ("localize[probe00]", "export[probe00]") in edges
    assert ("localize[probe00]", "nwb[probe00]") in edges and ("decompress[probe00]", "nwb[probe00]") in edges
    assert not any("probe00" in a and "probe01" in b for a, b in edges)
    order = g.topological_order()
    assert order.index("decompress[probe01]") < order.index("export[probe01]")
    assert g.downstream("sort[probe00]") == {"qc[probe00]", "localize[probe00]", "export[probe00]", "nwb[probe00]"}
    g.validate([{"GPU": 0}])


def test_serialises_to_plain_data_and_back():
    g = std(sort={"sorter": "spykingcircus2"})
    data = g.to_dict()
    assert data["sources"] == {"probe00/ephys.source": "/data/s1/probe00.ap.cbin"}
    g2 = Graph.from_json(g.to_json())
    assert g2.to_dict() == data
    assert g2.nodes["sort[probe00]"].params == {"sorter": "spykingcircus2"}
    assert g2.session["probes"]["probe00"]["trajectory"]["depth"] == 3000


def test_a_separate_lf_stream_adds_decompress_lf_and_feeds_lfp_and_raw_qc():
    session = Session("/data/s1", "s1", {"probe00": "/data/s1/p0.ap.cbin", "probe01": "/data/s1/p1.ap.bin"},
                      {}, lf={"probe00": "/data/s1/p0.lf.cbin"})
    g = standard_graph(session)
    assert g.sources["probe00/ephys.sourceLf"] == "/data/s1/p0.lf.cbin"
    assert "decompress_lf[probe00]" in g.nodes and "decompress_lf[probe01]" not in g.nodes
    for task in ("lfp", "raw_qc"):
        assert g.upstream(f"{task}[probe00]") == ["decompress[probe00]", "decompress_lf[probe00]"]
        assert g.nodes[f"{task}[probe00]"].inputs == {"ephys.raw": "probe00/ephys.raw",
                                                      "ephys.rawLf": "probe00/ephys.rawLf"}
        assert g.upstream(f"{task}[probe01]") == ["decompress[probe01]"]
    assert g.subset(until="lfp").task_names() == "decompress, decompress_lf, lfp"
    g.validate([{"GPU": 0}])
    again = Graph.from_json(g.to_json())
    assert again.to_dict() == g.to_dict() and again.nodes["lfp[probe00]"].optional == ("ephys.rawLf",)
    with pytest.raises(GraphError, match=r"sort\[probe00\]: \['ephys.rawLf'\] are not optional inputs of sort"):
        Graph().add("sort", "probe00", optional=["ephys.rawLf"])


def test_missing_input_is_named():
    g = Graph()
    g.add("toy_double", "probe00")
    with pytest.raises(GraphError, match=r"toy_double\[probe00\] needs probe00/toy.value"):
        g.validate()


def test_cycle_is_detected():
    g = Graph()
    g.add("toy_loop_a", "probe00")
    g.add("toy_loop_b", "probe00")
    with pytest.raises(GraphError, match="cycle"):
        g.validate()


def test_gpu_node_without_gpu_worker_is_refused_before_running():
    g = std(sort={"sorter": "kilosort4"})
    assert g.nodes["sort[probe00]"].make_task().resources().gpus == 1
    with pytest.raises(ResourceError, match=r"sort\[probe00\] needs 1 GPU.*no worker"):
        g.validate([{"GPU": 0, "CPU": 2}, {"CPU": 2}])
    g.validate([{"GPU": 1}])


def test_sort_gpus_overrides_the_declaration_without_redoing_work():
    def sort_task(**params):
        return std(sort=params).nodes["sort[probe00]"].make_task()

    assert sort_task(sorter="kilosort4", gpus=0).resources().gpus == 0  # kilosort4 on CPU
    assert sort_task(gpus=1).resources().gpus == 1  # any sorter sent to a GPU worker
    assert sort_task().resources().gpus == 0
    with pytest.raises(ConfigError, match=r"sort\.gpus"):
        sort_task(gpus=-1)
    # how a task runs (cores, GPUs) is not part of what it computes
    base = sort_task().params.fingerprint_fields()
    assert sort_task(gpus=1, n_jobs=2).params.fingerprint_fields() == base
    assert "gpus" not in base and "n_jobs" not in base
    assert sort_task(sorter_params={"detection": {"peak_sign": "pos"}}).params.fingerprint_fields() != base


def test_invalid_parameters_name_task_and_field():
    g = Graph({"probe00/ephys.source": "x"})
    with pytest.raises(ConfigError, match=r"toy_double\.factor"):
        g.add("toy_double", "probe00", {"factor": -1})
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        g.add("nope", "probe00")
    with pytest.raises(ConfigError, match="probe00"):
        g.add("toy_source", "probe-a")


def test_subsets():
    g = std()
    until = g.subset(until="preprocess")
    assert list(until.nodes) == ["decompress[probe00]", "preprocess[probe00]"]
    only = g.subset(only=["qc", "export"])
    assert set(only.nodes) == {"qc[probe00]", "export[probe00]"}
    assert only.external["probe00/ephys.sorting"] == "sort[probe00]"
    assert only.external["probe00/units.locations"] == "localize[probe00]"
    only.validate()
    with pytest.raises(GraphError, match="no such task"):
        g.subset(until="nothing")
