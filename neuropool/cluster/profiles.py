"""Cluster profiles: a named YAML file saying which pool to use, for ops and deployments.

A deployment names its pool once (``cluster: lab``) instead of repeating an address and TLS
files in every run. A profile is ``<name>.yaml`` in ``$NEUROPOOL_CLUSTER_DIR`` or in
``configs/cluster/`` under the working directory::

    address: tls://scheduler.lab:8786      # or null: an embedded LocalCluster
    tls: {ca_file: /etc/neuropool/ca.pem, cert: /etc/neuropool/client.pem, key: /etc/neuropool/client-key.pem}
    no_workers_timeout: 60                  # s a block may wait for a worker that can take it

    # for a LocalCluster (address null) only:
    n_workers: 2
    threads_per_worker: 1
    gpus: null                              # null = what nvidia-smi reports
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neuropool.cluster import connect
from neuropool.cluster.base import Pool
from neuropool.errors import ConfigError

#: Addresses that :func:`neuropool.cluster.connect` takes as they are.
_PLAIN = ("local", "inprocess", "in-process", "ray")


class TLSFiles(BaseModel):
    """The client's certificate, key and the lab's CA (as made by ``neuropool certs``)."""

    model_config = ConfigDict(extra="forbid")
    ca_file: str
    cert: str
    key: str


class ClusterProfile(BaseModel):
    """Which pool to use, and how to reach it."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description="scheduler address; null = embedded LocalCluster")
    tls: TLSFiles | None = None
    no_workers_timeout: float = Field(60.0, gt=0)
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int | None = Field(None, ge=1)
    gpus: int | None = Field(None, ge=0)

    def pool_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"no_workers_timeout": self.no_workers_timeout}
        local = {"n_workers": self.n_workers, "threads_per_worker": self.threads_per_worker,
                 "gpus": self.gpus}
        if self.address is None:
            kwargs.update({k: v for k, v in local.items() if v is not None})
        elif any(v is not None for v in local.values()):
            raise ConfigError("n_workers, threads_per_worker and gpus describe an embedded "
                              f"LocalCluster; a profile with address {self.address!r} cannot set them")
        if self.tls is not None:
            from neuropool.cluster.tls import security_from_files

            kwargs["security"] = security_from_files(self.tls.ca_file, self.tls.cert, self.tls.key)
        return kwargs


def profile_dirs() -> list[Path]:
    """Where profiles are looked up, in order."""
    dirs = [Path(d) for d in os.environ.get("NEUROPOOL_CLUSTER_DIR", "").split(os.pathsep) if d]
    return [*dirs, Path.cwd() / "configs" / "cluster"]


def load_profile(name_or_path: str) -> ClusterProfile:
    """Read a profile by name (``lab``) or path (``/etc/neuropool/lab.yaml``).

    Raises
    ------
    ConfigError
        When no such profile exists (listing those that do), or it is invalid (naming the field).
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        found = [d / f"{name_or_path}.yaml" for d in profile_dirs() if (d / f"{name_or_path}.yaml").is_file()]
        if not found:
            known = sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.yaml")})
            raise ConfigError(
                f"cluster {name_or_path!r} is neither an address (tcp://HOST:PORT, tls://..., ray://..., "
                f"local, inprocess, ray) nor a profile in {', '.join(map(str, profile_dirs()))}; "
                f"profiles found: {', '.join(known) or 'none'}"
            )
        path = found[0]
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: cluster profile not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    try:
        return ClusterProfile.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{path}: invalid cluster profile: {problems}") from None


def connect_to(cluster: str | None) -> Pool:
    """A pool from an address (``tcp://``, ``tls://``, ``ray://``, ``local``, ``inprocess``,
    ``ray``), a profile name or path, or None or "" (an embedded LocalCluster)."""
    if not cluster:
        return connect(None)
    if cluster in _PLAIN or "://" in cluster:
        return connect(cluster)
    profile = load_profile(cluster)
    return connect(profile.address, **profile.pool_kwargs())
