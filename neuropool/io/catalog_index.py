"""The index behind :mod:`neuropool.catalogs`: derived assets found under a root, from their sidecars.

Finding assets. A folder whose name is a derived asset name (``<source>_<label>_<date>_<time>``,
:func:`neuropool.io.spec.parse_asset_name`) at most ``depth`` levels below the root is an asset;
its id is its path relative to the root, with ``/`` separators
(``mouse1_2026-11-21_001_processed_2026-11-22_13-00-04``, or
``mouse1/2026-11-21/001_processed_2026-11-22_13-00-04`` where assets sit beside IBL-style session
folders). Assets are not searched inside other assets, ``*.zarr`` stores or hidden folders.

What is read. Only the sidecars: ``data_description.json``, ``processing.json`` and, where
``processing.json`` does not already hold exactly the committed nodes, the commit markers in
``_commits/``. A dataset counts only if the node that wrote it is committed.

Incremental refresh. The index is kept in ``<root>/.neuropool-catalog.pqt``, one row per asset
with a signature: a hash of the name, size and modification stamp (S3 ``ETag``, else ``mtime``,
``LastModified`` or ``created``, as fsspec's listing gives them) of the two sidecars and of every
commit marker. A refresh lists each asset folder and its ``_commits/`` folder (two listings, no
reads) and re-reads only the assets whose signature changed; new assets are added and vanished ones
dropped. Where the root is not writable the index stays in this process's memory, with a warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from neuropool.errors import NeuropoolError, SourceNotFoundError, StoreError
from neuropool.io import spec, urls
from neuropool.io.store import DerivedAsset, _marker_name

#: The index file, at the top of the root.
INDEX_NAME = ".neuropool-catalog.pqt"
#: Bumped when the index's columns change: an index of another version is rebuilt.
INDEX_VERSION = 1
#: How many folder levels below the root assets are looked for by default.
DEFAULT_DEPTH = 3
#: Concurrent listings and reads (object stores answer each in tens of milliseconds).
_THREADS = 16
#: Indexes of roots that could not be written, kept for the life of the process.
_MEMORY: dict[str, dict[str, AssetEntry]] = {}

_PROBE_IN_NODE = re.compile(r"\[(probe\d{2})\]")
_ONE_SOURCE = re.compile(r"^(?P<subject>[\w.-]+?)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<number>\d{1,3})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FILE_EXTENSIONS = (".npy", ".pqt", ".parquet", ".csv", ".json")


@dataclass(frozen=True)
class DatasetEntry:
    """One committed dataset of an asset.

    ``kind`` is ``alf`` (a file of the probe's ALF collection), ``file`` (a single ALF-named file
    in the probe folder, e.g. ``_iblqc_ephysTimeRmsAP.rms``), ``store`` (a zarr store: ``raw``,
    ``preprocessed``...) or ``folder`` (any other output folder: ``ephys.sorting``, ``nwb``...).
    ``path`` is relative to the asset; ``alias`` is the pipeline's dataset name of the output it
    belongs to (``ephys.preprocessed``, ``alf``).
    """

    probe: str
    name: str
    kind: str
    path: str
    alias: str


@dataclass
class AssetEntry:
    """What the index knows of one derived asset (see :mod:`neuropool.io.catalog_index`)."""

    id: str
    name: str
    subject: str
    date: str
    created: str
    label: str
    source: str
    source_url: str
    probes: list[str]
    committed: list[str]
    nodes: list[str]
    signature: str
    datasets: list[DatasetEntry] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """Plain data, for the index file and for ``--json``."""
        out = asdict(self)
        out["datasets"] = [asdict(d) for d in self.datasets]
        return out


@dataclass
class Refresh:
    """What one refresh did: ids re-read, kept, dropped; skipped assets and why; notes to warn."""

    read: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    written: bool = False


class _Skip(Exception):
    """An asset that cannot be indexed; the message names the file and says why."""


def read_json(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    """Read one sidecar (every read of the index goes through here)."""
    return urls.read_json(url, storage_options)


# -- the whole root ---------------------------------------------------------------------------


def refresh(root: str, storage_options: dict[str, Any] | None = None, *,
            depth: int = DEFAULT_DEPTH) -> tuple[dict[str, AssetEntry], Refresh]:
    """Bring the index of ``root`` up to date and return its assets by id and what was done.

    Raises
    ------
    SourceNotFoundError
        ``root`` does not exist.
    StoreError
        ``root`` cannot be listed (no such bucket, no network, no permission).
    """
    root = root.rstrip("/")
    fs, root_path = urls.get_fs(root, storage_options)
    report = Refresh()
    found = discover(fs, root, root_path, depth)
    previous, saved = _load(root, fs, root_path, report)

    def scan(item: tuple[str, str]) -> tuple[str, AssetEntry | None, bool, str | None]:
        asset_id, path = item
        try:
            entry, reread = scan_asset(fs, root, asset_id, path, storage_options, previous.get(asset_id))
            return asset_id, entry, reread, None
        except _Skip as e:
            return asset_id, None, True, str(e)

    with ThreadPoolExecutor(max_workers=max(1, min(_THREADS, len(found)))) as pool:
        results = list(pool.map(scan, sorted(found.items())))
    assets: dict[str, AssetEntry] = {}
    for asset_id, entry, reread, problem in results:
        if problem is not None:
            report.skipped[asset_id] = problem
            report.warnings.append(problem)
        elif entry is not None:
            assets[asset_id] = entry
            (report.read if reread else report.kept).append(asset_id)
    report.dropped = sorted(set(previous) - set(found))
    changed = bool(report.read or report.dropped) or set(previous) != set(assets)
    if changed or not saved:
        report.written = _save(root, fs, root_path, assets, report)
    return assets, report


def discover(fs: Any, root: str, root_path: str, depth: int) -> dict[str, str]:
    """Asset id -> fsspec path of every derived asset folder at most ``depth`` levels down."""
    found: dict[str, str] = {}
    level = [("", root_path)]
    for d in range(max(1, depth)):
        below = []
        for rel, path in level:
            try:
                entries = _ls(fs, path)
            except FileNotFoundError as e:
                if d == 0:
                    raise SourceNotFoundError(f"{root}: no such folder; check the URL (and the "
                                              "storage options, for an object store)") from e
                continue  # vanished while we looked
            except Exception as e:  # noqa: BLE001 - botocore, aiohttp, OS errors: say which root
                if d == 0:
                    raise StoreError(f"cannot list {root}: {type(e).__name__}: {e} (check the URL, "
                                     "the network and the credentials)") from e
                raise
            if d == 0 and [i.get("type") for i in entries] == ["file"] and \
                    entries[0]["name"].rstrip("/") == path.rstrip("/"):
                raise SourceNotFoundError(f"{root} is a file; give the folder holding derived assets")
            for info in entries:
                name = posixpath.basename(info["name"].rstrip("/"))
                if info.get("type") != "directory" or name.startswith(".") or name.endswith(".zarr"):
                    continue
                child = f"{rel}/{name}" if rel else name
                if spec.parse_asset_name(name):
                    found[child] = info["name"].rstrip("/")
                else:
                    below.append((child, info["name"].rstrip("/")))
        level = below
    return found


# -- one asset --------------------------------------------------------------------------------


def scan_asset(fs: Any, root: str, asset_id: str, path: str, storage_options: dict[str, Any] | None,
               previous: AssetEntry | None) -> tuple[AssetEntry, bool]:
    """The index entry of one asset, and whether its sidecars had to be read (changed or new).

    Raises ``_Skip`` naming the file when a sidecar is missing or unreadable.
    """
    url = urls.join(root, asset_id)
    listing = {posixpath.basename(i["name"].rstrip("/")): i for i in _ls(fs, path)}
    markers: dict[str, dict[str, Any]] = {}
    if listing.get(spec.COMMITS_DIR, {}).get("type") == "directory":
        markers = {posixpath.basename(i["name"]): i for i in _ls(fs, f"{path}/{spec.COMMITS_DIR}")
                   if i["name"].endswith(".json") and i.get("type") == "file"}
    sidecars = {n: listing[n] for n in (spec.DATA_DESCRIPTION, spec.PROCESSING) if n in listing}
    signature = _signature(sidecars, markers)
    if previous is not None and previous.signature == signature:
        return previous, False
    return read_asset(url, asset_id, sidecars, markers, signature, storage_options), True


def read_asset(url: str, asset_id: str, sidecars: dict[str, dict[str, Any]],
               markers: dict[str, dict[str, Any]], signature: str,
               storage_options: dict[str, Any] | None) -> AssetEntry:
    """Read an asset's sidecars (and, when needed, its commit markers) into an index entry."""
    name = posixpath.basename(asset_id)
    parsed = spec.parse_asset_name(name) or {}
    if spec.DATA_DESCRIPTION not in sidecars:
        raise _Skip(f"{urls.join(url, spec.DATA_DESCRIPTION)}: missing, so {asset_id} is not indexed "
                    "(every derived asset has one; an asset made by hand needs one too)")
    description = _read(urls.join(url, spec.DATA_DESCRIPTION), storage_options, asset_id)
    processing: dict[str, Any] = {}
    if spec.PROCESSING in sidecars:
        processing = _read(urls.join(url, spec.PROCESSING), storage_options, asset_id)
    elif markers:
        raise _Skip(f"{urls.join(url, spec.PROCESSING)}: missing although {len(markers)} node(s) are "
                    f"committed, so {asset_id} is not indexed; running the session again rewrites it")
    if not isinstance(description, dict) or not isinstance(processing, dict):
        raise _Skip(f"{url}: a sidecar is not a JSON object, so {asset_id} is not indexed")
    commits = _commits(url, asset_id, processing, sidecars.get(spec.PROCESSING), markers, storage_options)
    graph = processing.get("dependency_graph") or {}
    nodes = {n.get("id") for n in graph.get("nodes", []) if isinstance(n, dict) and n.get("id")}
    probes = set((graph.get("session") or {}).get("probes") or {})
    probes |= {n["probe"] for n in graph.get("nodes", []) if isinstance(n, dict) and n.get("probe")}
    datasets: list[DatasetEntry] = []
    for node, record in commits.items():
        m = _PROBE_IN_NODE.search(node)
        if m is None:
            continue
        probes.add(m.group(1))
        datasets += _datasets(url, name, m.group(1), record, storage_options)
    subject, date = _subject_date(asset_id, parsed)
    created = str(description.get("creation_time") or f"{parsed.get('date')}T{parsed.get('time', '').replace('-', ':')}")
    return AssetEntry(
        id=asset_id, name=name, subject=subject, date=date, created=created,
        label=parsed.get("label") or str(description.get("process_name", "")),
        source=str(description.get("input_data_name") or parsed.get("source", "")),
        source_url=str(description.get("source_url", "")),
        probes=sorted(p for p in probes if isinstance(p, str)), committed=sorted(commits),
        nodes=sorted(nodes | set(commits)), signature=signature,
        datasets=sorted(set(datasets), key=lambda d: (d.probe, d.kind, d.name)),
    )


def _commits(url: str, asset_id: str, processing: dict[str, Any], processing_info: dict[str, Any] | None,
             markers: dict[str, dict[str, Any]], storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The commit records: from ``processing.json`` when it lists exactly the markers present and
    is not older than any of them (it is rewritten after every commit), else from the markers."""
    listed = (processing.get("processing_pipeline") or {}).get("data_processes") or []
    records = {r["node"]: r for r in listed if isinstance(r, dict) and "node" in r}
    written = _timestamp(processing_info) if processing_info else None
    stamps = [_timestamp(i) for i in markers.values()]
    fresh = written is None or all(s is None or s <= written for s in stamps)
    if {_marker_name(n) for n in records} == set(markers) and fresh:
        return records
    out = {}
    for marker in sorted(markers):
        rec = _read(urls.join(url, spec.COMMITS_DIR, marker), storage_options, asset_id)
        if not isinstance(rec, dict) or "node" not in rec:
            raise _Skip(f"{urls.join(url, spec.COMMITS_DIR, marker)}: not a commit record (no 'node'), "
                        f"so {asset_id} is not indexed")
        out[rec["node"]] = rec
    return out


def _datasets(url: str, name: str, probe: str, record: dict[str, Any],
              storage_options: dict[str, Any] | None) -> list[DatasetEntry]:
    """The datasets one committed node wrote for ``probe``."""
    out = []
    asset = DerivedAsset(url, storage_options)
    for dataset, where in (record.get("outputs") or {}).items():
        rel = _relative(str(where), name)
        if rel is None:
            try:
                rel = asset.dataset_url(dataset, probe)[len(asset.url) + 1:]
            except NeuropoolError:
                continue
        base = posixpath.basename(rel)
        if dataset == "alf":
            files = (record.get("summary") or {}).get("datasets")
            if not isinstance(files, list):
                files = _list_files(urls.join(url, rel), storage_options)
            out += [DatasetEntry(probe, _strip_extension(f), "alf", f"{rel}/{f}", "alf")
                    for f in files if isinstance(f, str) and "." in f]
        elif base.endswith(".zarr"):
            out.append(DatasetEntry(probe, base[: -len(".zarr")], "store", rel, dataset))
        elif base.endswith(_FILE_EXTENSIONS):
            out.append(DatasetEntry(probe, _strip_extension(base), "file", rel, dataset))
        else:
            out.append(DatasetEntry(probe, dataset, "folder", rel, dataset))
    return out


def _relative(where: str, name: str) -> str | None:
    """The part of a recorded output URL after the asset's folder (the asset may have moved)."""
    marker = f"/{name}/"
    i = where.rfind(marker)
    return where[i + len(marker):].rstrip("/") if i >= 0 else None


def _strip_extension(filename: str) -> str:
    """``spikes.times.npy`` -> ``spikes.times``."""
    return filename.rsplit(".", 1)[0] if filename.count(".") >= 2 or filename.endswith(_FILE_EXTENSIONS) else filename


def _subject_date(asset_id: str, parsed: dict[str, str]) -> tuple[str, str]:
    """Subject and session date: from a source named ``<subject>_<date>_<number>``; else from
    ``<subject>/<date>/`` folders above an asset of a numbered session (``001``); else the source
    is the subject and the asset's creation date the date (as in the ALF export's ONE tree)."""
    source = parsed.get("source", "")
    m = _ONE_SOURCE.match(source)
    if m:
        return m["subject"], m["date"]
    parts = asset_id.split("/")
    if re.fullmatch(r"\d{1,3}", source) and len(parts) >= 3 and _DATE.match(parts[-2]):
        return parts[-3], parts[-2]
    return re.sub(r"[^\w.-]", "-", source), parsed.get("date", "")


# -- the index file ---------------------------------------------------------------------------


def _load(root: str, fs: Any, root_path: str, report: Refresh) -> tuple[dict[str, AssetEntry], bool]:
    """The index as last saved (this process's memory first, for a root it could not write),
    and whether it is there as it should be (else it is written even if nothing changed)."""
    if root in _MEMORY:
        return dict(_MEMORY[root]), True
    path = f"{root_path}/{INDEX_NAME}"
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return {}, False
    except Exception as e:  # noqa: BLE001 - an unreadable index is rebuilt, never fatal
        report.warnings.append(f"{urls.join(root, INDEX_NAME)}: cannot read it ({type(e).__name__}: {e}); "
                               "rebuilding the index")
        return {}, False
    try:
        return frame_to_entries(_read_parquet(data)), True
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign index is rebuilt
        report.warnings.append(f"{urls.join(root, INDEX_NAME)}: not a catalog index "
                               f"({type(e).__name__}: {e}); rebuilding it")
        return {}, False


def _save(root: str, fs: Any, root_path: str, assets: dict[str, AssetEntry], report: Refresh) -> bool:
    """Write the index file; where the root is not writable keep it in memory and say so."""
    buf = io.BytesIO()
    entries_to_frame(assets).to_parquet(buf, index=False)
    try:
        urls.write_whole(fs, f"{root_path}/{INDEX_NAME}", buf.getvalue())
    except (OSError, NotImplementedError) as e:
        _MEMORY[root] = dict(assets)
        report.warnings.append(f"{urls.join(root, INDEX_NAME)}: cannot write the catalog index "
                               f"({type(e).__name__}: {e}); keeping it in memory, so a new process "
                               "reads every asset's sidecars again")
        return False
    _MEMORY.pop(root, None)
    return True


def entries_to_frame(assets: dict[str, AssetEntry]) -> Any:
    """The index as a DataFrame, one row per asset (lists as JSON text)."""
    import pandas as pd

    rows = []
    for entry in assets.values():
        rec = entry.record()
        for key in ("probes", "committed", "nodes", "datasets"):
            rec[key] = json.dumps(rec[key])
        rec["index_version"] = INDEX_VERSION
        rows.append(rec)
    columns = [*AssetEntry.__dataclass_fields__, "index_version"]
    return pd.DataFrame(rows, columns=columns)


def frame_to_entries(frame: Any) -> dict[str, AssetEntry]:
    """Read back :func:`entries_to_frame`; an index of another version gives nothing."""
    out: dict[str, AssetEntry] = {}
    if len(frame) and set(frame["index_version"]) != {INDEX_VERSION}:
        return out
    for row in frame.to_dict("records"):
        row.pop("index_version")
        for key in ("probes", "committed", "nodes", "datasets"):
            row[key] = json.loads(row[key])
        row["datasets"] = [DatasetEntry(**d) for d in row["datasets"]]
        entry = AssetEntry(**{k: row[k] for k in AssetEntry.__dataclass_fields__})
        out[entry.id] = entry
    return out


def _read_parquet(data: bytes) -> Any:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(data))


# -- helpers ----------------------------------------------------------------------------------


def _ls(fs: Any, path: str) -> list[dict[str, Any]]:
    """A fresh listing with details (object-store filesystems cache listings per instance)."""
    fs.invalidate_cache(path)
    return fs.ls(path, detail=True)


def _read(url: str, storage_options: dict[str, Any] | None, asset_id: str) -> Any:
    try:
        return read_json(url, storage_options)
    except (NeuropoolError, OSError, UnicodeDecodeError) as e:
        why = str(e).removeprefix(f"{url}: ")
        raise _Skip(f"{url}: unreadable ({why}), so {asset_id} is not indexed; the other assets are") from e


def _list_files(url: str, storage_options: dict[str, Any] | None) -> list[str]:
    fs, path = urls.get_fs(url, storage_options)
    try:
        return sorted(posixpath.basename(i["name"]) for i in _ls(fs, path) if i.get("type") == "file")
    except FileNotFoundError:
        return []


def _stamp(info: dict[str, Any]) -> str:
    for key in ("ETag", "mtime", "LastModified", "created"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return ""


def _timestamp(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None


def _signature(sidecars: dict[str, dict[str, Any]], markers: dict[str, dict[str, Any]]) -> str:
    """Hash of the name, size and modification stamp of every sidecar and commit marker."""
    items = [(n, i.get("size"), _stamp(i)) for n, i in sorted(sidecars.items())]
    items += [(f"{spec.COMMITS_DIR}/{n}", i.get("size"), _stamp(i)) for n, i in sorted(markers.items())]
    return hashlib.sha1(json.dumps(items, default=str).encode()).hexdigest()
