"""``neuropool scheduler``, ``neuropool worker`` and ``neuropool certs``: pool the lab's machines.

One machine runs the scheduler; every lab server (with or without GPUs) joins it as a worker;
``neuropool run SESSION --cluster tcp://SCHEDULER:8786`` then spreads a session's graph over all
of them. ``neuropool certs`` makes the certificates that switch the whole pool to mutual TLS.

The scheduler and the worker run in the foreground until SIGINT (Ctrl-C) or SIGTERM, which close
them cleanly (a worker hands its tasks back to the scheduler first), so they suit systemd units,
``tmux`` sessions and containers alike. The worker runs under a Dask *nanny*: if the worker
process crashes (a sorter exhausting memory, a segfault) the nanny starts a new one, and the
scheduler re-runs the blocks that were lost on the other workers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from neuropool.errors import ConfigError

DEFAULT_PORT = 8786
DEFAULT_DASHBOARD_PORT = 8787


# -- parsing -----------------------------------------------------------------------------------


def parse_resources(text: str) -> dict[str, float]:
    """Parse ``"GPU=1 FOO=2"`` (spaces or commas between items) into ``{"GPU": 1.0, "FOO": 2.0}``.

    Raises
    ------
    ConfigError
        Naming the item that is not ``NAME=NUMBER`` (a number >= 0).
    """
    out: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--resources item {item!r} is not NAME=NUMBER; write e.g. "
                              "--resources \"GPU=1 FOO=2\"")
        try:
            amount = float(value)
        except ValueError:
            raise ConfigError(f"--resources item {item!r}: {value!r} is not a number; write e.g. "
                              f"{name}=1") from None
        if amount < 0 or amount != amount:
            raise ConfigError(f"--resources item {item!r}: the amount must be a number >= 0")
        if name in out:
            raise ConfigError(f"--resources names {name} twice ({text!r}); give each resource once")
        out[name] = amount
    return out


def _resources_arg(text: str) -> dict[str, float]:
    """argparse ``type=``: report a bad ``--resources`` as a usage error, before anything starts."""
    try:
        return parse_resources(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def advertised_resources(gpus: int | None, extra: dict[str, float] | None) -> dict[str, float]:
    """What a worker advertises: ``{"GPU": gpus}`` merged with ``--resources``.

    ``gpus=None`` means "not given": the ``GPU`` of ``--resources`` if there is one, else the
    GPUs ``nvidia-smi`` lists (0 without it).

    Raises
    ------
    ConfigError
        When ``--gpus`` and ``--resources GPU=`` disagree, or ``gpus`` is negative.
    """
    extra = dict(extra or {})
    if gpus is not None and gpus < 0:
        raise ConfigError(f"--gpus must be 0 or more, got {gpus}")
    if "GPU" in extra and gpus is not None and float(gpus) != extra["GPU"]:
        raise ConfigError(f"--gpus {gpus} and --resources GPU={extra['GPU']:g} disagree; "
                          "give the number of GPUs once")
    if "GPU" not in extra:
        if gpus is None:
            from neuropool.cluster.gpus import count_gpus

            gpus = count_gpus()
        extra["GPU"] = float(gpus)
    return {"GPU": extra.pop("GPU"), **extra}


def _security(args: argparse.Namespace) -> Any:
    from neuropool.cluster.tls import check_tls_files, security_from_files

    if not check_tls_files(args.tls_ca_file, args.tls_cert, args.tls_key):
        return None
    return security_from_files(args.tls_ca_file, args.tls_cert, args.tls_key, require_encryption=True)


# -- running until a signal ---------------------------------------------------------------------


async def _serve(server: Any, what: str) -> int:
    """Start ``server`` (a Scheduler or a Nanny), then wait for SIGINT/SIGTERM or its end."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    starting = asyncio.ensure_future(server.start())
    stopping = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if starting not in done:  # a signal while still connecting
        starting.cancel()
        await server.close(reason="signal while starting")
        print(f"{what} stopped before it had started ({signal.Signals(received[0]).name}).", flush=True)
        return 0
    starting.result()  # raise a start error (port in use, refused TLS...)
    print(_started_message(server), flush=True)
    finished = asyncio.ensure_future(server.finished())
    done, _ = await asyncio.wait({finished, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if stopping in done:
        name = signal.Signals(received[0]).name
        print(f"{name} received: closing the {what.lower()} ...", flush=True)
        await server.close(reason=f"neuropool: {name}")
        print(f"{what} closed.", flush=True)
        return 0
    if what == "Worker":
        print("Worker left the pool: the scheduler closed or stopped answering. To rejoin by "
              "itself when the scheduler is back, run this command under a supervisor "
              "(systemd Restart=always, a container restart policy).", flush=True)
    else:
        print(f"{what} ended on its own (status {server.status.name}).", flush=True)
    return 1


def _started_message(server: Any) -> str:
    from distributed import Scheduler

    if isinstance(server, Scheduler):
        address = server.address
        tls = address.startswith("tls://")
        join = f"neuropool worker {address}"
        if tls:
            join += " --tls-ca-file ca.pem --tls-cert worker.pem --tls-key worker-key.pem"
        lines = [f"Scheduler at {address} — workers join with: {join}",
                 f"Run sessions on the pool with: neuropool run SESSION --cluster {address}"]
        port = getattr(getattr(server, "http_server", None), "port", None)
        if port:
            host = address.split("://", 1)[-1].rsplit(":", 1)[0]
            lines.append(f"Dashboard: http://{host}:{port}/status")
        return "\n".join(lines)
    return f"Worker {server.worker_address} (nanny {server.address}) joined the pool at {server.scheduler_addr}"


def _run(coro: Any, what: str, where: str) -> int:
    """Run ``coro``; turn a failure to start into an error that says what to check."""
    try:
        return asyncio.run(coro)
    except (OSError, TimeoutError, RuntimeError) as e:
        cause: BaseException = e
        while cause.__cause__ is not None and isinstance(cause, RuntimeError | TimeoutError):
            cause = cause.__cause__
        text = str(cause) or type(cause).__name__
        if "certificate" in text or "TLS" in text or "SSL" in text:
            hint = ("both ends must hold certificates signed by the same CA (the ca.pem of one "
                    "neuropool certs folder)")
        elif what == "scheduler":
            hint = "if the port is in use, choose another --port, or stop what runs there"
        else:
            hint = ("check that the scheduler runs at that address, that the firewall lets its "
                    "port through, and that both ends use tls:// or both tcp://")
        verb = "join the pool at" if what == "worker" else "start at"
        raise ConfigError(f"the {what} could not {verb} {where}: {type(cause).__name__}: "
                          f"{text}; {hint}") from e


# -- commands -----------------------------------------------------------------------------------


def cmd_scheduler(args: argparse.Namespace) -> int:
    """Run a Dask scheduler (with its dashboard) until SIGINT/SIGTERM."""
    from distributed import Scheduler

    security = _security(args)
    protocol = "tls" if security is not None else "tcp"
    host = args.host or ""
    if "://" in host:
        given, host = host.split("://", 1)
        if given != protocol:
            raise ConfigError(f"--host {args.host} says {given}:// but the scheduler speaks "
                              f"{protocol}:// ({'TLS files given' if security else 'no TLS files'}); "
                              "give a bare host name or IP")
    for option, port in (("--port", args.port), ("--dashboard-port", args.dashboard_port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{option} must be between 0 and 65535, got {port}")

    # a block that needs what no worker offers (a GPU) fails after this long instead of waiting
    import dask

    dask.config.set({"distributed.scheduler.no-workers-timeout": f"{args.no_workers_timeout}s"})

    async def main() -> int:
        scheduler = Scheduler(host=host or None, port=args.port, protocol=protocol,
                              security=security, dashboard=True,
                              dashboard_address=f"{host}:{args.dashboard_port}")
        return await _serve(scheduler, "Scheduler")

    return _run(main(), "scheduler", f"{protocol}://{host or '*'}:{args.port}")


def cmd_worker(args: argparse.Namespace) -> int:
    """Join this machine to a pool: a Dask nanny and its worker, until SIGINT/SIGTERM."""
    import dask
    from distributed import Nanny

    from neuropool.cluster.dask import worker_config

    security = _security(args)
    protocol = "tls" if security is not None else "tcp"
    address = args.address if "://" in args.address else f"{protocol}://{args.address}"
    if security is not None and not address.startswith("tls://"):
        raise ConfigError(f"TLS files were given but the scheduler address is {args.address}; "
                          f"use tls://{address.split('://', 1)[1]}")
    if security is None and address.startswith("tls://"):
        raise ConfigError(f"{address} is a TLS scheduler: give --tls-ca-file, --tls-cert and "
                          "--tls-key (make them with: neuropool certs DIR)")
    _host_port(address, "ADDRESS")
    if args.nthreads is not None and args.nthreads < 1:
        raise ConfigError(f"--nthreads must be at least 1, got {args.nthreads}")
    nthreads = args.nthreads or os.cpu_count() or 1
    resources = advertised_resources(args.gpus, args.resources)
    where: dict[str, Any] = {}
    listen = args.listen_address
    if args.contact_address:
        _, port = _host_port(args.contact_address, "--contact-address")
        where["contact_address"] = args.contact_address
        if not listen:  # behind NAT: listen everywhere on the port forwarded to the contact address
            listen = f"{address.split('://', 1)[0]}://0.0.0.0:{port}"
    if listen:
        host, port = _host_port(listen, "--listen-address")
        where.update(host=host, worker_port=port, listen_address=listen)
    limit = _memory_limit(args.memory_limit, nthreads)
    dask.config.set(worker_config())  # read again by the nanny each time it starts a worker process
    shown = " ".join(f"{k}={v:g}" for k, v in resources.items())
    print(f"Joining {address} as {args.name or 'a worker'}: {nthreads} thread(s), memory limit "
          f"{limit}, resources {shown}"
          + (f", reachable at {args.contact_address}" if args.contact_address else ""), flush=True)

    async def main() -> int:
        nanny = Nanny(address, nthreads=nthreads, memory_limit=args.memory_limit,
                      resources=resources, name=args.name, security=security, **where)
        return await _serve(nanny, "Worker")

    return _run(main(), "worker", address)


def _memory_limit(value: str, nthreads: int) -> str:
    """Check ``--memory-limit`` now (not in the worker process); return it readable."""
    import logging

    from dask.utils import format_bytes
    from distributed.worker_memory import parse_memory_limit

    try:
        limit = parse_memory_limit(value, nthreads, logger=logging.getLogger(__name__))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--memory-limit {value!r} is not a size ({e}); write e.g. 16GiB, "
                          "0.5 (half of this machine), auto, or 0 (no limit)") from None
    return format_bytes(limit) if limit else "none"


def _host_port(address: str, option: str) -> tuple[str, int]:
    from distributed.comm import get_address_host_port

    try:
        host, port = get_address_host_port(address if "://" in address else f"tcp://{address}",
                                           strict=True)
    except ValueError as e:
        raise ConfigError(f"{option} {address!r} is not HOST:PORT ({e}); write e.g. "
                          "tcp://203.0.113.7:40001") from None
    return host, int(port)


def cmd_certs(args: argparse.Namespace) -> int:
    """Create a CA and certificates for every role; print how to use them."""
    from neuropool.cluster.tls import default_hosts, make_certificates, usage

    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()] if args.hosts else default_hosts()
    files = make_certificates(args.dir, hosts, days=args.days, overwrite=args.force)
    print(f"Created a certificate authority and certificates for {', '.join(hosts)} in "
          f"{Path(args.dir).resolve()} (valid {args.days} days):")
    for name, path in files.items():
        print(f"  {path.name:18s} {'private, mode 0600' if name.endswith('key') else 'certificate'}")
    print(usage(args.dir, port=DEFAULT_PORT))
    return 0


# -- the parsers --------------------------------------------------------------------------------


def add_tls_args(p: argparse.ArgumentParser, role: str) -> None:
    g = p.add_argument_group("TLS (all three, or none; make them with: neuropool certs DIR)")
    g.add_argument("--tls-ca-file", metavar="FILE",
                   help="the pool's CA certificate (ca.pem); with it, only machines holding a "
                        "certificate signed by this CA may connect, and all traffic is encrypted")
    g.add_argument("--tls-cert", metavar="FILE", help=f"this {role}'s certificate ({role}.pem)")
    g.add_argument("--tls-key", metavar="FILE", help=f"this {role}'s private key ({role}-key.pem)")


def register_commands(subparsers: Any) -> None:
    """Add ``scheduler``, ``worker`` and ``certs`` to the ``neuropool`` command's subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "scheduler", help="run the pool's Dask scheduler on this machine (foreground)",
        formatter_class=fmt,
        description="Run a Dask scheduler, with its dashboard, until SIGINT (Ctrl-C) or SIGTERM.\n"
                    "It prints the address workers join with (neuropool worker ADDRESS) and "
                    "clients use\n(neuropool run SESSION --cluster ADDRESS). With the three "
                    "--tls-* files it speaks\ntls:// only and refuses unencrypted or "
                    "unauthenticated connections.\n\n"
                    "example:\n  neuropool scheduler --port 8786\n"
                    "  neuropool scheduler --tls-ca-file ca.pem --tls-cert scheduler.pem "
                    "--tls-key scheduler-key.pem")
    p.add_argument("--host", metavar="HOST", default="",
                   help="interface (host name or IP) to listen on (default: all interfaces)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P",
                   help=f"port for workers and clients (default: {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--dashboard-port", type=int, default=DEFAULT_DASHBOARD_PORT, metavar="D",
                   help=f"port of the web dashboard, plain HTTP (default: {DEFAULT_DASHBOARD_PORT}; "
                        "0 = any free port)")
    p.add_argument("--no-workers-timeout", type=float, default=60.0, metavar="S",
                   help="seconds a task may wait for a worker offering what it needs (e.g. a GPU) "
                        "before it fails, instead of waiting forever (default: 60)")
    add_tls_args(p, "scheduler")
    p.set_defaults(func=cmd_scheduler)

    p = subparsers.add_parser(
        "worker", help="join this machine to a pool as a worker (foreground)",
        formatter_class=fmt,
        description="Join this machine to the pool whose scheduler is at ADDRESS, until SIGINT "
                    "(Ctrl-C) or SIGTERM.\nThe worker runs under a nanny that restarts it if "
                    "it crashes; blocks it was running\nare re-run elsewhere. It advertises "
                    "its GPUs as the Dask resource GPU, so GPU tasks\n(e.g. GPU sorters) land "
                    "only on machines that have one.\n\n"
                    "examples:\n  neuropool worker tcp://scheduler.lab:8786 --gpus 2\n"
                    "  neuropool worker tls://scheduler.lab:8786 --tls-ca-file ca.pem "
                    "--tls-cert worker.pem --tls-key worker-key.pem\n"
                    "  neuropool worker tcp://scheduler.lab:8786 --contact-address "
                    "tcp://203.0.113.7:40001   (behind NAT)")
    p.add_argument("address", metavar="ADDRESS",
                   help="the scheduler, as printed by neuropool scheduler: tcp://HOST:8786 or "
                        "tls://HOST:8786")
    p.add_argument("--nthreads", type=int, metavar="N",
                   help="blocks this worker runs at once (default: one per core)")
    p.add_argument("--memory-limit", default="auto", metavar="M",
                   help="memory the worker may use before it spills and is restarted: 16GiB, "
                        "0.5 (a fraction of this machine), auto (default: this machine's memory in "
                        "proportion to --nthreads over its cores), 0 (no limit)")
    p.add_argument("--gpus", type=int, metavar="N",
                   help="GPUs to advertise (default: what nvidia-smi lists; 0 without it)")
    p.add_argument("--resources", type=_resources_arg, metavar="\"NAME=N ...\"",
                   help="other resources to advertise, e.g. \"GPU=1 FOO=2\" (merged with --gpus)")
    p.add_argument("--name", metavar="NAME",
                   help="name shown on the dashboard and in logs; unique in the pool "
                        "(default: the worker's address)")
    p.add_argument("--contact-address", metavar="ADDR",
                   help="address the scheduler and other workers reach this worker at, when it "
                        "differs from where it listens (NAT: a forwarded port, e.g. "
                        "tcp://203.0.113.7:40001); the worker then listens on that port on all "
                        "interfaces unless --listen-address says otherwise")
    p.add_argument("--listen-address", metavar="ADDR",
                   help="where the worker listens, e.g. tcp://0.0.0.0:40001 (default: a free "
                        "port on the interface that reaches the scheduler)")
    add_tls_args(p, "worker")
    p.set_defaults(func=cmd_worker)

    p = subparsers.add_parser(
        "certs", help="create the TLS certificates for a pool (CA + scheduler, worker, client)",
        formatter_class=fmt,
        description="Create a private certificate authority (ca.pem, ca-key.pem) and a "
                    "certificate/key pair\nsigned by it for each role: scheduler.pem, "
                    "worker.pem, client.pem (+ *-key.pem).\nPrivate keys are written with "
                    "mode 0600. Then prints the scheduler and worker commands\nand the "
                    "client settings that use them.\n\n"
                    "example:\n  neuropool certs ~/.neuropool/tls --hosts scheduler.lab,10.0.0.5")
    p.add_argument("dir", metavar="DIR", help="folder for the files (created if missing)")
    p.add_argument("--hosts", metavar="H1,H2",
                   help="comma-separated host names and IPs the certificates name (default: "
                        "localhost,127.0.0.1 and this machine's host name)")
    p.add_argument("--days", type=int, default=365, metavar="N",
                   help="validity of the certificates in days (default: 365)")
    p.add_argument("--force", action="store_true",
                   help="replace certificates already in DIR (machines using the old ones are "
                        "locked out)")
    p.set_defaults(func=cmd_certs)
