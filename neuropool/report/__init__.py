"""``neuropool report ASSET``: one self-contained HTML page of a derived asset's QC.

The page shows the session and probe metadata, the task timeline (start, end and wall time of
every committed node, failed nodes with their error), raw-data QC per channel (RMS, spectra, bad
channels), a drift map, unit yield and quality-metric distributions with the configured
thresholds, unit positions on the probe and in the brain, and the versions and parameters of
every task. A section whose inputs are missing (its task failed, did not run, or is not in the
graph) says why instead. Figures are embedded as ``data:`` URIs and the CSS is inline: the file
makes no request and needs no JavaScript, so it can be mailed, archived or opened offline.

Where it goes (:func:`default_out`): ``<asset>/report.html`` for an asset on the local disk that
may be written to; otherwise, for an asset on S3 (or any remote store, which the report never
writes to) or in a read-only folder, ``./<asset name>.report.html``. ``--out`` (``out=``) may name
any path or fsspec URL. The asset's datasets and records are only read.

>>> from neuropool.report import write_report
>>> write_report("/data/mouse1_2026-11-21_001_processed_2026-11-22_10-00-00")   # doctest: +SKIP
'/data/mouse1_2026-11-21_001_processed_2026-11-22_10-00-00/report.html'

Modules: :mod:`~neuropool.report.collect` gathers the numbers (plain data),
:mod:`~neuropool.report.figures` draws them (matplotlib, Agg), :mod:`~neuropool.report.html`
builds the page.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from neuropool.errors import StoreError
from neuropool.io import urls
from neuropool.io.store import DerivedAsset

#: The report's file name inside a local asset (the default ``--out``).
REPORT_NAME = "report.html"

__all__ = ["REPORT_NAME", "cmd_report", "default_out", "register_report", "render_report", "write_report"]


def render_report(asset: DerivedAsset | str, storage_options: dict[str, Any] | None = None) -> str:
    """The report page of ``asset``, as HTML text.

    Parameters
    ----------
    asset : DerivedAsset or str
        The derived asset, or its URL (local path or any fsspec URL; it is only read).
    storage_options : dict, optional
        fsspec options for a URL (credentials, ``endpoint_url``...).

    Returns
    -------
    str

    Raises
    ------
    SourceNotFoundError
        ``asset`` is not a derived asset (no ``data_description.json``).
    """
    from neuropool.report.collect import collect
    from neuropool.report.html import render

    if isinstance(asset, str):
        asset = DerivedAsset(asset, storage_options)
    return render(collect(asset))


def default_out(asset: DerivedAsset) -> str:
    """Where the report goes when no ``--out`` is given.

    ``<asset>/report.html`` for an asset on the local disk that may be written to; otherwise
    (an asset on S3 or another remote store, which the report never writes to, or a read-only
    folder) ``<asset name>.report.html`` in the current directory.

    Parameters
    ----------
    asset : DerivedAsset

    Returns
    -------
    str
        A local path.
    """
    fs, path = urls.get_fs(asset.url, asset.storage_options)
    if urls.is_local_fs(fs) and os.path.isdir(path) and os.access(path, os.W_OK):
        return os.path.join(path, REPORT_NAME)
    return os.path.join(os.getcwd(), f"{asset.name}.{REPORT_NAME}")


def write_report(asset: DerivedAsset | str, out: str | None = None,
                 storage_options: dict[str, Any] | None = None) -> str:
    """Write the report page of ``asset`` and return where it went.

    Parameters
    ----------
    asset : DerivedAsset or str
        The derived asset, or its URL (only read).
    out : str, optional
        Where to write the page: a path or any fsspec URL (``s3://...`` is written only when
        given here). Default: :func:`default_out`.
    storage_options : dict, optional
        fsspec options for ``asset`` given as a URL, and for ``out``.

    Returns
    -------
    str
        The path or URL written.
    """
    if isinstance(asset, str):
        asset = DerivedAsset(asset, storage_options)
    target = out or default_out(asset)
    fs, path = urls.get_fs(target, storage_options if out else None)
    if fs.isdir(path):
        raise StoreError(f"{target}: is a folder; give the report's file name (e.g. {urls.join(target, REPORT_NAME)})")
    text = render_report(asset)
    parent = os.path.dirname(path.rstrip("/"))
    if parent:
        fs.makedirs(parent, exist_ok=True)
    urls.write_whole(fs, path, text.encode("utf-8"))  # never half a page
    return target


# -- the command line ---------------------------------------------------------------------------


def register_report(subparsers: Any) -> None:
    """Add ``neuropool report`` to the command's subparsers.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``parser.add_subparsers()`` returned.
    """
    p = subparsers.add_parser(
        "report", help="write a self-contained HTML QC report of a derived asset",
        description="Write one self-contained HTML page (figures embedded, no JavaScript, no "
                    "network) with a derived asset's session and probe metadata, task timeline and "
                    "failures, raw-data QC per channel, drift map, unit yield and quality metrics "
                    "against the QC thresholds, unit positions on the probe and in the brain, and "
                    "every task's version and parameters. Sections whose task did not run say why. "
                    "The asset's datasets and records are only read; an asset on S3 (credentials "
                    "from the usual AWS_* variables) is never written to: its report goes to the "
                    "current folder unless --out says otherwise.")
    p.add_argument("asset", metavar="ASSET", help="derived asset URL (path, s3://...), or a session "
                   "folder or recording, whose latest asset beside it is reported")
    p.add_argument("--out", metavar="FILE", help=f"where to write the page (path or URL; default: "
                   f"ASSET/{REPORT_NAME} for a local asset you may write to, else "
                   f"./<asset name>.{REPORT_NAME})")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Run ``neuropool report``: write the page and print where it is; returns the exit code (0).

    Errors (no such asset, unreadable files) are raised for the CLI to describe (exit code 2).
    """
    from neuropool.status import resolve_asset

    asset, _ = resolve_asset(args.asset)
    written = write_report(asset, args.out)
    print(f"report written: {written}")
    return 0
