"""ONE cache tables for a derived asset, so IBL's ``one-api`` loads its ALF export in local mode.

The ALF datasets of an asset live in ONE session trees at its top
(``<subject>/<date>/<number>/alf/<probe>/``, see :func:`neuropool.io.spec.one_session_path`).
ONE's local mode finds sessions and datasets through two tables in its cache folder,
``sessions.pqt`` and ``datasets.pqt``; :func:`write_one_tables` (re)builds them with one-api's own
``make_parquet_db``, with file hashes, so the asset folder is a valid ``One(cache_dir=...)``.
On a remote asset (S3) the session trees are copied to a local folder, indexed there, and the two
tables uploaded beside them; a user then downloads the asset and opens it with ONE.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from neuropool.io import urls

#: The tables ONE's local mode reads from its cache folder.
TABLES = ("sessions.pqt", "datasets.pqt")
#: Session folders directly under an asset: <subject>/<YYYY-MM-DD>/<number>.
SESSION_GLOB = "*/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]/*"


def write_one_tables(root: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """(Re)build ONE's cache tables at ``root`` (a derived asset) from the ALF files under it.

    Parameters
    ----------
    root : str
        URL of the derived asset (ONE's cache folder).
    storage_options : dict, optional
        fsspec options for a remote asset.

    Returns
    -------
    dict
        ``sessions`` (their ids, ``<subject>/<date>/<number>``) and ``n_datasets``.
    """
    import pandas as pd
    from one.alf.cache import make_parquet_db

    if urls.is_local(root):
        local = Path(urls.local_path(root))
        make_parquet_db(local, hash_ids=False, hash_files=True)
        _mark_default_revisions(local / "datasets.pqt")
        tables = local
    else:
        import tempfile

        fs, path = urls.get_fs(root, storage_options)
        tables = Path(tempfile.mkdtemp(prefix="neuropool-one-"))
        try:
            for session in fs.glob(f"{path}/{SESSION_GLOB}"):
                rel = session[len(path):].strip("/")
                fs.get(session + "/", str(tables / rel) + "/", recursive=True)
            make_parquet_db(tables, hash_ids=False, hash_files=True)
            _mark_default_revisions(tables / "datasets.pqt")
            for name in TABLES:
                fs.put(str(tables / name), f"{path}/{name}")
        except Exception:
            shutil.rmtree(tables, ignore_errors=True)
            raise
    try:
        sessions = pd.read_parquet(tables / "sessions.pqt")
        n_datasets = len(pd.read_parquet(tables / "datasets.pqt"))
    finally:
        if not urls.is_local(root):
            shutil.rmtree(tables, ignore_errors=True)
    return {"sessions": [str(s) for s in sessions["id"]], "n_datasets": n_datasets}


def _mark_default_revisions(path: Path) -> None:
    """Add ONE's ``default_revision`` column (True: our datasets have one revision each).

    Without it ONE warns "No default revision" on every dataset it loads.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    frame = table.to_pandas()
    frame["default_revision"] = True
    out = pa.Table.from_pandas(frame)
    keep = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    pq.write_table(out.replace_schema_metadata({**(out.schema.metadata or {}), **keep}), path)
