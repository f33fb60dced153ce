"""The Helm chart rendered offline (helm-python-sdk), and its containers run as local processes.

:func:`render` renders ``helm/neuropool`` with some values and parses every manifest.
:func:`local_command` turns one container of a rendered workload into the command line and
environment of a local process, the way the kubelet would start it, with local stand-ins for
what only a cluster has: Services resolve to 127.0.0.1, mounted volumes are local folders
(secrets hold the files the test made), and ``fieldRef`` values are the test's pod name.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.processes import ROOT

helm = pytest.importorskip("helm_python", reason="the chart tests need helm-python-sdk (test extra)")

CHART = ROOT / "helm" / "neuropool"
RELEASE = "np"
NAMESPACE = "lab"

#: Paths inside the image that the commands use, and where they are in this checkout.
IMAGE_PATHS = {"/opt/neuropool/configs": ROOT / "configs"}


@dataclass
class Rendered:
    """A rendered release: the template outputs and the Kubernetes objects they hold."""

    files: dict[str, str]
    objects: list[dict[str, Any]]

    @property
    def notes(self) -> str:
        return self.files.get("neuropool/templates/NOTES.txt", "")

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The object of ``kind`` named ``name`` (the release prefix may be left out)."""
        full = name if name.startswith(f"{RELEASE}-") else f"{RELEASE}-neuropool-{name}"
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == full]
        if not found:
            have = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in self.objects)
            raise KeyError(f"no {kind}/{full} in the rendered chart; it has {have}")
        return found[0]

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.kinds(kind)}


def render(values: dict[str, Any] | None = None) -> Rendered:
    """Render the chart as release ``np`` in namespace ``lab``; check the values' schema first."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(files.items()):
        if path.endswith(".txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return Rendered(files, objects)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    """The container (or init container) ``name`` of a workload's pod template."""
    spec = pod_spec(workload)
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        if c["name"] == name:
            return c
    raise KeyError(f"{workload['metadata']['name']} has no container {name!r}")


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env entries by name."""
    return {e["name"]: e for e in c.get("env", [])}


@dataclass
class StandIns:
    """What a cluster would provide, for containers run here.

    ``secrets`` holds the content of the existing secrets the values name (by secret name, then
    key); ``secret_dirs`` the folders that stand for secrets mounted as volumes.
    """

    work: Path
    pod_name: str = "pod-0"
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    secret_dirs: dict[str, Path] = field(default_factory=dict)


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of ``$(VAR)`` in commands and env values (``$$`` is a literal ``$``;
    an unknown variable stays as written)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def _service_hosts(rendered: Rendered) -> list[str]:
    hosts = []
    for name in rendered.names("Service"):
        hosts += [f"{name}.{NAMESPACE}.svc.cluster.local", f"{name}.{NAMESPACE}.svc",
                  f"{name}.{NAMESPACE}", name]
    return sorted(hosts, key=len, reverse=True)


@dataclass
class LocalContainer:
    """A container translated for this machine: what to run, with what, and its mounts."""

    argv: list[str]
    env: dict[str, str]
    mounts: dict[str, Path]


def _mounts(rendered: Rendered, workload: dict[str, Any], c: dict[str, Any],
            stand_ins: StandIns) -> tuple[dict[str, Path], dict[Path, dict[str, str]]]:
    """mountPath -> local folder standing in for the volume mounted there, and the files of the
    ConfigMaps among them (written once their text is translated)."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    out: dict[str, Path] = {}
    config_maps: dict[Path, dict[str, str]] = {}
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "secret" in v:
            name = v["secret"]["secretName"]
            if name not in stand_ins.secret_dirs:
                pytest.fail(f"{c['name']} mounts secret {name!r}, which the test did not provide")
            out[m["mountPath"]] = stand_ins.secret_dirs[name]
            continue
        folder = stand_ins.work / f"{workload['metadata']['name']}-{c['name']}-{m['name']}"
        folder.mkdir(parents=True, exist_ok=True)
        out[m["mountPath"]] = folder
        if "configMap" in v:
            config_maps[folder] = rendered.get("ConfigMap", v["configMap"]["name"]).get("data", {})
    return out, config_maps


def local_command(rendered: Rendered, workload: dict[str, Any], name: str,
                  stand_ins: StandIns) -> LocalContainer:
    """Container ``name`` of ``workload`` as a local process: command line, environment, mounts.

    Everything comes from the rendered manifest: the command and args, env (values, fieldRefs,
    secretKeyRefs), the volumes and ConfigMaps. Only addresses and paths are translated, in the
    command, the environment and the mounted ConfigMap files alike: Service names to 127.0.0.1,
    mount paths to their local folders, ``neuropool``/``prefect`` to this Python.
    """
    c = container(workload, name)
    env: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(str(e["value"]), env)
            continue
        ref = e["valueFrom"]
        if "fieldRef" in ref:
            env[e["name"]] = {"metadata.name": stand_ins.pod_name, "status.podIP": "127.0.0.1",
                              "metadata.namespace": NAMESPACE}[ref["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in ref:
            secret, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            if key not in stand_ins.secrets.get(secret, {}):
                pytest.fail(f"{name} reads key {key!r} of secret {secret!r}, which the test did "
                            "not provide")
            env[e["name"]] = stand_ins.secrets[secret][key]
        else:
            raise NotImplementedError(f"env source {ref}")
    argv = [expand(a, env) for a in c.get("command", []) + c.get("args", [])]

    mounts, config_maps = _mounts(rendered, workload, c, stand_ins)
    paths = {**IMAGE_PATHS, **mounts}
    hosts = _service_hosts(rendered)
    alternatives = "|".join(re.escape(m) for m in sorted(paths, key=len, reverse=True))
    mount_re = re.compile(rf"(?<![\w.])({alternatives})(?=/|\s|$)")

    def local(text: str) -> str:
        for host in hosts:
            text = re.sub(rf"(?<=//){re.escape(host)}(?=:)", "127.0.0.1", text)
        return mount_re.sub(lambda m: str(paths[m.group(1)]), text)  # one pass: no re-translation

    for folder, files in config_maps.items():
        for key, text in files.items():
            (folder / key).write_text(local(text))
    argv = [local(a) for a in argv]
    env = {k: local(v) for k, v in env.items()}
    programs = {"neuropool": [sys.executable, "-m", "neuropool.cli"],
                "prefect": [sys.executable, "-m", "prefect"]}
    if argv[0] not in programs:
        pytest.fail(f"{name} runs {argv[0]!r}, not neuropool or prefect")
    return LocalContainer(programs[argv[0]] + argv[1:], dict(os.environ, **env), mounts)
