"""The ``neuropool`` command line."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from neuropool import __version__
from neuropool.cluster.commands import add_tls_args
from neuropool.errors import ConfigError, NeuropoolError
from neuropool.tasks import STANDARD as TASK_CHOICES  # the standard pipeline's tasks


def _progress(t0: float) -> Any:
    def report(event: str, node: str, info: dict[str, Any]) -> None:
        stamp = f"[{time.perf_counter() - t0:7.1f} s]"
        if event == "start":
            print(f"{stamp} {node}: started ({info['blocks']} block{'s' * (info['blocks'] > 1)})", flush=True)
        elif event == "done":
            print(f"{stamp} {node}: done in {info['wall_s']:.1f} s", flush=True)
        elif event == "cached":
            print(f"{stamp} {node}: already committed with the same inputs and parameters, skipped", flush=True)
        elif event == "failed":
            print(f"{stamp} {node}: FAILED: {info['error'].splitlines()[0][:500]}", flush=True)
        elif event == "skipped":
            print(f"{stamp} {node}: skipped, because {info['cause']} failed", flush=True)
    return report


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
                with_summary: bool = True, tls: tuple[str | None, ...] = (None, None, None)) -> int:
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
    print(f"Derived asset: {asset.url}")
    t0 = time.perf_counter()
    with _pool(cluster, workers, tls) as pool:
        print(f"Pool: {pool.kind} at {pool.address}, {len(pool.worker_resources())} worker(s)", flush=True)
        report = run_graph(graph, asset, pool, progress=_progress(t0))
    if with_summary:
        print()
        print(render(collect(report, session)))
    if not report.ok:
        print(f"\n{len(report.failed())} task(s) did not complete; committed results are kept, "
              "and running the same command again resumes from them.", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from neuropool.demo import make_demo_session
    from neuropool.io import urls

    out = args.out
    remote = not urls.is_local(out)
    # the session is generated on the local disk (sorter-style libraries write there), then
    # uploaded when --out is elsewhere (s3://...: credentials and endpoint from the usual
    # AWS_* environment variables)
    root = Path(tempfile.mkdtemp(prefix="neuropool-demo-")) if remote else Path(urls.local_path(out))
    t0 = time.perf_counter()
    print(f"Generating a {args.duration:g} s Neuropixels 1.0 session with {args.units} true units "
          f"(seed {args.seed}) ...", flush=True)
    try:
        session = make_demo_session(root, duration=args.duration, n_units=args.units, seed=args.seed)
        session_url = str(session)
        if remote:
            session_url = urls.join(out, session.name)
            fs, path = urls.get_fs(session_url)
            fs.put(str(session) + "/", path + "/", recursive=True)
        print(f"[{time.perf_counter() - t0:7.1f} s] session written: {session_url}", flush=True)
        return run_session(session_url, out=out, config=args.config, cluster=args.cluster,
                           until=None, only=None, workers=args.workers, new=True, tls=_tls(args))
    finally:
        if remote:
            shutil.rmtree(root, ignore_errors=True)


def cmd_run(args: argparse.Namespace) -> int:
    return run_session(args.source, out=args.out, config=args.config, cluster=args.cluster,
                       until=args.until, only=args.only, workers=args.workers, new=args.new,
                       tls=_tls(args))


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
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
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
    from neuropool.cluster.commands import register_commands

    register_commands(sub)
    from neuropool.graphs.deploy import register_deploy

    register_deploy(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``neuropool`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NeuropoolError as e:
        if args.debug:
            traceback.print_exc()
        print(f"neuropool: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuropool: interrupted; committed results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
