"""Finding and loading results: a catalog of the derived assets under a root, like IBL's ONE.

>>> import neuropool
>>> cat = neuropool.catalog("s3://lab-derived")                  # or a local folder
>>> ids = cat.search(subject="mouse1", date_range=("2026-11-01", "2026-11-30"),
...                  datasets=["spikes.times", "preprocessed"])
>>> cat.list(ids[0])                                             # ['probe00/spikes.times', ...]
>>> times = cat.load(ids[0], "spikes.times", probe="probe00")    # numpy array
>>> spikes = cat.load_object(ids[0], "spikes")                   # times, clusters, amps...
>>> traces = cat.open(ids[0], "preprocessed")["traces"]          # lazy xarray

Asset ids. An asset's id is its folder's path relative to the root, with ``/`` separators: the
folder name (``mouse1_2026-11-21_001_processed_2026-11-22_13-00-04``) for assets directly under
the root, ``subject/2026-11-21/001_processed_2026-11-22_13-00-04`` for one beside an IBL-style
session folder. Every method also takes the folder name alone, where it is unique, or the
asset's full URL.

Datasets. Only what a committed node wrote counts. Per probe: the ALF datasets of its export
(``spikes.times``, ``clusters.metrics``...), the ALF-named QC files in its folder
(``_iblqc_ephysTimeRmsAP.rms``...), the zarr stores by folder name (``raw``, ``preprocessed``,
``raw_lf``, ``lfp``) and the other output folders by dataset name (``ephys.sorting``,
``units.metrics``, ``units.locations``, ``nwb``). The pipeline's dataset names are accepted too
(``ephys.preprocessed`` for ``preprocessed``, ``alf`` for "has an ALF export").

The index is the file ``<root>/.neuropool-catalog.pqt``, refreshed incrementally on every
:func:`catalog` call: see :mod:`neuropool.io.catalog_index`.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from neuropool.errors import ConfigError, SourceNotFoundError
from neuropool.io import catalog_index, urls
from neuropool.io.catalog_index import DEFAULT_DEPTH, INDEX_NAME, AssetEntry, DatasetEntry

_ALF_NAME = re.compile(r"^(?:_(?P<namespace>[A-Za-z0-9]+)_)?(?P<object>[^._][^.]*)\.(?P<attribute>.+)$")
_LOADABLE = ("alf", "file")


def catalog(root: str, storage_options: dict[str, Any] | None = None, *,
            depth: int = DEFAULT_DEPTH) -> Catalog:
    """Index the derived assets under ``root`` and return a :class:`Catalog` of them.

    Parameters
    ----------
    root : str
        Folder holding derived assets: a local path or any fsspec URL (``s3://bucket/derived``).
    storage_options : dict, optional
        fsspec options (credentials, ``endpoint_url``...).
    depth : int
        How many folder levels below ``root`` assets are looked for (default 3: enough for
        ``<subject>/<date>/<asset>`` beside IBL-style session folders).

    Returns
    -------
    Catalog

    Raises
    ------
    SourceNotFoundError
        ``root`` does not exist.
    StoreError
        ``root`` cannot be listed (no such bucket, network, credentials).

    Notes
    -----
    An asset whose sidecar is missing or unreadable is left out with a warning naming the file;
    an index that cannot be written under ``root`` is kept in memory, with a warning.
    """
    return Catalog(root, storage_options, depth=depth)


class Catalog:
    """The derived assets under a root, to search and load from (see :func:`catalog`).

    Parameters
    ----------
    root : str
        Folder holding derived assets (local path or fsspec URL).
    storage_options : dict, optional
        fsspec options for ``root``.
    depth : int
        Folder levels below ``root`` searched for assets.
    """

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None, *,
                 depth: int = DEFAULT_DEPTH) -> None:
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.depth = depth
        self.assets: dict[str, AssetEntry] = {}
        self.refresh()

    def __repr__(self) -> str:
        return f"Catalog({self.root!r}: {len(self.assets)} asset(s))"

    def __len__(self) -> int:
        return len(self.assets)

    def __contains__(self, asset: object) -> bool:
        return isinstance(asset, str) and self._find(asset) is not None

    def refresh(self) -> Catalog:
        """Re-read the assets whose sidecars changed since the index was saved; drop vanished ones.

        ``self.last_refresh`` tells what was read, kept, dropped and skipped.
        """
        self.assets, self.last_refresh = catalog_index.refresh(self.root, self.storage_options, depth=self.depth)
        for note in self.last_refresh.warnings:
            warnings.warn(note, stacklevel=_caller_level())
        return self

    # -- finding --------------------------------------------------------------------------

    def search(self, subject: str | None = None, date_range: Any = None,
               datasets: str | Iterable[str] | None = None, label: str | None = None,
               probe: str | None = None) -> list[str]:
        """Ids of the assets that match every criterion given, by subject, date and id.

        Parameters
        ----------
        subject : str, optional
            The session's subject (from ``<subject>_<date>_<number>`` sources).
        date_range : str, date or (start, end), optional
            Session dates, inclusive; ``'YYYY-MM-DD'`` strings or dates; a single value is one
            day; ``None`` at either end leaves it open.
        datasets : str or list of str, optional
            Datasets that must all be committed (in ``probe``, where given; else in any probe).
        label : str, optional
            The pipeline label (``processed``, the config's ``label``).
        probe : str, optional
            The asset must have this probe.

        Returns
        -------
        list of str
        """
        start, end = _date_range(date_range)
        wanted = [datasets] if isinstance(datasets, str) else list(datasets or [])
        out = []
        for entry in self.assets.values():
            if subject is not None and entry.subject != subject:
                continue
            if label is not None and entry.label != label:
                continue
            if probe is not None and probe not in entry.probes:
                continue
            if (start and entry.date < start) or (end and entry.date > end):
                continue
            names = {n for d in entry.datasets if probe is None or d.probe == probe
                     for n in (d.name, d.alias)}
            if any(_strip(w) not in names and w not in names for w in wanted):
                continue
            out.append(entry)
        return [e.id for e in sorted(out, key=lambda e: (e.subject, e.date, e.id))]

    def info(self, asset: str) -> dict[str, Any]:
        """Everything the index holds on ``asset``: subject, date, label, probes, commits, datasets."""
        return {**self._entry(asset).record(), "url": self.url(asset)}

    def to_frame(self) -> Any:
        """One row per asset (``pandas.DataFrame``): id, subject, date, label, probes, tasks."""
        import pandas as pd

        rows = [{"id": e.id, "subject": e.subject, "date": e.date, "label": e.label,
                 "probes": list(e.probes), "committed": len(e.committed), "tasks": len(e.nodes),
                 "created": e.created} for e in self.assets.values()]
        columns = ["id", "subject", "date", "label", "probes", "committed", "tasks", "created"]
        return pd.DataFrame(rows, columns=columns).sort_values(["subject", "date", "id"], ignore_index=True)

    def list(self, asset: str, probe: str | None = None) -> list[str]:
        """The committed datasets of ``asset``.

        Parameters
        ----------
        asset : str
            Asset id (or folder name, or URL).
        probe : str, optional
            Only this probe's datasets, by name alone.

        Returns
        -------
        list of str
            Without ``probe``, every probe's, as ``<probe>/<dataset>`` (``probe00/spikes.times``,
            ``probe00/preprocessed``); with it, that probe's dataset names (``spikes.times``).
        """
        entry = self._entry(asset)
        if probe is None:
            return [f"{d.probe}/{d.name}" for d in entry.datasets]
        self._probe(entry, probe)
        return [d.name for d in entry.datasets if d.probe == probe]

    def url(self, asset: str, dataset: str | None = None, probe: str | None = None) -> str:
        """URL of ``asset``, or of one of its datasets (a file, store or folder)."""
        entry = self._entry(asset)
        base = urls.join(self.root, entry.id)
        return base if dataset is None else urls.join(base, self._dataset(entry, dataset, probe).path)

    # -- loading --------------------------------------------------------------------------

    def load(self, asset: str, dataset: str, probe: str | None = None) -> Any:
        """Load one ALF dataset: ``.npy`` -> numpy array, ``.pqt`` / ``.csv`` -> DataFrame.

        Parameters
        ----------
        asset : str
            Asset id (or folder name, or URL).
        dataset : str
            ALF name (``spikes.times``, with or without its extension) or pipeline dataset name
            of a single file (``ephysChannels.labels``).
        probe : str, optional
            May be left out when the asset has one probe, or when ``dataset`` starts with it
            (``probe00/spikes.times``).

        Returns
        -------
        numpy.ndarray or pandas.DataFrame

        Raises
        ------
        SourceNotFoundError
            No such asset, probe or committed dataset (the message lists what there is).
        ConfigError
            Several probes and none given; or ``dataset`` is a zarr store (use :meth:`open`) or
            a folder.
        """
        entry = self._entry(asset)
        found = self._dataset(entry, dataset, probe)
        if found.kind == "store":
            raise ConfigError(f"{dataset!r} of {entry.id} is a zarr store: open it with "
                              f"catalog.open({entry.id!r}, {found.name!r}, probe={found.probe!r})")
        if found.kind == "folder":
            raise ConfigError(f"{dataset!r} of {entry.id} is a folder of files, not one dataset: "
                              f"it is at {urls.join(self.root, entry.id, found.path)}")
        return self._read_file(entry, found)

    def load_object(self, asset: str, obj: str, probe: str | None = None) -> Any:
        """Every attribute of an ALF object, like ``one.alf.io.load_object``.

        Parameters
        ----------
        asset : str
            Asset id (or folder name, or URL).
        obj : str
            ALF object (``spikes``, ``clusters``), with or without its namespace
            (``_iblqc_ephysTimeRmsAP`` or ``ephysTimeRmsAP``).
        probe : str, optional
            As for :meth:`load`.

        Returns
        -------
        one.alf.io.AlfBunch
            A dict with attribute access: ``spikes`` -> ``{"times": ..., "clusters": ...}``. A
            ``table`` attribute is split into its columns, as ONE does.
        """
        from one.alf.io import AlfBunch

        entry = self._entry(asset)
        if probe is None and "/" in obj:
            probe, obj = obj.split("/", 1)
        probe = self._probe(entry, probe)
        parts = [(d, _ALF_NAME.match(d.name)) for d in entry.datasets
                 if d.probe == probe and d.kind in _LOADABLE]
        chosen = [(d, m) for d, m in parts if m and obj in (m["object"], f"_{m['namespace']}_{m['object']}")]
        if not chosen:
            objects = sorted({m["object"] for _, m in parts if m})
            raise SourceNotFoundError(
                f"{entry.id} has no ALF object {obj!r} in {probe}{_close(obj, objects)}; its objects: "
                f"{', '.join(objects) or 'none (is it exported? neuropool run ... --until export)'}")
        bunch = AlfBunch()
        for d, m in chosen:
            value = self._read_file(entry, d)
            if m["attribute"] == "table" and hasattr(value, "columns"):
                bunch.update({str(c): value[c].to_numpy() for c in value.columns})
            else:
                bunch[m["attribute"]] = value
        return bunch

    def open(self, asset: str, store: str, probe: str | None = None) -> Any:
        """Open a zarr store as a lazy ``xarray.Dataset`` (``traces``: time x channel, dask-backed).

        Parameters
        ----------
        asset : str
            Asset id (or folder name, or URL).
        store : str
            ``raw``, ``preprocessed``, ``raw_lf``, ``lfp``, or the pipeline's name
            (``ephys.preprocessed``).
        probe : str, optional
            As for :meth:`load`.

        Returns
        -------
        xarray.Dataset
        """
        from neuropool.io import timeseries

        entry = self._entry(asset)
        found = self._dataset(entry, store, probe)
        if found.kind != "store":
            stores = sorted({d.name for d in entry.datasets if d.probe == found.probe and d.kind == "store"})
            hint = "catalog.load" if found.kind in _LOADABLE else "its URL (catalog.url)"
            raise ConfigError(f"{store!r} of {entry.id} is not a zarr store (use {hint}); its stores "
                              f"in {found.probe}: {', '.join(stores) or 'none'}")
        return timeseries.open_dataset(urls.join(self.root, entry.id, found.path), self.storage_options)

    # -- resolving names ------------------------------------------------------------------

    def _find(self, asset: str) -> AssetEntry | None:
        key = asset.rstrip("/")
        if key.startswith(self.root + "/"):
            key = key[len(self.root) + 1:]
        if key in self.assets:
            return self.assets[key]
        by_name = [e for e in self.assets.values() if e.name == key]
        return by_name[0] if len(by_name) == 1 else None

    def _entry(self, asset: str) -> AssetEntry:
        if not isinstance(asset, str):
            raise ConfigError(f"an asset is named by its id (a string), not {type(asset).__name__}")
        found = self._find(asset)
        if found is not None:
            return found
        names = [n for e in self.assets.values() for n in (e.id, e.name)]
        if self.assets:
            hint = f"{_close(asset, names)}; `neuropool ls {self.root}` or catalog.search() lists them all"
        else:
            hint = " (the catalog is empty)"
        raise SourceNotFoundError(f"no derived asset {asset!r} under {self.root}{hint}")

    def _probe(self, entry: AssetEntry, probe: str | None) -> str:
        if probe is None:
            if len(entry.probes) == 1:
                return entry.probes[0]
            if not entry.probes:
                raise SourceNotFoundError(f"{entry.id} has no probe: nothing of it is committed yet")
            raise ConfigError(f"{entry.id} has {len(entry.probes)} probes ({', '.join(entry.probes)}): "
                              f"say which, e.g. probe={entry.probes[0]!r}")
        if probe not in entry.probes:
            raise SourceNotFoundError(f"{entry.id} has no probe {probe!r}; its probes: "
                                      f"{', '.join(entry.probes) or 'none'}")
        return probe

    def _dataset(self, entry: AssetEntry, name: str, probe: str | None) -> DatasetEntry:
        if probe is None and re.match(r"^probe\d{2}/", name):
            probe, name = name.split("/", 1)
        probe = self._probe(entry, probe)
        mine = [d for d in entry.datasets if d.probe == probe]
        for match in ([d for d in mine if d.name == name], [d for d in mine if d.name == _strip(name)],
                      [d for d in mine if d.alias == name]):
            if len(match) == 1:
                return match[0]
        elsewhere = sorted({d.probe for d in entry.datasets
                            if d.name in (name, _strip(name)) or d.alias == name})
        also = f" (it is in {', '.join(elsewhere)})" if elsewhere else ""
        names = [d.name for d in mine]
        raise SourceNotFoundError(
            f"{entry.id} has no committed dataset {name!r} in {probe}{also}{_close(name, names)}; "
            f"it has: {', '.join(names) or 'nothing committed yet'}")

    def _read_file(self, entry: AssetEntry, found: DatasetEntry) -> Any:
        import numpy as np
        import pandas as pd

        url = urls.join(self.root, entry.id, found.path)
        fs, path = urls.get_fs(url, self.storage_options)
        try:
            data = fs.cat_file(path)
        except FileNotFoundError as e:
            raise SourceNotFoundError(f"{url}: committed but missing; the asset changed since it was "
                                      "indexed (catalog.refresh()) or was damaged (run it again)") from e
        if path.endswith(".npy"):
            return np.load(io.BytesIO(data), allow_pickle=False)
        if path.endswith((".pqt", ".parquet")):
            return pd.read_parquet(io.BytesIO(data))
        if path.endswith(".csv"):
            return pd.read_csv(io.BytesIO(data))
        if path.endswith(".json"):
            return json.loads(data.decode())
        raise ConfigError(f"{url}: no reader for this file type")


# -- helpers ------------------------------------------------------------------------------------


def _caller_level() -> int:
    """The ``stacklevel`` of the first caller outside neuropool (for warnings that point there)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") in (__name__, "neuropool"):
        frame, level = frame.f_back, level + 1
    return level


def _strip(name: str) -> str:
    """``spikes.times.npy`` -> ``spikes.times``; other names unchanged."""
    return re.sub(r"\.(npy|pqt|parquet|csv|json)$", "", name)


def _close(word: str, options: Sequence[str]) -> str:
    near = difflib.get_close_matches(word, sorted(set(options)), n=5, cutoff=0.5)
    return f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""


def _day(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise ConfigError(f"{what} {value!r} is not a date: give 'YYYY-MM-DD' or a datetime.date")


def _date_range(value: Any) -> tuple[str | None, str | None]:
    """(start, end) as ISO strings, inclusive; a single day for a single value."""
    if value is None:
        return None, None
    if isinstance(value, str | date):
        day = _day(value, "date_range")
        return day, day
    try:
        start, end = value
    except (TypeError, ValueError) as e:
        raise ConfigError(f"date_range {value!r} must be a date or a (start, end) pair") from e
    start, end = _day(start, "date_range start"), _day(end, "date_range end")
    if start and end and start > end:
        raise ConfigError(f"date_range starts after it ends: {start} > {end}")
    return start, end


# -- the command line ---------------------------------------------------------------------------


def register_ls(subparsers: Any) -> None:
    """Add ``neuropool ls`` to the command's subparsers."""
    p = subparsers.add_parser(
        "ls", help="list the derived assets under a folder or URL, or one asset's datasets",
        description="List the derived assets under ROOT (a folder or fsspec URL; S3 credentials "
                    "from the usual AWS_* variables) that match every filter given: id, subject, "
                    "session date, probes, tasks committed/total, label. With ASSET (an id from "
                    f"that list), list its committed datasets. The index is kept in ROOT/{INDEX_NAME} "
                    "and refreshed incrementally.")
    p.add_argument("root", metavar="ROOT", help="folder holding derived assets (path or URL)")
    p.add_argument("asset", nargs="?", metavar="ASSET", help="list this asset's datasets")
    p.add_argument("--subject", metavar="S", help="only this subject")
    p.add_argument("--from", dest="start", metavar="DATE", help="sessions on or after DATE (YYYY-MM-DD)")
    p.add_argument("--to", dest="end", metavar="DATE", help="sessions on or before DATE (YYYY-MM-DD)")
    p.add_argument("--dataset", nargs="+", action="extend", metavar="NAME",
                   help="assets with all these datasets committed (spikes.times, preprocessed...)")
    p.add_argument("--label", metavar="L", help="only this pipeline label")
    p.add_argument("--probe", metavar="P", help="only assets with this probe (with ASSET: its datasets)")
    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH, metavar="N",
                   help=f"folder levels below ROOT searched for assets (default: {DEFAULT_DEPTH})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_ls)


def cmd_ls(args: argparse.Namespace) -> int:
    """Run ``neuropool ls``; returns the exit code (0, also when nothing matches)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cat = catalog(args.root, depth=args.depth)
    for w in caught:
        print(f"neuropool: warning: {w.message}", file=sys.stderr)
    if args.asset:
        return _ls_asset(cat, args)
    ids = cat.search(subject=args.subject, date_range=(args.start, args.end),
                     datasets=args.dataset, label=args.label, probe=args.probe)
    rows = [cat.assets[i] for i in ids]
    if args.json:
        print(json.dumps([{"id": e.id, "subject": e.subject, "date": e.date, "probes": e.probes,
                           "committed": len(e.committed), "tasks": len(e.nodes), "label": e.label,
                           "url": cat.url(e.id)} for e in rows], indent=2))
        return 0
    if not rows:
        print(_nothing_matches(cat, args))
        return 0
    _table(["id", "subject", "date", "probes", "tasks", "label"],
           [[e.id, e.subject, e.date, ",".join(e.probes) or "-", f"{len(e.committed)}/{len(e.nodes)}",
             e.label] for e in rows])
    print(f"{len(rows)} of {len(cat)} asset(s) under {cat.root}")
    return 0


def _ls_asset(cat: Catalog, args: argparse.Namespace) -> int:
    entry = cat._entry(args.asset)
    if args.probe is not None:
        cat._probe(entry, args.probe)
    found = [d for d in entry.datasets if args.probe is None or d.probe == args.probe]
    if args.json:
        print(json.dumps([{"probe": d.probe, "dataset": d.name, "kind": d.kind, "alias": d.alias,
                           "url": urls.join(cat.root, entry.id, d.path)} for d in found], indent=2))
        return 0
    print(f"{entry.id}: subject {entry.subject}, {entry.date}, label {entry.label}, "
          f"probes {', '.join(entry.probes) or '-'}, tasks committed {len(entry.committed)}/{len(entry.nodes)}")
    if not found:
        print("  no committed datasets" + (f" in {args.probe}" if args.probe else "") +
              " yet: run the session (neuropool run SOURCE) to produce them")
        return 0
    _table(["probe", "dataset", "kind", "path"], [[d.probe, d.name, d.kind, d.path] for d in found])
    return 0


def _nothing_matches(cat: Catalog, args: argparse.Namespace) -> str:
    if not len(cat):
        return (f"No derived assets under {cat.root} (searched {cat.depth} folder levels down; "
                "--depth searches deeper). neuropool run SOURCE --out ROOT makes one.")
    filters = [f"{k} {v}" for k, v in (("subject", args.subject), ("from", args.start), ("to", args.end),
                                        ("label", args.label), ("probe", args.probe)) if v]
    filters += [f"dataset {', '.join(args.dataset)}"] if args.dataset else []
    entries = list(cat.assets.values())
    dates = sorted(e.date for e in entries)
    return (f"No asset matches {'; '.join(filters)}. The {len(entries)} asset(s) under {cat.root} have "
            f"subjects {', '.join(sorted({e.subject for e in entries}))}; dates {dates[0]} to {dates[-1]}; "
            f"labels {', '.join(sorted({e.label for e in entries}))}; probes "
            f"{', '.join(sorted({p for e in entries for p in e.probes})) or '-'}.")


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
