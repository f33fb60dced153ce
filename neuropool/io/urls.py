"""Small helpers over fsspec: every location in neuropool is a URL."""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from neuropool.errors import SourceNotFoundError, StoreError


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL, keeping its protocol (``s3://b/a`` + ``x`` -> ``s3://b/a/x``)."""
    out = url.rstrip("/")
    for p in parts:
        out = out + "/" + p.strip("/")
    return out


def basename(url: str) -> str:
    """Last path component of a URL, ignoring a trailing slash."""
    return posixpath.basename(url.rstrip("/"))


def parent(url: str) -> str:
    """The URL of the folder holding ``url``."""
    if "://" in url:
        proto, rest = url.split("://", 1)
        return f"{proto}://{posixpath.dirname(rest.rstrip('/'))}"
    return posixpath.dirname(url.rstrip("/")) or "."


def get_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a URL, with a clear error for unknown protocols."""
    try:
        return url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as e:
        raise StoreError(f"cannot open {url!r}: {e}") from e


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """True if ``url`` names an existing file or folder."""
    fs, path = get_fs(url, storage_options)
    return fs.exists(path)


def read_json(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    """Load a JSON file; missing -> SourceNotFoundError naming it."""
    fs, path = get_fs(url, storage_options)
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read().decode())
    except FileNotFoundError as e:
        raise SourceNotFoundError(f"{url}: file not found") from e
    except json.JSONDecodeError as e:
        raise StoreError(f"{url}: not valid JSON ({e})") from e


def write_json(url: str, obj: Any, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``obj`` as indented JSON, whole-file at once.

    On a local disk the file is written beside its target and renamed into place, so a reader
    never sees half a file; object stores (S3) make a single PUT atomic by themselves.
    """
    fs, path = get_fs(url, storage_options)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    write_whole(fs, path, json.dumps(obj, indent=2, sort_keys=False, default=str).encode())


def write_whole(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` on ``fs`` so that no reader ever sees half of it.

    On a local disk it is written beside the target under a name of its own (two processes
    writing at once leave one complete file) and renamed into place; on an object store (S3)
    a single PUT is atomic by itself.
    """
    if is_local_fs(fs):
        tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    """True if ``fs`` is the local disk."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def is_local(url: str) -> bool:
    """True if ``url`` is on the local disk."""
    fs, _ = get_fs(url)
    return is_local_fs(fs)


def local_path(url: str) -> str:
    """The filesystem path of a local URL (for libraries that only take paths)."""
    fs, path = get_fs(url)
    if not is_local_fs(fs):
        raise StoreError(f"{url!r} is not on the local disk")
    return path


def remove(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Remove a file or folder if it exists."""
    fs, path = get_fs(url, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_npy(url: str, array: Any, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``array`` as a ``.npy`` file at ``url`` in one whole-file write (IBL's ALF files)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    fs, path = get_fs(url, storage_options)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(buf.getvalue())
