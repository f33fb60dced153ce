"""Raw-format readers, found through one lazy registry.

:data:`READERS` maps a format name to the reader class as a ``"module:Class"`` string, the name
suffixes it recognises and what to install if importing it fails (in the style of fsspec's
``known_implementations``): nothing is imported until a format is used. :func:`open_raw` picks a
reader by name, by suffix, or by looking inside a folder.
"""

from __future__ import annotations

import importlib
import os
import posixpath
from typing import Any

from neuropool.errors import MissingDependencyError, SourceNotFoundError, UnknownFormatError

from .base import ByteSource, RawReader, RecordingInfo, child_url, with_suffix

__all__ = [
    "READERS",
    "RawReader",
    "RecordingInfo",
    "available_formats",
    "get_reader_class",
    "guess_format",
    "open_raw",
    "register_reader",
]

#: Format name -> {"class": "module:Class", "suffixes": names it opens, "err": install hint}.
#: Order matters: the first reader whose ``guess_can_open`` accepts a name wins.
READERS: dict[str, dict[str, Any]] = {
    "spikeglx": {
        "class": "neuropool.io.readers.spikeglx:SpikeGLXReader",
        "suffixes": (".ap.bin", ".lf.bin", ".bin", ".meta"),
        "err": "the SpikeGLX reader needs numpy, fsspec and probeinterface: pip install probeinterface",
    },
    "mtscomp": {
        "class": "neuropool.io.readers.mtscomp:MtscompReader",
        "suffixes": (".cbin", ".ch"),
        "err": "the mtscomp reader needs numpy and fsspec (pip install fsspec); s3:// needs s3fs",
    },
    "openephys": {
        "class": "neuropool.io.readers.openephys:OpenEphysReader",
        "suffixes": ("structure.oebin", "continuous.dat"),
        "err": "the Open Ephys reader needs numpy and fsspec: pip install fsspec",
    },
}


def register_reader(
    name: str, target: str, suffixes: tuple[str, ...] = (), err: str | None = None, clobber: bool = False
) -> None:
    """Add a reader to :data:`READERS` (imported only when first used).

    Parameters
    ----------
    name : str
        Format name.
    target : str
        ``"package.module:Class"`` of a :class:`RawReader` subclass.
    suffixes : tuple of str
        Names it opens (for messages and for guessing when its import fails).
    err : str, optional
        What to tell the user when the import fails.
    clobber : bool
        Replace an existing entry of the same name instead of raising ``ValueError``.
    """
    if name in READERS and not clobber:
        raise ValueError(f"a reader named {name!r} is already registered (pass clobber=True)")
    READERS[name] = {"class": target, "suffixes": tuple(suffixes), "err": err or f"cannot import {target}"}


def available_formats() -> dict[str, tuple[str, ...]]:
    """Registered format names and the suffixes each recognises."""
    return {name: tuple(entry["suffixes"]) for name, entry in READERS.items()}


def _supported() -> str:
    return "; ".join(f"{n} ({', '.join(s)})" for n, s in available_formats().items())


def get_reader_class(name: str) -> type[RawReader]:
    """Import and return the reader class registered as ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`READERS`.

    Returns
    -------
    type
        The :class:`RawReader` subclass.

    Raises
    ------
    UnknownFormatError
        If no reader has that name.
    MissingDependencyError
        If importing it fails (the message says what to install).
    """
    if name not in READERS:
        raise UnknownFormatError(f"unknown format {name!r}; supported: {_supported()}")
    module, _, cls = READERS[name]["class"].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise MissingDependencyError(f"format {name!r}: {READERS[name]['err']} ({exc})") from exc


def guess_format(url: str | os.PathLike) -> str:
    """Name of the first registered reader that recognises ``url`` from its name alone (no I/O).

    Parameters
    ----------
    url : str or path-like
        A file name, path or URL.

    Returns
    -------
    str
        A key of :data:`READERS`.

    Raises
    ------
    UnknownFormatError
        If no reader recognises it; the message lists formats and suffixes.
    """
    url = os.fspath(url)
    for name, entry in READERS.items():
        try:
            cls = get_reader_class(name)
        except MissingDependencyError:
            if str(url).rstrip("/").lower().endswith(tuple(entry["suffixes"])):
                raise
            continue
        if cls.guess_can_open(url):
            return name
    raise UnknownFormatError(f"{url}: no reader recognises this name; supported: {_supported()}")


def _inside_folder(url: str, fs: Any, path: str, fmt: str | None) -> tuple[str, str]:
    """(format, url) of the one recording inside a folder: Open Ephys, or one ``.ap.(c)bin``."""
    found, files = [], set(fs.find(path, maxdepth=5))
    for p in sorted(files):
        depth = posixpath.dirname(p).count("/") - path.count("/")  # SpikeGLX: run/probe folders
        if posixpath.basename(p) == "structure.oebin":
            found.append(("openephys", p))
        elif p.endswith((".ap.bin", ".ap.cbin")) and depth <= 2:
            found.append(("mtscomp" if p.endswith(".cbin") else "spikeglx", p))
        elif p.endswith(".ap.ch") and depth <= 2 and with_suffix(p, ".ch", ".cbin") not in files:
            found.append(("mtscomp", p))  # its reader will say that the .cbin is missing
    found = [(f, p) for f, p in found if fmt is None or f == fmt]
    if len(found) == 1:
        name, inner = found[0]
        return name, (url if name == "openephys" else child_url(url, fs, inner))
    what = ", ".join(child_url(url, fs, p) for _, p in found)
    raise UnknownFormatError(
        f"{url}: " + (f"{len(found)} recordings in this folder ({what}); open one of them"
                      if found else f"no recording found in this folder; supported: {_supported()}")
    )


def open_raw(
    url: str | os.PathLike, storage_options: dict[str, Any] | None = None, format: str | None = None
) -> RawReader:
    """Open a raw recording with the reader named ``format`` or the one that recognises ``url``.

    Parameters
    ----------
    url : str or path-like
        A data file (``.bin``, ``.cbin``, ``continuous.dat``), a header (``.meta``, ``.ch``,
        ``structure.oebin``), or a folder holding one recording (an Open Ephys recording or
        Record Node, or a SpikeGLX folder with exactly one ``.ap.bin``/``.ap.cbin``).
    storage_options : dict, optional
        fsspec options (``s3://`` credentials, ``client_kwargs``...).
    format : str, optional
        A key of :data:`READERS`; guessed from the name (or the folder's content) when None.

    Returns
    -------
    RawReader
        The opened, validated reader.

    Raises
    ------
    SourceNotFoundError
        If nothing exists at ``url``.
    UnknownFormatError
        If no reader recognises it (the message lists the formats and suffixes supported).
    """
    url = os.fspath(url)
    if format is not None:
        get_reader_class(format)  # unknown name: fail before any I/O
    source = ByteSource(url, storage_options)
    fs, path = source.fs, source.path
    if not fs.exists(path):
        raise SourceNotFoundError(f"{url}: no such file or folder")
    if fs.isdir(path):
        format, url = _inside_folder(url, fs, path.rstrip("/"), format)
    elif format is None and url.endswith(".meta"):  # a .meta beside a .bin, or an mtscomp .cbin
        has_bin = fs.exists(with_suffix(path, ".meta", ".bin"))
        if not has_bin and fs.exists(with_suffix(path, ".meta", ".cbin")):
            format, url = "mtscomp", with_suffix(url, ".meta", ".cbin")
    return get_reader_class(format or guess_format(url))(url, storage_options)
