"""``neuropool deploy`` as the Helm chart's init container runs it: onto a named work pool of a
chosen type with a base job template, after waiting for the API; and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from neuropool.errors import ConfigError
from neuropool.graphs.deploy import deploy, wait_for_api
from tests.cluster.processes import ROOT, free_port
from tests.helm.chart import render

PREFECT_FILE = ROOT / "configs" / "prefect.yaml"


def test_a_kubernetes_pool_is_created_with_the_charts_job_template(prefect_api, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    rendered = render({"prefect": {"worker": {"type": "kubernetes", "pool": "np-k8s"}}})
    template = tmp_path / "base-job-template.json"
    template.write_text(rendered.get("ConfigMap", "cluster")["data"]["base-job-template.json"])

    applied = deploy(PREFECT_FILE, names=["process-session/cluster"], pool="np-k8s",
                     pool_type="kubernetes", base_job_template=template, cluster="kubernetes",
                     output="s3://lab-derived", wait=30)
    assert applied == ["process-session/cluster"]

    code = ("import asyncio, json\n"
            "from prefect.client.orchestration import get_client\n"
            "async def main():\n"
            "    async with get_client() as c:\n"
            "        pool = await c.read_work_pool('np-k8s')\n"
            "        d = await c.read_deployment_by_name('process-session/cluster')\n"
            "        print(json.dumps({'type': pool.type, 'template': pool.base_job_template,\n"
            "                          'pool': d.work_pool_name, 'params': d.parameters}))\n"
            "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, timeout=60,
                         env={**os.environ, "PREFECT_API_URL": prefect_api})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["type"] == "kubernetes" and got["pool"] == "np-k8s"
    assert got["template"] == json.loads(template.read_text())
    assert got["params"]["cluster"] == "kubernetes" and got["params"]["output"] == "s3://lab-derived"


def test_an_unknown_pool_type_or_a_missing_template_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--pool-type 'docker': expected one of kubernetes, process"):
        deploy(PREFECT_FILE, names=["process-session/cluster"], pool="p", pool_type="docker")
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match=rf"--base-job-template {missing}: no such file"):
        deploy(PREFECT_FILE, names=["process-session/cluster"], base_job_template=missing)


def test_waiting_for_an_api_that_never_answers_names_it():
    url = f"http://127.0.0.1:{free_port()}/api"
    with pytest.raises(ConfigError, match=rf"the Prefect API at {url} did not answer within 1 s"):
        wait_for_api({"PREFECT_API_URL": url}, 1.0)
    with pytest.raises(ConfigError, match="PREFECT_API_URL is not set"):
        wait_for_api({}, 1.0)
