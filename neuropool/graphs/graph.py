"""A graph is a DAG of task nodes, each bound to a probe; edges follow from datasets.

A node consumes datasets (``probe00/ephys.raw``) and produces others; an edge runs from the node
that produces a dataset to every node that consumes it. Datasets nobody produces must be given
as *sources* (URLs of raw recordings). The graph validates before anything runs and serialises to
plain data, so a graph built in a notebook can be sent elsewhere. It does not depend on Prefect
or on any pool.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from neuropool.errors import GraphError, ResourceError
from neuropool.io import spec
from neuropool.tasks import get_task
from neuropool.tasks.base import Task


def node_id(task: str, probe: str) -> str:
    """``sort``, ``probe00`` -> ``sort[probe00]``."""
    return f"{task}[{probe}]"


def dataset_key(name: str, probe: str) -> str:
    """``ephys.raw``, ``probe00`` -> ``probe00/ephys.raw``."""
    return f"{probe}/{name}"


@dataclass
class Node:
    """One task bound to one probe, with its (validated) parameters and retry count."""

    task: str
    probe: str
    params: dict[str, Any] = field(default_factory=dict)
    retries: int = 2
    #: the task's optional inputs (``Task.optional_inputs``) that this node reads
    optional: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return node_id(self.task, self.probe)

    def make_task(self) -> Task:
        """Instantiate the task with this node's parameters (validates them)."""
        return get_task(self.task)(self.params)

    @property
    def inputs(self) -> dict[str, str]:
        """Dataset name -> key, for what this node reads."""
        return {d: dataset_key(d, self.probe) for d in (*get_task(self.task).inputs, *self.optional)}

    @property
    def outputs(self) -> dict[str, str]:
        """Dataset name -> key, for what this node writes."""
        return {d: dataset_key(d, self.probe) for d in get_task(self.task).outputs}


class Graph:
    """A dependency graph of task nodes.

    Parameters
    ----------
    sources : dict, optional
        Dataset key -> URL for the datasets no node produces (the raw recordings).
    """

    def __init__(self, sources: dict[str, str] | None = None) -> None:
        self.nodes: dict[str, Node] = {}
        self.sources: dict[str, str] = dict(sources or {})
        self.session: dict[str, Any] = {}
        #: Dataset key -> id of a node left out of this (sub)graph that produces it; the runner
        #: takes such inputs from the asset, where they must already be committed.
        self.external: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Graph {len(self.nodes)} nodes: {', '.join(self.nodes)}>"

    def add(self, task: str, probe: str, params: dict[str, Any] | None = None, retries: int = 2,
            optional: tuple[str, ...] | list[str] = ()) -> Node:
        """Add a node running ``task`` on ``probe``; parameters are validated now. ``optional``
        names the task's optional inputs that the node reads (e.g. ``lfp`` from an LF stream)."""
        spec.check_probe_name(probe)
        node = Node(task, probe, dict(params or {}), retries, tuple(optional))
        allowed = node.make_task().optional_inputs  # validates the task name and parameters
        if set(node.optional) - set(allowed):
            raise GraphError(f"{node.id}: {sorted(set(node.optional) - set(allowed))} are not optional "
                             f"inputs of {task} (those are: {', '.join(allowed) or 'none'})")
        if node.id in self.nodes:
            raise GraphError(f"the graph already has a node {node.id}")
        self.nodes[node.id] = node
        return node

    # -- structure --------------------------------------------------------------------------

    def producers(self) -> dict[str, str]:
        """Dataset key -> id of the node producing it."""
        out: dict[str, str] = {}
        for n in self.nodes.values():
            for key in n.outputs.values():
                if key in out:
                    raise GraphError(f"{key} is produced by both {out[key]} and {n.id}")
                out[key] = n.id
        return out

    def edges(self) -> list[tuple[str, str]]:
        """``(upstream, downstream)`` pairs."""
        prod = self.producers()
        return sorted(
            {(prod[k], n.id) for n in self.nodes.values() for k in n.inputs.values() if k in prod}
        )

    def upstream(self, nid: str) -> list[str]:
        """Ids of the nodes ``nid`` directly depends on."""
        return [a for a, b in self.edges() if b == nid]

    def downstream(self, nid: str) -> set[str]:
        """Ids of every node that depends, directly or not, on ``nid``."""
        children: dict[str, list[str]] = {}
        for a, b in self.edges():
            children.setdefault(a, []).append(b)
        seen: set[str] = set()
        todo = list(children.get(nid, []))
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(children.get(n, []))
        return seen

    def topological_order(self) -> list[str]:
        """Node ids, each after everything it depends on; GraphError on a cycle."""
        deps: dict[str, set[str]] = {nid: set() for nid in self.nodes}
        for a, b in self.edges():
            deps[b].add(a)
        order: list[str] = []
        while deps:
            ready = sorted(n for n, d in deps.items() if not d)
            if not ready:
                raise GraphError(f"the graph has a cycle among: {', '.join(sorted(deps))}")
            for n in ready:
                order.append(n)
                del deps[n]
            for d in deps.values():
                d.difference_update(ready)
        return order

    # -- validation -------------------------------------------------------------------------

    def validate(self, worker_resources: Iterable[dict[str, float]] | None = None) -> None:
        """Check the graph before anything runs.

        Raises GraphError for a dataset no node produces and no source gives, or a cycle;
        ResourceError for a node needing GPUs when no worker of the pool offers one.
        """
        if not self.nodes:
            raise GraphError("the graph has no nodes")
        prod = self.producers()
        for n in self.nodes.values():
            for name, key in n.inputs.items():
                if key not in prod and key not in self.sources and key not in self.external:
                    raise GraphError(
                        f"{n.id} needs {key}, but no node produces it and no source gives it; "
                        f"add the node that makes {name!r} or give a source URL for it"
                    )
        self.topological_order()
        if worker_resources is not None:
            most_gpus = max((w.get("GPU", 0) for w in worker_resources), default=0)
            for n in self.nodes.values():
                need = n.make_task().resources().gpus
                if need > most_gpus:
                    raise ResourceError(
                        f"{n.id} needs {need} GPU(s) but no worker of the pool advertises one "
                        f"(most found: {most_gpus:g}); add a GPU worker (neuropool worker --gpus 1) "
                        "or choose a CPU sorter in the config"
                    )

    # -- subsets ----------------------------------------------------------------------------

    def subset(self, *, until: str | None = None, only: Iterable[str] | None = None) -> Graph:
        """A graph restricted to some tasks.

        ``until="preprocess"`` keeps that task and everything it depends on; ``only=["qc"]``
        keeps just those tasks (their inputs must then already be committed: the runner reads
        them from the asset).
        """
        keep = set(self.nodes)
        if until is not None:
            targets = [nid for nid, n in self.nodes.items() if n.task == until]
            if not targets:
                raise GraphError(f"--until {until!r}: no such task in the graph ({self.task_names()})")
            keep = set(targets)
            todo = list(targets)
            while todo:
                for up in self.upstream(todo.pop()):
                    if up not in keep:
                        keep.add(up)
                        todo.append(up)
        if only is not None:
            only = set(only)
            unknown = only - {n.task for n in self.nodes.values()}
            if unknown:
                raise GraphError(f"--only: unknown task(s) {sorted(unknown)} ({self.task_names()})")
            keep &= {nid for nid, n in self.nodes.items() if n.task in only}
        sub = Graph(self.sources)
        sub.session = dict(self.session)
        for nid in self.topological_order():
            if nid in keep:
                sub.nodes[nid] = self.nodes[nid]
        # datasets produced by dropped nodes become external: the runner finds them committed
        prod = self.producers()
        sub.external = {k: prod[k] for n in sub.nodes.values() for k in n.inputs.values()
                        if k in prod and prod[k] not in keep}
        return sub

    def task_names(self) -> str:
        """Comma-separated names of the tasks in the graph, in order."""
        seen: list[str] = []
        for nid in self.topological_order():
            if self.nodes[nid].task not in seen:
                seen.append(self.nodes[nid].task)
        return ", ".join(seen)

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data: nodes, edges, sources and session facts."""
        return {
            "nodes": [
                {"id": n.id, "task": n.task, "probe": n.probe, "params": n.params,
                 "retries": n.retries, "optional": list(n.optional), "version": get_task(n.task).version,
                 "inputs": n.inputs, "outputs": n.outputs}
                for n in (self.nodes[i] for i in self.topological_order())
            ],
            "edges": [list(e) for e in self.edges()],
            "sources": dict(self.sources),
            "session": dict(self.session),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Graph:
        """Rebuild a graph from :meth:`to_dict`'s output (validating every node again)."""
        g = cls(data.get("sources", {}))
        g.session = dict(data.get("session", {}))
        for n in data["nodes"]:
            g.add(n["task"], n["probe"], n.get("params", {}), n.get("retries", 2), n.get("optional", ()))
        return g

    def to_json(self) -> str:
        """The graph as a JSON string."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Graph:
        """Rebuild a graph from :meth:`to_json`'s output."""
        return cls.from_dict(json.loads(text))
