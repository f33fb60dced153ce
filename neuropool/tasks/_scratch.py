"""Local scratch folders for libraries that only work on the local disk (sorters, analyzers).

A task writes into a temporary local folder and then publishes it to its output URL; on a local
output the folder is moved, elsewhere (S3) uploaded.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from neuropool.io import urls


def scratch_dir(prefix: str) -> Path:
    """A new empty local folder (the caller removes it, or :func:`publish` does)."""
    return Path(tempfile.mkdtemp(prefix=f"neuropool-{prefix}-"))


def publish(local: Path, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Move (local disk) or upload (elsewhere) the content of ``local`` to the folder ``url``."""
    fs, path = urls.get_fs(url, storage_options)
    if urls.is_local(url):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if Path(path).exists():
            shutil.rmtree(path)
        shutil.move(str(local), path)
    else:
        fs.put(str(local) + "/", path, recursive=True)
        shutil.rmtree(local, ignore_errors=True)


def fetch(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Path, bool]:
    """A local path to the folder ``url``: itself when local, else a downloaded copy.

    Returns the path and whether it is a temporary copy the caller should remove.
    """
    if urls.is_local(url):
        return Path(urls.local_path(url)), False
    fs, path = urls.get_fs(url, storage_options)
    local = scratch_dir("fetch")
    fs.get(path + "/", str(local) + "/", recursive=True)
    return local, True
