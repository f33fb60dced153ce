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


def wait_for_api(env: dict[str, str], timeout: float) -> None:
    """Wait until the Prefect API in ``env["PREFECT_API_URL"]`` answers its health check.

    Raises
    ------
    ConfigError
        Naming the URL and the last error when it does not answer within ``timeout`` seconds.
    """
    import time
    import urllib.error
    import urllib.request

    url = env.get("PREFECT_API_URL", "")
    if not url:
        raise ConfigError("PREFECT_API_URL is not set: point it at the Prefect API, e.g. "
                          "http://prefect-server:4200/api")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except (OSError, urllib.error.URLError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise ConfigError(f"the Prefect API at {url} did not answer within {timeout:g} s "
                              f"({last}); check PREFECT_API_URL and that the server runs")
        time.sleep(2.0)


def deploy(
    prefect_file: str | Path = DEFAULT_PREFECT_FILE,
    *,
    names: list[str] | None = None,
    raw_root: str = "",
    output: str = "",
    config: str = "default",
    cluster: str = "",
    gpu_slots: int = 1,
    pool: str | None = None,
    pool_type: str | None = None,
    base_job_template: str | Path | None = None,
    wait: float = 0.0,
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
    pool : str, optional
        Put the deployments on this work pool instead of the one the file names (the Helm
        chart's ``prefect.worker.pool``).
    pool_type : str, optional
        Type of a work pool created here (``process`` or ``kubernetes``); default: ``lab`` is
        process, ``kubernetes`` is kubernetes, and ``pool`` must then be one of those.
    base_job_template : path, optional
        The base job template (JSON) a work pool created here gets, e.g. the chart's Job of a
        kubernetes pool; an existing pool's template is updated to it.
    wait : float
        Seconds to wait for the Prefect API to answer before deploying (0: do not wait).

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
    if pool_type is not None and pool_type not in WORK_POOL_TYPES.values():
        raise ConfigError(f"--pool-type {pool_type!r}: expected one of "
                          f"{', '.join(sorted(set(WORK_POOL_TYPES.values())))}")
    if base_job_template is not None and not Path(base_job_template).is_file():
        raise ConfigError(f"--base-job-template {base_job_template}: no such file")
    env = dict(os.environ, NEUROPOOL_RAW_ROOT=raw_root, NEUROPOOL_OUTPUT=output,
               NEUROPOOL_CONFIG=config, NEUROPOOL_CLUSTER=cluster)
    if wait > 0:
        wait_for_api(env, wait)
    pools = {pool} if pool else {(d.get("work_pool") or {}).get("name") for d in chosen} - {None}
    for name in sorted(pools):
        _ensure_pool(name, pool_type or WORK_POOL_TYPES.get(name), base_job_template, env)
    args = ["--no-prompt", "deploy", "--prefect-file", str(path)]
    for d in chosen:
        args += ["--name", d["full_name"]]
    if pool:
        args += ["--pool", pool]
    _prefect(*args, env=env)
    from neuropool.graphs.flows import ensure_gpu_limit, gpu_limit_name

    limit = gpu_limit_name()
    if limit:
        ensure_gpu_limit(limit, gpu_slots, update=True)
    return [d["full_name"] for d in chosen]


def _ensure_pool(name: str, pool_type: str | None, template: str | Path | None,
                 env: dict[str, str]) -> None:
    """Create work pool ``name`` when missing; give an existing one ``template`` when given."""
    template_args = ["--base-job-template", str(template)] if template else []
    if _prefect("work-pool", "inspect", name, env=env, check=False).returncode == 0:
        if template_args:
            _prefect("work-pool", "update", name, *template_args, env=env)
        return
    if pool_type is None:
        raise ConfigError(f"work pool {name!r} does not exist; create it first with "
                          f"`prefect work-pool create {name} --type process` (or kubernetes), "
                          "or give --pool-type")
    _prefect("work-pool", "create", name, "--type", pool_type, *template_args, env=env)


def cmd_deploy(args: argparse.Namespace) -> int:
    applied = deploy(args.prefect_file, names=args.name, raw_root=args.raw_root or "",
                     output=args.output or "", config=args.config, cluster=args.cluster or "",
                     gpu_slots=args.gpu_slots, pool=args.pool, pool_type=args.pool_type,
                     base_job_template=args.base_job_template, wait=args.wait_for_api)
    for name in applied:
        print(f"deployed {name}")
    print(f"Lab servers take runs with: prefect worker start --pool {args.pool or 'lab'}")
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
    p.add_argument("--pool", metavar="NAME",
                   help="work pool for the deployments, instead of the one the file names "
                        "(created if missing)")
    p.add_argument("--pool-type", choices=sorted(set(WORK_POOL_TYPES.values())),
                   help="type of a work pool created here (default: lab is process, kubernetes "
                        "is kubernetes)")
    p.add_argument("--base-job-template", metavar="FILE",
                   help="JSON base job template for the work pool (e.g. the Helm chart's Job "
                        "of a kubernetes pool)")
    p.add_argument("--wait-for-api", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for the Prefect API to answer first (default: 0, "
                        "do not wait); for containers that start beside the server")
    p.set_defaults(func=cmd_deploy)
