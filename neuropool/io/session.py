"""Finding the probes of a raw session, and its metadata.

A session is a folder (or a single recording file). Its probes are found, in order:

1. from ``session.json`` when present: ``{"subject": ..., "probes": {"probe00": {"raw": "<path
   relative to the session>", "trajectory": {...}}}}``;
2. else by looking for recordings: SpikeGLX AP streams (``*.ap.cbin`` preferred over ``*.ap.bin``
   of the same stem) and Open Ephys ``structure.oebin`` files. A recording inside a folder named
   ``probeNN`` takes that name; the others are numbered in sorted order.

A SpikeGLX probe whose AP stream has an LF stream beside it (same stem, ``.lf.cbin`` or
``.lf.bin``; NP1 and 3A probes record their LFP there, as their AP stream is high-passed in
hardware) also gets that stream in :attr:`Session.lf`; in ``session.json``, give it as the probe's
``"lf"`` path.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from neuropool.errors import SourceNotFoundError, UnknownFormatError
from neuropool.io import urls
from neuropool.io.spec import check_probe_name

SESSION_FILE = "session.json"
_RAW_SUFFIXES = (".ap.cbin", ".ap.bin", "structure.oebin")


@dataclass
class Session:
    """A raw session: its name, its probes' raw recordings, and its metadata."""

    url: str
    name: str
    probes: dict[str, str]
    metadata: dict[str, Any] = field(default_factory=dict)
    #: probe -> its separate LF stream (SpikeGLX ``.lf``), for the probes that have one
    lf: dict[str, str] = field(default_factory=dict)

    def probe_info(self, probe: str) -> dict[str, Any]:
        """The metadata of one probe (its trajectory, ...), empty when none."""
        return dict(self.metadata.get("probes", {}).get(probe, {}))


def open_session(url: str, storage_options: dict[str, Any] | None = None) -> Session:
    """Find the probes and metadata of the session at ``url`` (a folder or a recording file)."""
    fs, path = urls.get_fs(url, storage_options)
    if not fs.exists(path):
        raise SourceNotFoundError(f"{url}: no such session folder or file")
    if not fs.isdir(path):
        name = urls.basename(urls.parent(url))
        return Session(url, name, {"probe00": url})
    name = urls.basename(url)
    meta_url = urls.join(url, SESSION_FILE)
    if fs.exists(posixpath.join(path, SESSION_FILE)):
        metadata = urls.read_json(meta_url, storage_options)
        probes, lf = {}, {}
        for probe, entry in metadata.get("probes", {}).items():
            check_probe_name(probe)
            raw = entry.get("raw")
            if not raw:
                raise SourceNotFoundError(f"{meta_url}: probe {probe} has no 'raw' recording path")
            probes[probe] = urls.join(url, raw)
            if entry.get("lf"):
                lf[probe] = urls.join(url, entry["lf"])
        return Session(url, name, probes, metadata, lf)
    probes = _find_recordings(fs, path, url)
    return Session(url, name, probes, lf=_find_lf_streams(fs, probes, storage_options))


def _find_lf_streams(fs: Any, probes: dict[str, str], storage_options: dict[str, Any] | None) -> dict[str, str]:
    """The LF stream beside each SpikeGLX AP stream (``x.ap.cbin`` -> ``x.lf.cbin`` or ``x.lf.bin``)."""
    lf = {}
    for probe, ap in probes.items():
        for suffix in (".ap.cbin", ".ap.bin"):
            if ap.endswith(suffix):
                stem = ap[: -len(suffix)]
                for candidate in (stem + ".lf.cbin", stem + ".lf.bin"):
                    if fs.exists(urls.get_fs(candidate, storage_options)[1]):
                        lf[probe] = candidate
                        break
    return lf


def _find_recordings(fs: Any, path: str, url: str) -> dict[str, str]:
    found = sorted(p for p in fs.find(path) if p.endswith(_RAW_SUFFIXES))
    cbins = {p[: -len(".cbin")] for p in found if p.endswith(".ap.cbin")}
    found = [p for p in found if not (p.endswith(".ap.bin") and p[: -len(".bin")] in cbins)]
    if not found:
        raise UnknownFormatError(
            f"{url}: no recording found (looked for {', '.join('*' + s for s in _RAW_SUFFIXES)} "
            f"and {SESSION_FILE})"
        )
    probes: dict[str, str] = {}
    unnamed = []
    for p in found:
        rel = p[len(path.rstrip("/")) + 1:]
        named = [part for part in rel.split("/")[:-1] if re.fullmatch(r"probe\d{2}", part)]
        target = rel if not rel.endswith("structure.oebin") else posixpath.dirname(rel) or "."
        if named and named[-1] not in probes:
            probes[named[-1]] = urls.join(url, target)
        else:
            unnamed.append(urls.join(url, target))
    i = 0
    for target in unnamed:
        while f"probe{i:02d}" in probes:
            i += 1
        probes[f"probe{i:02d}"] = target
    return dict(sorted(probes.items()))
