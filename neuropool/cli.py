"""The ``neuropool`` command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from neuropool import __version__
from neuropool.cluster.commands import add_tls_args
from neuropool.errors import (
    AtlasError,
    ChecksumError,
    ConfigError,
    GraphError,
    MetadataError,
    MissingDependencyError,
    NeuropoolError,
    RawDataError,
    ResourceError,
    SortingError,
    SourceNotFoundError,
    StoreError,
    TaskFailedError,
    TruncatedFileError,
    UnknownFormatError,
)
from neuropool.tasks import STANDARD as TASK_CHOICES  # the standard pipeline's tasks


class Progress:
    """What the CLI shows while it works: a line per event, and bars on a terminal.

    Every event of a run (a task started, done, skipped as already committed, failed...) is a
    time-stamped line on stdout. When stderr is a terminal, each running task also has a tqdm bar
    there (blocks done, elapsed time), and so has each long step (:meth:`step`); elsewhere (CI
    logs, pipes) there are no bars and no carriage returns, only lines, with one about a task's
    blocks at most every ``interval`` seconds.

    Parameters
    ----------
    t0 : float, optional
        ``time.perf_counter()`` at the start, for the time stamps (default: now).
    bars : bool, optional
        Draw bars (default: when stderr is a terminal).
    interval : float
        Seconds between two lines about the blocks of one task, without bars.
    """

    def __init__(self, t0: float | None = None, *, bars: bool | None = None, interval: float = 30.0) -> None:
        self.t0 = time.perf_counter() if t0 is None else t0
        self.out, self.err = sys.stdout, sys.stderr
        isatty = getattr(self.err, "isatty", lambda: False)
        self.bars = (isatty() and os.environ.get("TERM") != "dumb") if bars is None else bars
        self.interval = interval
        self._open: dict[str, Any] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def line(self, text: str) -> None:
        """Print a time-stamped line (above the bars, if any)."""
        stamped = f"[{time.perf_counter() - self.t0:7.1f} s] {text}"
        if self._open:
            from tqdm import tqdm

            tqdm.write(stamped, file=self.out)
            self.out.flush()
        else:
            print(stamped, file=self.out, flush=True)

    def __call__(self, event: str, node: str, info: dict[str, Any]) -> None:
        """The runner's progress callback (see :func:`neuropool.graphs.runner.run_graph`)."""
        if event == "start":
            n = info["blocks"]
            self.line(f"{node}: started ({n} block{'s' * (n > 1)})")
            self._last[node] = time.perf_counter()
            self._bar(node, node, n, unit="block")
        elif event == "block":
            self._block(node, info["done"], info["total"])
        elif event == "done":
            self._close(node)
            self.line(f"{node}: done in {info['wall_s']:.1f} s")
        elif event == "cached":
            self.line(f"{node}: already committed with the same inputs and parameters, skipped")
        elif event == "failed":
            self._close(node)
            self.line(f"{node}: FAILED: {info['error'].splitlines()[0][:500] if info['error'] else ''}")
        elif event == "skipped":
            self.line(f"{node}: skipped, because {info['cause']} failed")
        elif event == "cancelled":
            self._close(node)
            self.line(f"{node}: cancelled")

    def _block(self, node: str, done: int, total: int) -> None:
        bar = self._open.get(node)
        if bar is not None:
            bar.update(done - bar.n)
        elif done < total and time.perf_counter() - self._last.get(node, 0.0) >= self.interval:
            self._last[node] = time.perf_counter()
            self.line(f"{node}: {done}/{total} blocks done")

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """A long step: a line when it starts and, on a terminal, a bar with its elapsed time."""
        self.line(f"{what} ...")
        key = f"step:{what}"
        self._bar(key, what, None, unit="s")
        try:
            yield
        finally:
            self._close(key)

    def _bar(self, key: str, desc: str, total: int | None, unit: str) -> None:
        if not self.bars:
            return
        from tqdm import tqdm

        fmt = None if total is not None else "{desc}: {elapsed}"
        with self._lock:
            self._open[key] = tqdm(total=total, desc=desc, unit=unit, file=self.err, leave=False,
                                   dynamic_ncols=True, bar_format=fmt)
            if self._ticker is None:  # redraws the bars so that elapsed times move between events
                self._ticker = threading.Thread(target=self._tick, name="neuropool-progress", daemon=True)
                self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for bar in self._open.values():
                    bar.refresh()

    def _close(self, key: str) -> None:
        with self._lock:
            bar = self._open.pop(key, None)
            if bar is not None:
                bar.close()

    def close(self) -> None:
        """Remove every bar and stop redrawing."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        for key in list(self._open):
            self._close(key)


def _pool(address: str | None, workers: int | None, tls: tuple[str | None, ...] = (None, None, None)) -> Any:
    from neuropool.cluster import connect
    from neuropool.cluster.tls import check_tls_files, security_from_files

    if address in (None, "local"):
        n = workers or os.cpu_count() or 1
        return connect(None, n_workers=n, threads_per_worker=1)
    if workers is not None:
        raise ConfigError("--workers applies to the embedded LocalCluster only, not with --cluster ADDRESS")
    if check_tls_files(*tls):
        return connect(address, security=security_from_files(*tls))
    return connect(address)


def run_session(source: str, *, out: str | None, config: str | None, cluster: str | None,
                until: str | None, only: list[str] | None, workers: int | None, new: bool,
                with_summary: bool = True, tls: tuple[str | None, ...] = (None, None, None),
                progress: Progress | None = None) -> int:
    """Run the standard graph on a session; print progress and the summary; return the exit code."""
    from neuropool.graphs import load_config, run_graph, standard_graph
    from neuropool.io import urls
    from neuropool.io.session import open_session
    from neuropool.io.store import DerivedAsset
    from neuropool.summary import collect, render

    cfg = load_config(config)
    session = open_session(source)
    graph = standard_graph(session, cfg)
    if until or only:
        graph = graph.subset(until=until, only=only)
    fs, path = urls.get_fs(session.url)
    session_dir = session.url if fs.isdir(path) else urls.parent(session.url)
    out_root = out or urls.parent(session_dir)
    if new:
        asset = DerivedAsset.create(out_root, session.url, label=cfg.label)
    else:
        asset = DerivedAsset.open_or_create(out_root, session.url, label=cfg.label)
    print(f"Session {session.name}: {len(session.probes)} probe(s): {', '.join(session.probes)}")
    print(f"Derived asset: {asset.url}", flush=True)
    shown = progress or Progress()
    try:
        with shown.step("starting the pool"):
            started = _pool(cluster, workers, tls)
        with started as pool:
            print(f"Pool: {pool.kind} at {pool.address}, {len(pool.worker_resources())} worker(s)", flush=True)
            report = run_graph(graph, asset, pool, progress=shown)
        if with_summary:
            with shown.step("summary: units, QC, ground truth and positions"):
                text = render(collect(report, session))
            print()
            print(text)
    finally:
        if progress is None:
            shown.close()
    if not report.ok:
        print(f"\n{len(report.failed())} task(s) did not complete; committed results are kept, "
              "and running the same command again resumes from them "
              f"(neuropool status {asset.url} lists every task).", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``neuropool demo``: generate a session with known units, then process it."""
    from neuropool.demo import make_demo_session
    from neuropool.io import urls

    out = args.out
    remote = not urls.is_local(out)
    # the session is generated on the local disk (sorter-style libraries write there), then
    # uploaded when --out is elsewhere (s3://...: credentials and endpoint from the usual
    # AWS_* environment variables)
    root = Path(tempfile.mkdtemp(prefix="neuropool-demo-")) if remote else Path(urls.local_path(out))
    progress = Progress()
    try:
        with progress.step(f"generating a {args.duration:g} s Neuropixels 1.0 session with "
                           f"{args.units} true units (seed {args.seed})"):
            session = make_demo_session(root, duration=args.duration, n_units=args.units, seed=args.seed)
        session_url = str(session)
        if remote:
            session_url = urls.join(out, session.name)
            fs, path = urls.get_fs(session_url)
            with progress.step(f"uploading it to {session_url}"):
                fs.put(str(session) + "/", path + "/", recursive=True)
        progress.line(f"session written: {session_url}")
        return run_session(session_url, out=out, config=args.config, cluster=args.cluster,
                           until=None, only=None, workers=args.workers, new=True, tls=_tls(args),
                           progress=progress)
    finally:
        progress.close()
        if remote:
            shutil.rmtree(root, ignore_errors=True)


def cmd_run(args: argparse.Namespace) -> int:
    """``neuropool run``: the standard graph on a session (see :func:`run_session`)."""
    return run_session(args.source, out=args.out, config=args.config, cluster=args.cluster,
                       until=args.until, only=args.only, workers=args.workers, new=args.new,
                       tls=_tls(args))


def cmd_status(args: argparse.Namespace) -> int:
    """``neuropool status``: print the state of every node; 0 when all are committed, else 1."""
    from neuropool.status import asset_status, render_status, resolve_asset

    asset, session_graph = resolve_asset(args.asset, out=args.out, config=args.config)
    status = asset_status(asset, fallback_graph=session_graph, check_current=not args.no_check)
    print(json.dumps(status.to_dict(), indent=2) if args.json else render_status(status))
    return 0 if status.ok else 1


def _tls(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    return (args.tls_ca_file, args.tls_cert, args.tls_key)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``neuropool`` command."""
    parser = argparse.ArgumentParser(
        prog="neuropool",
        description="Neuropixels recordings in; sorted, quality-checked, brain-localised units out. "
                    "Runs decompress -> preprocess -> sort -> qc -> localize -> export -> nwb per probe, "
                    "as a task graph over a pool of Dask workers.",
    )
    parser.add_argument("--version", action="version", version=f"neuropool {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors "
                        "(also accepted after the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def pool_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="pipeline YAML (default: built-in "
                       "defaults, as in configs/pipeline/default.yaml)")
        p.add_argument("--cluster", metavar="ADDRESS", help="Dask scheduler to use, e.g. "
                       "tcp://host:8786, or tls://host:8786 with the --tls-* options (or the "
                       "DASK_DISTRIBUTED__COMM__TLS__* variables that neuropool certs prints); "
                       "'inprocess' runs everything in this process; default: an embedded "
                       "LocalCluster")
        p.add_argument("--workers", type=int, metavar="N", help="workers of the embedded "
                       "LocalCluster (default: one per core)")
        add_tls_args(p, "client")

    demo = sub.add_parser(
        "demo", help="generate a realistic Neuropixels session and process it end to end",
        description="Generate a Neuropixels 1.0 session (384 channels + sync, 30 kHz, SpikeGLX "
                    ".meta, mtscomp .cbin) with known ground-truth units and a probe trajectory, "
                    "run the whole graph on an embedded Dask LocalCluster, and print units found, "
                    "units passing QC, ground-truth recovery, CCF positions, wall time per task, "
                    "and where every output is.")
    demo.add_argument("--out", default="neuropool-demo", metavar="URL",
                      help="folder for the session and its derived asset (default: ./neuropool-demo)")
    demo.add_argument("--duration", type=float, default=20.0, metavar="S",
                      help="seconds of recording (default: 20)")
    demo.add_argument("--seed", type=int, default=0, metavar="N", help="generator seed (default: 0)")
    demo.add_argument("--units", type=int, default=40, metavar="N", help="true units (default: 40)")
    pool_args(demo)
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser(
        "run", help="run the standard graph on an existing session folder or URL",
        description="Run the standard graph on a session: a folder (with session.json, or "
                    "SpikeGLX *.ap.cbin/*.ap.bin files, or Open Ephys binary recordings) or a single "
                    "recording file, local or any fsspec URL. Results go to a derived asset "
                    "<session>_<label>_<date>_<time> under --out; running again resumes it, skipping "
                    "tasks whose inputs, parameters and version are unchanged.")
    run.add_argument("source", metavar="SOURCE", help="session folder or recording file (path or URL)")
    run.add_argument("--out", metavar="URL", help="where the derived asset goes (default: the "
                     "folder holding the session; never inside it)")
    run.add_argument("--until", choices=TASK_CHOICES, metavar="TASK",
                     help="stop after TASK (and what it needs): " + ", ".join(TASK_CHOICES))
    run.add_argument("--only", nargs="+", choices=TASK_CHOICES, metavar="TASK",
                     help="run only these tasks; their inputs must already be committed")
    run.add_argument("--new", action="store_true",
                     help="start a new derived asset instead of resuming the latest one")
    pool_args(run)
    run.set_defaults(func=cmd_run)

    status = sub.add_parser(
        "status", help="every task of a derived asset: committed, failed or not run",
        description="Show every task node of a derived asset (the graph its last run recorded in "
                    "processing.json, and every commit): committed (when, wall time, and whether "
                    "a run would still skip it), failed (with the error), not run (an upstream "
                    "task is not committed), or not committed (running now, interrupted, or not "
                    "started: runs do not record starts). Exit code 0 when every task is "
                    "committed, 1 otherwise.")
    status.add_argument("asset", metavar="ASSET", help="derived asset URL (path, s3://...), or a "
                        "session folder or recording, whose latest asset is shown (as neuropool "
                        "run resumes it)")
    status.add_argument("--out", metavar="URL", help="for a session: where its derived assets "
                        "are (default: the folder holding the session)")
    status.add_argument("--config", metavar="FILE", help="for a session: the pipeline YAML whose "
                        "label names its assets (default: processed)")
    status.add_argument("--json", action="store_true", help="print JSON for machines")
    status.add_argument("--no-check", action="store_true", help="do not check whether committed "
                        "tasks are still current (saves importing every task)")
    status.set_defaults(func=cmd_status)
    from neuropool.cluster.commands import register_commands

    register_commands(sub)
    from neuropool.graphs.deploy import register_deploy

    register_deploy(sub)
    from neuropool.catalogs import register_ls

    register_ls(sub)
    from neuropool.report import register_report

    register_report(sub)
    for command in sub.choices.values():  # --debug after the subcommand too
        with suppress(argparse.ArgumentError):  # an alias of a parser that has it already
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show the full traceback on errors")
    return parser


_RESUME = ("Committed results are kept: fix the cause and run the same command again to resume "
           "from them (neuropool status ASSET lists every task's state).")
_DATA = "Copy the session again from the acquisition machine, or set this probe aside."
#: Added to the hint when the message names an S3 URL.
_S3 = "For s3:// URLs, the AWS_* environment variables give the credentials and the endpoint."

#: (error class, exit code, hint), most specific first: the first class an error is wins.
ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (TaskFailedError, 1, _RESUME),
    (SortingError, 1, _RESUME),
    (TruncatedFileError, 2, "The file was probably cut short while being copied. " + _DATA),
    (ChecksumError, 2, "The file changed since it was recorded. " + _DATA),
    (MetadataError, 2, "A header (.meta, .ch, structure.oebin) must come unedited with its data file. " + _DATA),
    (RawDataError, 2, "The recording's files disagree with each other. " + _DATA),
    (SourceNotFoundError, 2, "Check the path or URL."),
    (UnknownFormatError, 2, "neuropool reads a folder with session.json, SpikeGLX recordings "
                            "(*.ap.cbin or *.ap.bin with their .meta) and Open Ephys binary "
                            "recordings (structure.oebin)."),
    (ConfigError, 2, "configs/pipeline/default.yaml lists every parameter with its default; "
                     "neuropool COMMAND --help lists the options."),
    (MissingDependencyError, 2, "Install what the message names, then run the command again."),
    (ResourceError, 2, "neuropool worker --help shows how a worker offers GPUs and other resources."),
    (GraphError, 2, "neuropool run --help lists the tasks; --only runs tasks whose inputs are "
                    "already committed in the derived asset."),
    (AtlasError, 2, "localize.atlas.url must name an Allen CCF annotation volume (.nrrd) of "
                    "integer region ids."),
    (StoreError, 2, "Check the URL: a local path, or an fsspec URL (s3://, gs://, memory://...) "
                    "whose package is installed (s3:// needs neuropool[s3]), where you may read "
                    "and write."),
    (NeuropoolError, 2, "neuropool COMMAND --help describes the command and its options."),
    (FileNotFoundError, 2, "Check the path or URL."),
    (IsADirectoryError, 2, "A file was expected there, not a folder: check the path."),
    (NotADirectoryError, 2, "A folder was expected there, not a file: check the path."),
    (PermissionError, 2, "Check that you may read (and, for outputs, write) there."),
    (ImportError, 2, "A package neuropool needs is missing or broken: reinstall neuropool "
                     "(pip install neuropool, with the extras you use)."),
    (OSError, 2, "A file, network or permission problem: check the paths and URLs given, and "
                 "the scheduler address of --cluster."),
)


def _paragraph(text: str) -> str:
    """``text`` with blank lines and trailing spaces removed: one paragraph."""
    return "\n".join(line.rstrip() for line in text.strip().splitlines() if line.strip())


def describe_error(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-paragraph message for an error that ended a command.

    Errors of neuropool and of the user's environment (a missing file, a bad URL, an invalid
    config value, a missing package, S3 credentials) give their message and a hint (:data:`ERRORS`);
    exit code 1 for a failed task, 2 for the others. Anything else is a bug of neuropool: exit
    code 1, and a message naming the exception and asking for the traceback that ``--debug``
    prints.

    Parameters
    ----------
    exc : BaseException
        The error.

    Returns
    -------
    (int, str)
        The exit code, and ``neuropool: error: <message and hint>`` (no blank line in it).
    """
    message = _paragraph(str(exc)) or type(exc).__name__
    from_s3 = type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "s3fs")
    code, hint = 1, None
    if from_s3:  # what s3fs does not translate into an OSError
        code, hint = 2, "An S3 request failed: check the URL and the bucket."
        message = f"{type(exc).__name__}: {message}"
    for cls, cls_code, cls_hint in ERRORS if hint is None else ():
        if isinstance(exc, cls):
            code, hint = cls_code, cls_hint
            break
    if hint is None:  # a bug
        message = f"unexpected {type(exc).__name__}: {message[:1000]}{' ...' * (len(message) > 1000)}"
        hint = ("This is a bug in neuropool, not a problem with your data or command: please "
                "report it with the full traceback, which the same command prints when given --debug.")
    elif from_s3 or "s3://" in message:
        hint += " " + _S3
    sep = "\n" if "\n" in message else ("" if message.endswith((".", "!", "?")) else ".") + " "
    return code, f"neuropool: error: {message}{sep}{hint}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``neuropool`` command; returns the exit code.

    An error prints one paragraph, ``neuropool: error: <what and how to fix it>``, on stderr,
    and the full traceback before it with ``--debug`` (see :func:`describe_error` for the exit
    codes); an interrupt (Ctrl-C) exits with 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("neuropool: interrupted; committed results are kept", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error becomes a message and an exit code
        code, text = describe_error(e)
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(text, file=sys.stderr, flush=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
