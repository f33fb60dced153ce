"""Derived assets: where results live, and when they count.

A derived asset is a folder named after its source (``<source>_<label>_<date>_<time>``, see
:mod:`neuropool.io.spec`) next to, never inside, the raw data. It holds one folder per probe with
the datasets, ``data_description.json``, ``processing.json`` and a ``_commits/`` folder.

Commit protocol. A node's outputs count only once its commit marker
(``_commits/<node>.json``) exists; the marker is written last, in one piece. Before a node
rewrites its outputs its old marker is removed first, so a crash at any point leaves either the
old committed result, or an uncommitted one that the next run redoes, never a half-written result
that looks complete. ``processing.json`` is regenerated from the markers, so it always tells
exactly what is committed. A node whose last attempt failed has a record in ``_failures/``
(removed when it is attempted again), which ``neuropool status`` reads.
"""

from __future__ import annotations

import getpass
import json
import posixpath
import socket
from contextlib import suppress
from datetime import datetime
from typing import Any

from neuropool import __version__
from neuropool.errors import StoreError
from neuropool.io import spec, urls

#: Longest error message and traceback kept in a failure record (characters).
MAX_FAILURE_CHARS = 20_000


def _marker_name(node_id: str) -> str:
    # brackets are glob characters for fsspec: keep marker names plain
    return node_id.replace("[", "__").replace("]", "") + ".json"


class DerivedAsset:
    """A derived asset folder, opened by URL.

    Parameters
    ----------
    url : str
        Location of the asset folder (local path, ``file://``, ``s3://``, ``memory://``).
    storage_options : dict, optional
        Passed to fsspec (credentials, ``endpoint_url``...). Never written to provenance.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return f"DerivedAsset({self.url!r})"

    @property
    def name(self) -> str:
        """The asset's folder name."""
        return urls.basename(self.url)

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        out_root: str,
        source_url: str,
        *,
        label: str = "processed",
        storage_options: dict[str, Any] | None = None,
        when: datetime | None = None,
    ) -> DerivedAsset:
        """Create a new asset for ``source_url`` under ``out_root`` and write its description."""
        source_name = urls.basename(source_url)
        _refuse_inside(out_root, source_url)
        name = spec.asset_name(source_name, label, when)
        asset = cls(urls.join(out_root, name), storage_options)
        if urls.exists(urls.join(asset.url, spec.DATA_DESCRIPTION), asset.storage_options):
            raise StoreError(f"{asset.url} already exists; refusing to overwrite its description")
        created = when or datetime.now()
        urls.write_json(
            urls.join(asset.url, spec.DATA_DESCRIPTION),
            {
                "schema_version": "1",
                "name": name,
                "data_level": "derived",
                "modality": ["ecephys"],
                "process_name": label,
                "creation_time": created.isoformat(timespec="seconds"),
                "source_data": [source_name],
                "source_url": _public_url(source_url),
                "input_data_name": source_name,
                "created_by": getpass.getuser(),
                "software": {"name": "neuropool", "version": __version__},
            },
            asset.storage_options,
        )
        return asset

    @classmethod
    def find_latest(
        cls,
        out_root: str,
        source_url: str,
        *,
        label: str = "processed",
        storage_options: dict[str, Any] | None = None,
    ) -> DerivedAsset | None:
        """The most recent existing asset of ``source_url`` with ``label`` under ``out_root``."""
        fs, root = urls.get_fs(out_root, storage_options)
        if not fs.exists(root):
            return None
        source_name = urls.basename(source_url)
        found = []
        for entry in fs.ls(root, detail=False):
            parsed = spec.parse_asset_name(posixpath.basename(entry.rstrip("/")))
            if parsed and parsed["source"] == source_name and parsed["label"] == label:
                found.append(posixpath.basename(entry.rstrip("/")))
        if not found:
            return None
        return cls(urls.join(out_root, max(found)), storage_options)

    @classmethod
    def open_or_create(
        cls,
        out_root: str,
        source_url: str,
        *,
        label: str = "processed",
        storage_options: dict[str, Any] | None = None,
    ) -> DerivedAsset:
        """Resume the latest asset of this source and label, or create a new one."""
        existing = cls.find_latest(out_root, source_url, label=label, storage_options=storage_options)
        if existing is not None:
            return existing
        return cls.create(out_root, source_url, label=label, storage_options=storage_options)

    # -- datasets -------------------------------------------------------------------------

    def dataset_url(self, name: str, probe: str) -> str:
        """URL of dataset ``name`` of ``probe`` inside this asset (committed or not).

        The ALF export (``alf``) lives in the asset's ONE session tree,
        ``<subject>/<date>/<number>/alf/<probe>`` (:func:`neuropool.io.spec.one_session_path`).
        """
        if name == "alf":
            return urls.join(self.url, spec.one_session_path(self.name), spec.alf_collection(probe))
        return urls.join(self.url, spec.dataset_path(name, probe))

    def clear(self, url: str) -> None:
        """Remove an output location inside this asset before a task rewrites it."""
        if not url.startswith(self.url + "/"):
            raise StoreError(f"refusing to remove {url}: it is outside the asset {self.url}")
        urls.remove(url, self.storage_options)

    # -- commits --------------------------------------------------------------------------

    def _marker(self, node_id: str) -> str:
        return urls.join(self.url, spec.COMMITS_DIR, _marker_name(node_id))

    def read_commit(self, node_id: str) -> dict[str, Any] | None:
        """The commit record of ``node_id``, or None if it is not committed."""
        if not urls.exists(self._marker(node_id), self.storage_options):
            return None
        return urls.read_json(self._marker(node_id), self.storage_options)

    def uncommit(self, node_id: str) -> None:
        """Withdraw a node's commit: its outputs stop counting (do this before rewriting them)."""
        urls.remove(self._marker(node_id), self.storage_options)

    def commit(self, node_id: str, record: dict[str, Any]) -> None:
        """Mark a node's outputs complete. Call only after every output is fully written."""
        urls.write_json(self._marker(node_id), {"node": node_id, **record}, self.storage_options)

    def commits(self) -> dict[str, dict[str, Any]]:
        """Every commit record in the asset, by node id."""
        fs, path = urls.get_fs(urls.join(self.url, spec.COMMITS_DIR), self.storage_options)
        if not fs.exists(path):
            return {}
        out = {}
        for entry in sorted(fs.ls(path, detail=False)):
            if entry.endswith(".json"):
                rec = urls.read_json(_with_protocol(self.url, entry), self.storage_options)
                out[rec["node"]] = rec
        return out

    # -- failures ---------------------------------------------------------------------------

    def _failure_record(self, node_id: str) -> str:
        return urls.join(self.url, spec.FAILURES_DIR, _marker_name(node_id))

    def record_failure(self, node_id: str, error: str, traceback: str | None = None) -> bool:
        """Record that ``node_id``'s last attempt failed (``_failures/<node>.json``): the error,
        the end of its traceback, when and where. Returns whether it was written; never raises,
        since bookkeeping must not fail a run."""
        record = {"node": node_id, "error": error[:MAX_FAILURE_CHARS],
                  "traceback": (traceback or "")[-MAX_FAILURE_CHARS:],
                  "time": datetime.now().isoformat(timespec="seconds"),
                  "host": socket.gethostname()}
        try:
            urls.write_json(self._failure_record(node_id), record, self.storage_options)
        except Exception:  # noqa: BLE001 - bookkeeping only
            return False
        return True

    def forget_failure(self, node_id: str) -> None:
        """Remove ``node_id``'s failure record (it is being attempted again). Never raises."""
        with suppress(Exception):  # bookkeeping only
            urls.remove(self._failure_record(node_id), self.storage_options)

    def failures(self) -> dict[str, dict[str, Any]]:
        """Every failure record, by node id (``node``, ``error``, ``traceback``, ``time``,
        ``host``); empty when no node's last attempt failed."""
        fs, path = urls.get_fs(urls.join(self.url, spec.FAILURES_DIR), self.storage_options)
        try:
            entries = sorted(fs.ls(path, detail=False)) if fs.exists(path) else []
        except FileNotFoundError:
            return {}
        out = {}
        for entry in entries:
            if entry.endswith(".json"):
                try:
                    with fs.open(entry, "rb") as f:
                        rec = json.loads(f.read().decode())
                except (OSError, ValueError):  # half-written or vanished meanwhile
                    continue
                out[rec["node"]] = rec
        return out

    # -- provenance -----------------------------------------------------------------------

    def write_processing(self, graph: dict[str, Any],
                         commits: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Regenerate ``processing.json`` from the commit markers and the graph that ran.

        ``commits`` may give the markers' content when the caller already holds it (the runner
        does), to avoid reading every marker again.
        """
        commits = self.commits() if commits is None else commits
        processes = sorted(commits.values(), key=lambda r: r.get("start_date_time", ""))
        doc = {
            "schema_version": "1",
            "processing_pipeline": {
                "name": "neuropool",
                "pipeline_version": __version__,
                "data_processes": processes,
            },
            "dependency_graph": graph,
        }
        urls.write_json(urls.join(self.url, spec.PROCESSING), doc, self.storage_options)
        return doc

    def read_processing(self) -> dict[str, Any]:
        """The asset's ``processing.json``."""
        return urls.read_json(urls.join(self.url, spec.PROCESSING), self.storage_options)

    def read_description(self) -> dict[str, Any]:
        """The asset's ``data_description.json``."""
        return urls.read_json(urls.join(self.url, spec.DATA_DESCRIPTION), self.storage_options)


def _with_protocol(reference: str, path: str) -> str:
    """Give a bare path returned by ``fs.ls`` the protocol of ``reference``."""
    if "://" in reference and "://" not in path:
        return reference.split("://", 1)[0] + "://" + path.lstrip("/")
    return path


def _public_url(url: str) -> str:
    """A URL with any ``user:password@`` part removed, fit for provenance."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        proto, rest = url.split("://", 1)
        return f"{proto}://{rest.split('@', 1)[1]}"
    return url


def _refuse_inside(out_root: str, source_url: str) -> None:
    """Derived data go next to the raw data, never inside the raw session folder."""
    src = source_url.rstrip("/")
    src_dir = src if not posixpath.splitext(src)[1] else urls.parent(src)
    root = out_root.rstrip("/")
    if root == src_dir or root.startswith(src_dir + "/"):
        raise StoreError(
            f"output {out_root!r} is inside the raw session {src_dir!r}; raw data are never "
            "written to: choose an output folder next to it (the default is its parent)"
        )
