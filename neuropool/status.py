"""What a derived asset holds: each node of its graph, committed, failed or not run.

:func:`asset_status` reads only the asset's bookkeeping: the graph of the last run (in
``processing.json``), the commit markers (``_commits/``) and the failure records (``_failures/``,
written by the runner when a node fails and removed when the node is attempted again). Each node
is in one of these states:

``committed``
    Its commit marker exists: its outputs are complete. Whether it is still *current* (a run
    with the recorded parameters would skip it: same task version, parameters and inputs, the raw
    files' size and date included) is checked from fingerprints, without reading any data.
``failed``
    Its last attempt failed; the record quotes the error.
``not run``
    An upstream node is not committed, so it cannot have run since.
``not committed``
    Everything it needs is committed but it is not. The runner records no starts, so it is
    running now, was interrupted, or was never started (``--until``).

:func:`resolve_asset` finds the asset from its URL or, as ``neuropool run`` does, from a session.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from neuropool.errors import SourceNotFoundError, UnknownFormatError
from neuropool.io import spec, urls
from neuropool.io.store import DerivedAsset

COMMITTED, FAILED, NOT_RUN, NOT_COMMITTED = "committed", "failed", "not run", "not committed"
#: Node states, as :func:`asset_status` reports them.
STATES = (COMMITTED, FAILED, NOT_COMMITTED, NOT_RUN)

NO_STARTS = ("the runner records no starts: running now, interrupted, or not started "
             "(e.g. left out by --until)")


# -- the asset's state ------------------------------------------------------------------------


@dataclass
class NodeStatus:
    """The state of one node of a derived asset (see the module docstring for the states)."""

    node: str
    state: str
    #: when it was committed (end of the run) or failed, ISO 8601
    when: str | None = None
    wall_s: float | None = None
    #: for a committed node: whether a run would skip it (None: not checked or not computable)
    current: bool | None = None
    #: the first line of a failed node's error
    error: str | None = None
    #: why a node is not committed, or why ``current`` is unknown
    detail: str | None = None


@dataclass
class AssetStatus:
    """Every node of a derived asset, in dependency order, per probe."""

    asset: str
    source: str | None
    nodes: list[NodeStatus]
    #: where the list of nodes comes from: ``processing.json``, ``session`` or ``commits``
    graph: str
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is at least one node and every node is committed."""
        return bool(self.nodes) and all(n.state == COMMITTED for n in self.nodes)

    def counts(self) -> dict[str, int]:
        """Number of nodes in each state (every state, zeros included)."""
        return {s: sum(n.state == s for n in self.nodes) for s in STATES}

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as ``neuropool status --json`` prints it."""
        return {"asset": self.asset, "source": self.source, "ok": self.ok, "graph": self.graph,
                "counts": self.counts(), "notes": list(self.notes),
                "nodes": [asdict(n) for n in self.nodes]}


def _split(nid: str) -> tuple[str, str]:
    task, _, probe = nid.partition("[")
    return task, probe.rstrip("]")


def _full_graph(recorded: dict[str, Any] | None, commits: dict[str, dict[str, Any]]) -> Any:
    """The recorded graph plus a node for each commit it lacks (from the commit's parameters).

    Datasets that no node produces get the URL a commit read them from, so fingerprints can be
    computed from the commit markers alone. Raises when a node cannot be rebuilt.
    """
    from neuropool.graphs.graph import Graph, dataset_key
    from neuropool.tasks import get_task

    recorded = recorded or {}
    graph = Graph(recorded.get("sources", {}))
    graph.session = dict(recorded.get("session", {}))
    for n in recorded.get("nodes", []):
        graph.add(n["task"], n["probe"], n.get("params", {}), n.get("retries", 2), n.get("optional", ()))
    for nid, rec in sorted(commits.items()):
        if nid not in graph.nodes:
            task, probe = _split(nid)
            optional = [d for d in rec.get("inputs", {}) if d in get_task(task).optional_inputs]
            graph.add(task, probe, rec.get("parameters", {}), optional=optional)
    produced = graph.producers()
    for nid, rec in commits.items():
        for name, url in rec.get("inputs", {}).items():
            key = dataset_key(name, _split(nid)[1])
            if key not in produced:
                graph.sources.setdefault(key, url)
    return graph


def _currency(graph: Any, asset: DerivedAsset, committed: set[str]) -> dict[str, bool | str]:
    """Per committed node: whether its commit has its current fingerprint, or why unknown."""
    from neuropool.cluster.local import InProcessPool
    from neuropool.graphs.runner import Execution

    execution = Execution(graph, asset, InProcessPool(gpus=0), None)
    out: dict[str, bool | str] = {}
    for nid in graph.topological_order():
        try:
            fingerprint = execution.fingerprint(nid)
        except Exception as e:  # noqa: BLE001 - unknown, not an error of the status
            out[nid] = f"cannot tell whether it is current: {type(e).__name__}: {e}".splitlines()[0]
            continue
        if nid in committed:
            out[nid] = execution.commits.get(nid, {}).get("fingerprint") == fingerprint
    return out


def _by_probe(nodes: list[str]) -> list[str]:
    """``nodes`` (in dependency order) grouped by probe, keeping that order within a probe."""
    rank = {nid: i for i, nid in enumerate(nodes)}
    return sorted(nodes, key=lambda nid: (_split(nid)[1], rank[nid]))


def asset_status(asset: DerivedAsset, *, fallback_graph: dict[str, Any] | None = None,
                 check_current: bool = True) -> AssetStatus:
    """The state of every node of ``asset``.

    Parameters
    ----------
    asset : DerivedAsset
        The asset (its ``data_description.json`` must exist).
    fallback_graph : dict, optional
        The graph to show (as :meth:`Graph.to_dict`) when the asset has no ``processing.json``
        yet (the runner writes it at a run's first commit and at its end).
    check_current : bool
        Compute whether each committed node is still current. Costs importing every task of
        the graph and a look at the raw files' size and date; nothing else is read.

    Returns
    -------
    AssetStatus
    """
    try:
        source = asset.read_description().get("source_url")
    except SourceNotFoundError:
        raise SourceNotFoundError(f"{asset.url}: not a derived asset (it has no "
                                  f"{spec.DATA_DESCRIPTION})") from None
    notes: list[str] = []
    try:
        recorded = asset.read_processing().get("dependency_graph") or None
    except SourceNotFoundError:
        recorded = None
    graph_from = "processing.json"
    if recorded is None:
        what = f"{asset.url} has no {spec.PROCESSING} yet (the runner writes it at a run's first commit and at its end)"
        if fallback_graph is not None:
            recorded, graph_from = fallback_graph, "session"
            notes.append(what + "; showing the standard graph of the session")
        else:
            graph_from = "commits"
            notes.append(what + "; showing only what is committed or failed")
    recorded = recorded or {"nodes": [], "edges": []}
    commits = asset.commits()
    failures = asset.failures()

    order = [n["id"] for n in recorded.get("nodes", [])]
    edges = [list(e) for e in recorded.get("edges", [])]
    currency: dict[str, bool | str] = {}
    try:
        graph = _full_graph(recorded, commits)
    except Exception as e:  # noqa: BLE001 - show what is known without the extra nodes
        graph = None
        if commits:
            notes.append(f"cannot rebuild the graph, so currency is not checked: {type(e).__name__}: {e}".splitlines()[0])
    if graph is not None:
        order = graph.topological_order()
        edges = [list(e) for e in graph.edges()]
        if check_current and commits:
            currency = _currency(graph, asset, set(commits))
    order += [nid for nid in [*sorted(commits), *sorted(failures)] if nid not in order]
    ups: dict[str, list[str]] = {nid: [] for nid in order}
    for a, b in edges:
        if b in ups:
            ups[b].append(a)

    by_id: dict[str, NodeStatus] = {}
    for nid in order:  # dependency order: a node's upstream states are known before it
        by_id[nid] = _node_status(nid, commits.get(nid), failures.get(nid), currency.get(nid),
                                  [by_id[u] for u in ups[nid] if u in by_id])
    result = AssetStatus(asset.url, source, [by_id[nid] for nid in _by_probe(order)], graph_from, notes)
    if result.counts()[NOT_COMMITTED]:
        notes.append(f"'{NOT_COMMITTED}': {NO_STARTS}")
    return result


def _node_status(nid: str, commit: dict[str, Any] | None, failure: dict[str, Any] | None,
                 current: bool | str | None, ups: list[NodeStatus]) -> NodeStatus:
    # the runner removes a node's failure record when it attempts it again, so a record beside a
    # commit is newer than it (a failure before the old commit was withdrawn)
    if failure is not None and (commit is None or failure.get("time", "") >= commit.get("end_date_time", "")):
        first = (failure.get("error") or "").strip().splitlines()
        return NodeStatus(nid, FAILED, when=failure.get("time"), error=first[0] if first else "")
    if commit is not None:
        status = NodeStatus(nid, COMMITTED, when=commit.get("end_date_time"), wall_s=commit.get("wall_s"))
        if isinstance(current, bool):
            status.current = current
            if not current:
                up = next((u for u in ups if u.state != COMMITTED or u.current is False), None)
                why = ("its task version, parameters or inputs changed since" if up is None else
                       f"upstream {up.node} changed since" if up.state == COMMITTED else
                       f"upstream {up.node} is {up.state}")
                status.detail = f"{why}: a run would redo it"
        elif current is not None:
            status.detail = current
        return status
    for up in ups:
        if up.state == FAILED:
            return NodeStatus(nid, NOT_RUN, detail=f"upstream {up.node} failed")
        if up.state != COMMITTED:
            return NodeStatus(nid, NOT_RUN, detail=up.detail if up.state == NOT_RUN and up.detail
                              else f"upstream {up.node} is {up.state}")
    return NodeStatus(nid, NOT_COMMITTED)


def _when(iso: str | None) -> str:
    return "" if not iso else iso.replace("T", " ")[:19]


def render_status(status: AssetStatus) -> str:
    """The status as text for the terminal: a table of the nodes, counts and notes.

    Parameters
    ----------
    status : AssetStatus
        What :func:`asset_status` returned.

    Returns
    -------
    str
    """
    lines = [f"Derived asset: {status.asset}"]
    if status.source:
        lines.append(f"Source:        {status.source}")
    lines.append("")
    if not status.nodes:
        lines.append("No node is committed or recorded as failed, and no graph is recorded.")
    else:
        width = max(22, *(len(n.node) for n in status.nodes))
        lines.append(f"  {'node':<{width}} {'state':<13} {'when':<19} {'wall':>9}  {'current':<7}  detail")
        for n in status.nodes:
            wall = "" if n.wall_s is None else f"{n.wall_s:7.1f} s"
            current = {True: "yes", False: "NO", None: ""}[n.current]
            detail = n.error or n.detail or ""
            lines.append(f"  {n.node:<{width}} {n.state:<13} {_when(n.when):<19} {wall:>9}  "
                         f"{current:<7}  {detail[:300]}".rstrip())
    counts = status.counts()
    stale = sum(n.current is False for n in status.nodes)
    parts = [f"{counts[COMMITTED]} of {len(status.nodes)} node(s) committed"
             + (f" ({stale} no longer current)" if stale else "")]
    parts += [f"{counts[s]} {s}" for s in (FAILED, NOT_COMMITTED, NOT_RUN) if counts[s]]
    lines += ["", ", ".join(parts) + "."]
    lines += [f"Note: {note}" for note in status.notes]
    return "\n".join(lines)


# -- finding the asset ------------------------------------------------------------------------


def resolve_asset(target: str, *, out: str | None = None,
                  config: str | None = None) -> tuple[DerivedAsset, dict[str, Any] | None]:
    """The derived asset that ``target`` names, and the standard graph when it names a session.

    Parameters
    ----------
    target : str
        A derived asset's URL, or a session (folder or recording file) whose latest asset is
        found as ``neuropool run`` resumes it.
    out : str, optional
        For a session: the folder holding its assets (default: the folder holding the session).
    config : str, optional
        For a session: the pipeline config whose label names its assets.

    Returns
    -------
    (DerivedAsset, dict or None)
        The asset, and for a session its standard graph (:meth:`Graph.to_dict`).

    Raises
    ------
    SourceNotFoundError
        When ``target`` does not exist, or the session has no derived asset there.
    UnknownFormatError
        When ``target`` is neither a derived asset nor a session.
    """
    target = target.rstrip("/") or target
    if urls.exists(urls.join(target, spec.DATA_DESCRIPTION)):
        return DerivedAsset(target), None
    if not urls.exists(target):
        raise SourceNotFoundError(f"{target}: no such derived asset, session folder or file")
    if spec.parse_asset_name(urls.basename(target)):
        raise SourceNotFoundError(f"{target}: named like a derived asset, but it has no "
                                  f"{spec.DATA_DESCRIPTION}, so it is not one (or not yet)")
    from neuropool.graphs import load_config, standard_graph
    from neuropool.io.session import open_session

    cfg = load_config(config)
    try:
        session = open_session(target)
    except UnknownFormatError as e:
        raise UnknownFormatError(f"{target}: neither a derived asset (no {spec.DATA_DESCRIPTION}) "
                                 f"nor a session: {e}") from None
    fs, path = urls.get_fs(session.url)
    session_dir = session.url if fs.isdir(path) else urls.parent(session.url)
    out_root = out or urls.parent(session_dir)
    asset = DerivedAsset.find_latest(out_root, session.url, label=cfg.label)
    if asset is None:
        raise SourceNotFoundError(
            f"{target}: no derived asset of this session (label {cfg.label!r}) under {out_root}; "
            f"process it with `neuropool run {target}`, or give --out where its assets are")
    return asset, standard_graph(session, cfg).to_dict()
