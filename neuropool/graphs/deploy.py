"""``neuropool deploy``: apply ``configs/prefect.yaml`` to a Prefect server in one command.

It fills the file's ``{{ $NEUROPOOL_* }}`` variables from its options, creates the work pools
the deployments name when they are missing (``lab``: process, ``kubernetes``: kubernetes), runs
``prefect deploy`` on the file, and sets the slots of the GPU concurrency limit. Prefect itself
is driven through its command line here; only :mod:`neuropool.graphs.flows` imports it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from neuropool.errors import ConfigError, MissingDependencyError

#: Types of the work pools ``neuropool deploy`` creates when a deployment names them.
WORK_POOL_TYPES = {"lab": "process", "kubernetes": "kubernetes"}

DEFAULT_PREFECT_FILE = "configs/prefect.yaml"


def _prefect(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "prefect", *args]
    done = subprocess.run(cmd, env=env, text=True, capture_output=True)
    if check and done.returncode != 0:
        raise ConfigError(f"`prefect {' '.join(args)}` failed (exit {done.returncode}):\n"
                          f"{(done.stdout + done.stderr).strip()[-2000:]}")
    return done


def deployments_in(prefect_file: Path) -> list[dict[str, Any]]:
    """The deployments a prefect.yaml declares, each with its ``flow/name`` as ``full_name``."""
    try:
        doc = yaml.safe_load(prefect_file.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{prefect_file}: no such file (give --prefect-file)") from None
    out = []
    for d in doc.get("deployments") or []:
        flow = d.get("entrypoint", "").rsplit(":", 1)[-1].replace("_", "-")
        out.append({**d, "full_name": f"{flow}/{d.get('name')}"})
    if not out:
        raise ConfigError(f"{prefect_file}: declares no deployments")
    return out


def deploy(
    prefect_file: str | Path = DEFAULT_PREFECT_FILE,
    *,
    names: list[str] | None = None,
    raw_root: str = "",
    output: str = "",
    config: str = "default",
    cluster: str = "",
    gpu_slots: int = 1,
) -> list[str]:
    """Apply the deployments of ``prefect_file`` to the Prefect server in ``PREFECT_API_URL``.

    Parameters
    ----------
    prefect_file : path
        The deployments file (default ``configs/prefect.yaml``).
    names : list of str, optional
        Deploy only these (``process-session/adhoc``...); default: all.
    raw_root, output, config, cluster : str
        Fill ``NEUROPOOL_RAW_ROOT`` (what ``discover-sessions/nightly`` searches),
        ``NEUROPOOL_OUTPUT``, ``NEUROPOOL_CONFIG`` and ``NEUROPOOL_CLUSTER`` in the file.
    gpu_slots : int
        Slots of the GPU concurrency limit: GPU tasks that may run at once across all flow runs.

    Returns
    -------
    list of str
        The deployments applied.
    """
    if importlib.util.find_spec("prefect") is None:
        raise MissingDependencyError("neuropool deploy needs Prefect: pip install 'neuropool[prefect]'")
    path = Path(prefect_file)
    chosen = deployments_in(path)
    if names:
        unknown = sorted(set(names) - {d["full_name"] for d in chosen})
        if unknown:
            raise ConfigError(f"{path} has no deployment(s) {unknown}; it has "
                              f"{', '.join(d['full_name'] for d in chosen)}")
        chosen = [d for d in chosen if d["full_name"] in names]
    if raw_root == "" and any(d["full_name"] == "discover-sessions/nightly" for d in chosen):
        raise ConfigError("discover-sessions/nightly needs the folder to search: give --raw-root URL")
    env = dict(os.environ, NEUROPOOL_RAW_ROOT=raw_root, NEUROPOOL_OUTPUT=output,
               NEUROPOOL_CONFIG=config, NEUROPOOL_CLUSTER=cluster)
    for pool in sorted({(d.get("work_pool") or {}).get("name") for d in chosen} - {None}):
        if _prefect("work-pool", "inspect", pool, env=env, check=False).returncode == 0:
            continue
        if pool not in WORK_POOL_TYPES:
            raise ConfigError(f"work pool {pool!r} does not exist; create it first with "
                              f"`prefect work-pool create {pool} --type process` (or kubernetes)")
        _prefect("work-pool", "create", pool, "--type", WORK_POOL_TYPES[pool], env=env)
    args = ["--no-prompt", "deploy", "--prefect-file", str(path)]
    for d in chosen:
        args += ["--name", d["full_name"]]
    _prefect(*args, env=env)
    from neuropool.graphs.flows import ensure_gpu_limit, gpu_limit_name

    limit = gpu_limit_name()
    if limit:
        ensure_gpu_limit(limit, gpu_slots, update=True)
    return [d["full_name"] for d in chosen]


def cmd_deploy(args: argparse.Namespace) -> int:
    applied = deploy(args.prefect_file, names=args.name, raw_root=args.raw_root or "",
                     output=args.output or "", config=args.config, cluster=args.cluster or "",
                     gpu_slots=args.gpu_slots)
    for name in applied:
        print(f"deployed {name}")
    print("Lab servers take runs with: prefect worker start --pool lab")
    print("Run one session with: prefect deployment run 'process-session/adhoc' --param source=URL")
    return 0


def register_deploy(sub: Any) -> None:
    """Add ``neuropool deploy`` to the command's subparsers."""
    p = sub.add_parser(
        "deploy", help="apply configs/prefect.yaml to the Prefect server (PREFECT_API_URL)",
        description="Create the work pools (lab: process, kubernetes) if missing, apply the "
                    "deployments of a prefect.yaml (process-session/adhoc, discover-sessions/"
                    "nightly, process-session/cluster), and set the GPU concurrency limit "
                    "($NEUROPOOL_GPU_LIMIT, default neuropool-gpu).")
    p.add_argument("--prefect-file", default=DEFAULT_PREFECT_FILE, metavar="FILE",
                   help=f"deployments file (default: {DEFAULT_PREFECT_FILE})")
    p.add_argument("--name", action="append", metavar="FLOW/NAME",
                   help="deploy only this one (repeatable); default: all")
    p.add_argument("--raw-root", metavar="URL", help="folder of raw sessions the nightly "
                   "discovery searches (needed for discover-sessions/nightly)")
    p.add_argument("--output", metavar="URL", help="where derived assets go (default: beside "
                   "each session)")
    p.add_argument("--config", default="default", metavar="NAME",
                   help="pipeline config name or path (default: default)")
    p.add_argument("--cluster", metavar="ADDRESS", help="pool for the runs: address or profile "
                   "(default: an embedded LocalCluster on the machine running the flow)")
    p.add_argument("--gpu-slots", type=int, default=1, metavar="N",
                   help="GPU tasks that may run at once across all flow runs (default: 1)")
    p.set_defaults(func=cmd_deploy)
