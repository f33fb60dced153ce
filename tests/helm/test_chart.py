"""The Helm chart, rendered offline with helm-python-sdk: lint, Kubernetes schemas, and what the
rendered objects say (GPUs, secrets, ports, probes, security, RBAC, network policy)."""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from typing import Any

import pytest
import yaml

from neuropool.graphs.deploy import deployments_in
from tests.cluster.processes import ROOT
from tests.helm.chart import CHART, NAMESPACE, container, env_of, helm, pod_spec, render

kubernetes_validate = pytest.importorskip("kubernetes_validate",
                                          reason="the chart tests need kubernetes-validate (test extra)")

#: The oldest and the newest Kubernetes the chart is validated against.
KUBE_VERSIONS = ["1.29.0", "1.34.0"]

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu-off": {"workerGroups": {"gpu": {"enabled": False}}},
    "tls-exposed": {
        "tls": {"enabled": True, "existingSecret": "np-tls"},
        "scheduler": {"external": {"enabled": True, "type": "LoadBalancer",
                                   "loadBalancerSourceRanges": ["203.0.113.0/24"]}},
        "networkPolicy": {"externalCIDRs": ["203.0.113.0/24"]},
    },
    "nodeport": {"tls": {"enabled": True, "existingSecret": "np-tls"},
                 "scheduler": {"external": {"enabled": True, "type": "NodePort", "nodePort": 30786}}},
    "external-prefect": {"prefect": {"server": {"enabled": False}, "apiUrl": "https://prefect.lab/api",
                                     "apiKeySecret": {"name": "prefect-cloud"}}},
    "postgres": {"prefect": {"server": {"database": {"existingSecret": "prefect-db"}}}},
    "kubernetes-worker": {"prefect": {"worker": {"type": "kubernetes"}},
                          "tls": {"enabled": True, "existingSecret": "np-tls"},
                          "s3": {"existingSecret": "lab-s3"}},
    "s3": {"s3": {"existingSecret": "lab-s3", "endpointUrl": "https://minio.lab:9000",
                  "region": "eu-west-1"},
           "pipeline": {"output": "s3://lab-derived"}},
    "lab-groups": {"workerGroups": {
        "highmem": {"enabled": True, "imageVariant": "cpu", "replicas": 1, "nthreads": 8,
                    "memoryLimit": "120GiB", "gpus": 0,
                    "resources": {"requests": {"cpu": "8", "memory": "128Gi"},
                                  "limits": {"memory": "128Gi"}},
                    "volumes": [{"name": "raw", "nfs": {"server": "nas.lab", "path": "/raw"}}],
                    "volumeMounts": [{"name": "raw", "mountPath": "/mnt/raw", "readOnly": True}],
                    "extraArgs": ["--resources", "HIGHMEM=1"],
                    "env": [{"name": "NEUROPOOL_MALLOC_KEEP_MB", "value": "2048"}]}}},
}

# The README's examples are value sets too.
VALUE_SETS.update({f"example-{p.stem}": yaml.safe_load(p.read_text())
                   for p in sorted((CHART / "examples").glob("*.yaml"))})


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request):
    return request.param, render(VALUE_SETS[request.param])


def workloads(r) -> list[dict[str, Any]]:
    return [o for o in r.objects if o["kind"] in ("Deployment", "Job", "StatefulSet")]


def all_containers(r) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for w in workloads(r):
        spec = pod_spec(w)
        out += [(w["metadata"]["name"], c) for c in spec.get("initContainers", []) + spec["containers"]]
    return out


# -- the chart as a whole ---------------------------------------------------------------------


def test_every_manifest_passes_the_kubernetes_schemas_strictly(rendered):
    """kubernetes-validate in strict mode (unknown fields are errors) for two Kubernetes versions."""
    name, r = rendered
    assert len(r.objects) >= 8
    for obj in r.objects:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"[{name}] {obj['kind']}/{obj['metadata']['name']} is invalid for "
                            f"Kubernetes {version}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_is_clean_in_strict_mode(name):
    for version in KUBE_VERSIONS:
        report = helm.lint(CHART, VALUE_SETS[name], strict=True, kube_version=f"v{version}",
                           namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], (name, version, report)


def test_the_chart_has_no_remote_dependencies():
    with helm.Chart.load(CHART) as chart:
        assert chart.dependencies == []
    assert not (CHART / "charts").exists()


def test_standard_labels_and_short_names(rendered):
    _, r = rendered
    for obj in r.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "neuropool"
        assert labels["app.kubernetes.io/instance"] == "np"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert len(obj["metadata"]["name"]) <= 63
    for w in workloads(r):
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        assert "app.kubernetes.io/component" in selector


def test_image_tag_follows_the_charts_app_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version
    r = render()
    images = {c["image"] for _, c in all_containers(r)}
    assert images == {f"ghcr.io/neuropool/neuropool:{version}", f"ghcr.io/neuropool/neuropool:{version}-gpu"}
    pinned = render({"image": {"tag": "0.2.0rc1"}})
    assert {c["image"] for _, c in all_containers(pinned)} == {
        "ghcr.io/neuropool/neuropool:0.2.0rc1", "ghcr.io/neuropool/neuropool:0.2.0rc1-gpu"}


# -- workers ----------------------------------------------------------------------------------


def test_gpu_group_requests_gpus_advertises_them_and_lands_on_gpu_nodes():
    r = render()
    gpu, cpu = r.get("Deployment", "worker-gpu"), r.get("Deployment", "worker-cpu")
    c = container(gpu, "worker")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert c["command"][c["command"].index("--gpus") + 1] == "1"
    assert c["image"].endswith("-gpu")
    spec = pod_spec(gpu)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]

    c = container(cpu, "worker")
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert c["command"][c["command"].index("--gpus") + 1] == "0"
    assert not c["image"].endswith("-gpu") and "tolerations" not in pod_spec(cpu)
    assert c["command"][:3] == ["neuropool", "worker", "tcp://np-neuropool-scheduler:8786"]
    assert c["command"][c["command"].index("--memory-limit") + 1] == "14GiB"
    assert c["command"][c["command"].index("--nthreads") + 1] == "4"
    assert cpu["spec"]["replicas"] == 2


def test_gpu_group_off_leaves_no_gpu_objects():
    r = render(VALUE_SETS["gpu-off"])
    assert r.names("Deployment") == {"np-neuropool-scheduler", "np-neuropool-worker-cpu",
                                     "np-neuropool-prefect-worker", "np-neuropool-prefect-server"}
    assert r.names("PodDisruptionBudget") == {"np-neuropool-worker-cpu"}
    assert "GPU" not in r.notes and "gpu:" not in r.notes
    assert not any("nvidia.com/gpu" in json.dumps(o) for o in r.objects)


def test_a_lab_group_gets_its_args_env_volumes_and_resources():
    r = render(VALUE_SETS["lab-groups"])
    w = r.get("Deployment", "worker-highmem")
    c = container(w, "worker")
    assert c["command"][-2:] == ["--resources", "HIGHMEM=1"]
    assert env_of(c)["NEUROPOOL_MALLOC_KEEP_MB"]["value"] == "2048"
    assert {"name": "raw", "mountPath": "/mnt/raw", "readOnly": True} in c["volumeMounts"]
    assert {"name": "raw", "nfs": {"server": "nas.lab", "path": "/raw"}} in pod_spec(w)["volumes"]
    assert c["resources"]["limits"] == {"memory": "128Gi"}
    assert r.names("PodDisruptionBudget") >= {"np-neuropool-worker-highmem"}
    pdb = r.get("PodDisruptionBudget", "worker-highmem")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["maxUnavailable"] == 1


# -- secrets ----------------------------------------------------------------------------------


def test_s3_credentials_come_only_from_the_existing_secret():
    r = render(VALUE_SETS["s3"])
    neuropool_containers = [(w, c) for w, c in all_containers(r) if c["command"][0] == "neuropool"
                            or c["name"] == "prefect-worker"]
    assert len(neuropool_containers) == 5  # scheduler, 2 worker groups, deploy, prefect worker
    for w, c in neuropool_containers:
        env = env_of(c)
        for var, key in (("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
                         ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")):
            assert env[var] == {"name": var, "valueFrom": {"secretKeyRef": {"name": "lab-s3", "key": key}}}, w
        assert env["AWS_ENDPOINT_URL"]["value"] == "https://minio.lab:9000"
        assert env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    deploy = container(r.get("Deployment", "prefect-worker"), "deploy")["command"]
    assert deploy[deploy.index("--output") + 1] == "s3://lab-derived"
    # and without the secret (IAM roles), no credentials at all
    plain = render()
    assert not any("AWS_ACCESS_KEY_ID" in json.dumps(c) for _, c in all_containers(plain))


def test_inline_s3_credentials_are_refused_by_the_schema():
    with pytest.raises(helm.HelmValuesError, match=r"/s3.*'secretAccessKey' not allowed"):
        render({"s3": {"secretAccessKey": "hunter2"}})


def test_tls_files_come_from_the_existing_secret():
    r = render(VALUE_SETS["tls-exposed"])
    for name, role in (("scheduler", "scheduler"), ("worker-cpu", "worker"), ("worker-gpu", "worker")):
        w = r.get("Deployment", name)
        c = container(w, pod_spec(w)["containers"][0]["name"])
        cmd = c["command"]
        assert cmd[cmd.index("--tls-cert") + 1] == f"/etc/neuropool/tls/{role}.pem"
        assert cmd[cmd.index("--tls-key") + 1] == f"/etc/neuropool/tls/{role}-key.pem"
        assert cmd[cmd.index("--tls-ca-file") + 1] == "/etc/neuropool/tls/ca.pem"
        assert {"name": "tls", "mountPath": "/etc/neuropool/tls", "readOnly": True} in c["volumeMounts"]
        tls = next(v for v in pod_spec(w)["volumes"] if v["name"] == "tls")
        assert tls["secret"]["secretName"] == "np-tls"
    worker = container(r.get("Deployment", "worker-cpu"), "worker")["command"]
    assert worker[2] == "tls://np-neuropool-scheduler:8786"
    profile = yaml.safe_load(r.get("ConfigMap", "cluster")["data"]["kubernetes.yaml"])
    assert profile == {"address": "tls://np-neuropool-scheduler:8786", "no_workers_timeout": 60,
                       "tls": {"ca_file": "/etc/neuropool/tls/ca.pem",
                               "cert": "/etc/neuropool/tls/client.pem",
                               "key": "/etc/neuropool/tls/client-key.pem"}}
    pw = container(r.get("Deployment", "prefect-worker"), "prefect-worker")
    assert {"name": "tls", "mountPath": "/etc/neuropool/tls", "readOnly": True} in pw["volumeMounts"]


def test_prefect_database_and_api_key_come_from_secrets():
    r = render(VALUE_SETS["postgres"])
    server = container(r.get("Deployment", "prefect-server"), "prefect-server")
    assert env_of(server)["PREFECT_API_DATABASE_CONNECTION_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "prefect-db", "key": "connection-url"}}
    assert not r.kinds("PersistentVolumeClaim")

    sqlite = render()
    server = container(sqlite.get("Deployment", "prefect-server"), "prefect-server")
    assert env_of(server)["PREFECT_API_DATABASE_CONNECTION_URL"]["value"] == "sqlite+aiosqlite:////data/prefect.db"
    assert {"name": "data", "mountPath": "/data"} in server["volumeMounts"]
    pvc = sqlite.get("PersistentVolumeClaim", "prefect-server")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert sqlite.get("Deployment", "prefect-server")["spec"]["strategy"]["type"] == "Recreate"

    ext = render(VALUE_SETS["external-prefect"])
    assert "np-neuropool-prefect-server" not in ext.names("Deployment")
    for name in ("deploy", "prefect-worker"):
        env = env_of(container(ext.get("Deployment", "prefect-worker"), name))
        assert env["PREFECT_API_URL"]["value"] == "https://prefect.lab/api"
        assert env["PREFECT_API_KEY"]["valueFrom"] == {
            "secretKeyRef": {"name": "prefect-cloud", "key": "PREFECT_API_KEY"}}


def test_no_prefect_api_is_an_error_that_says_what_to_set():
    with pytest.raises(helm.HelmRenderError, match="prefect.apiUrl is required"):
        render({"prefect": {"server": {"enabled": False}}})


# -- ports, probes, exposure ------------------------------------------------------------------


def test_service_ports_match_the_containers_and_probes_use_declared_ports():
    r = render({"scheduler": {"port": 9786, "dashboardPort": 9787}})
    sched = r.get("Deployment", "scheduler")
    c = container(sched, "scheduler")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"comm": 9786, "dashboard": 9787}
    assert c["command"][c["command"].index("--port") + 1] == "9786"
    assert c["command"][c["command"].index("--dashboard-port") + 1] == "9787"
    svc = r.get("Service", "scheduler")
    assert {(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        ("comm", 9786, "comm"), ("dashboard", 9787, "dashboard")}
    assert svc["spec"]["selector"].items() <= sched["spec"]["template"]["metadata"]["labels"].items()
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "dashboard"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "dashboard"}
    assert container(r.get("Deployment", "worker-cpu"), "worker")["command"][2].endswith(":9786")

    server = container(r.get("Deployment", "prefect-server"), "prefect-server")
    assert server["readinessProbe"]["httpGet"] == {"path": "/api/health", "port": "api"}
    assert {p["name"] for p in server["ports"]} == {"api"}
    worker = container(r.get("Deployment", "prefect-worker"), "prefect-worker")
    assert worker["livenessProbe"]["httpGet"]["port"] in {p["name"] for p in worker["ports"]}
    assert "--with-healthcheck" in worker["command"]


def test_the_scheduler_is_exposed_only_when_asked_and_only_its_comm_port():
    assert "np-neuropool-scheduler-external" not in render().names("Service")
    r = render(VALUE_SETS["tls-exposed"])
    ext = r.get("Service", "scheduler-external")
    assert ext["spec"]["type"] == "LoadBalancer"
    assert ext["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert [p["name"] for p in ext["spec"]["ports"]] == ["comm"]
    assert "neuropool worker tls://EXTERNAL:8786 --tls-ca-file ca.pem" in r.notes
    node = render(VALUE_SETS["nodeport"]).get("Service", "scheduler-external")
    assert node["spec"]["type"] == "NodePort" and node["spec"]["ports"][0]["nodePort"] == 30786
    unsafe = render({"scheduler": {"external": {"enabled": True}}})
    assert "WARNING: the scheduler is exposed without TLS" in unsafe.notes


def test_notes_print_the_scheduler_address_and_how_to_submit():
    notes = render().notes
    assert "tcp://np-neuropool-scheduler:8786" in notes
    assert "prefect deployment run 'process-session/cluster' --param source=s3://" in notes
    assert "port-forward svc/np-neuropool-prefect-server 4200" in notes
    assert "cpu: 2 x 4 thread(s), 14GiB" in notes and "gpu: 1 x 4 thread(s), 28GiB, 1 GPU(s)" in notes


# -- security ---------------------------------------------------------------------------------


def test_pods_run_as_non_root_with_read_only_root_filesystems(rendered):
    _, r = rendered
    for w in workloads(r):
        spec = pod_spec(w)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp and "emptyDir" in tmp[0]
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            env = env_of(c)
            assert env["HOME"]["value"] == "/tmp"  # the only writable place


def test_service_account_tokens_and_rbac_only_where_needed():
    r = render()
    assert not r.kinds("Role") and not r.kinds("RoleBinding")
    assert not r.kinds("ClusterRole") and not r.kinds("ClusterRoleBinding")
    assert r.get("ServiceAccount", "np-neuropool")["automountServiceAccountToken"] is False
    for w in workloads(r):
        assert pod_spec(w)["automountServiceAccountToken"] is False
        assert pod_spec(w)["serviceAccountName"] == "np-neuropool"

    k = render(VALUE_SETS["kubernetes-worker"])
    assert pod_spec(k.get("Deployment", "prefect-worker"))["automountServiceAccountToken"] is True
    assert pod_spec(k.get("Deployment", "scheduler"))["automountServiceAccountToken"] is False
    role = k.get("Role", "prefect-worker")
    rules = {(g, res): set(r_["verbs"]) for r_ in role["rules"] for g in r_["apiGroups"]
             for res in r_["resources"]}
    assert rules == {("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
                     ("", "pods"): {"get", "list", "watch"}, ("", "pods/log"): {"get"},
                     ("", "events"): {"get", "list", "watch"}}
    binding = k.get("RoleBinding", "prefect-worker")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "np-neuropool", "namespace": NAMESPACE}]
    assert not k.kinds("ClusterRole")


def test_network_policies_admit_the_release_and_the_lab_cidrs():
    r = render(VALUE_SETS["tls-exposed"])
    selector = {"app.kubernetes.io/name": "neuropool", "app.kubernetes.io/instance": "np"}
    sched = r.get("NetworkPolicy", "scheduler")["spec"]
    assert sched["policyTypes"] == ["Ingress"]
    inside, outside = sched["ingress"]
    assert inside["from"] == [{"podSelector": {"matchLabels": selector}}]
    assert {p["port"] for p in inside["ports"]} == {8786, 8787}
    assert outside == {"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
                       "ports": [{"port": 8786, "protocol": "TCP"}]}
    workers = r.get("NetworkPolicy", "worker")["spec"]["ingress"]
    assert workers == [{"from": [{"podSelector": {"matchLabels": selector}},
                                 {"ipBlock": {"cidr": "203.0.113.0/24"}}]}]
    assert r.get("NetworkPolicy", "prefect")["spec"]["ingress"] == []
    assert not render({"networkPolicy": {"enabled": False}}).kinds("NetworkPolicy")
    default = render().get("NetworkPolicy", "scheduler")["spec"]["ingress"]
    assert len(default) == 1  # no outside CIDRs unless given


# -- the Prefect worker -----------------------------------------------------------------------


def test_the_prefect_worker_deploys_process_session_on_its_pool():
    r = render()
    pw = r.get("Deployment", "prefect-worker")
    deploy = container(pw, "deploy")["command"]
    opt = {deploy[i]: deploy[i + 1] for i in range(2, len(deploy) - 1) if deploy[i].startswith("--")}
    names = {d["full_name"] for d in deployments_in(ROOT / "configs" / "prefect.yaml")}
    assert opt["--name"] == "process-session/cluster" and opt["--name"] in names
    assert opt["--prefect-file"] == "/opt/neuropool/configs/prefect.yaml"
    assert opt["--pool"] == "neuropool-k8s" and opt["--pool-type"] == "process"
    # the profile the flow runs name is the one the ConfigMap mounts
    assert opt["--cluster"] == "kubernetes"
    assert "kubernetes.yaml" in r.get("ConfigMap", "cluster")["data"]
    worker = container(pw, "prefect-worker")
    cmd = worker["command"]
    assert cmd[:3] == ["prefect", "worker", "start"]
    assert cmd[cmd.index("--pool") + 1] == "neuropool-k8s" and cmd[cmd.index("--type") + 1] == "process"
    assert env_of(worker)["NEUROPOOL_CLUSTER_DIR"]["value"] == "/etc/neuropool/cluster"
    assert {"name": "cluster-profile", "mountPath": "/etc/neuropool/cluster", "readOnly": True} in worker["volumeMounts"]


def test_kubernetes_workers_get_a_job_template_that_is_a_valid_job():
    r = render(VALUE_SETS["kubernetes-worker"])
    deploy = container(r.get("Deployment", "prefect-worker"), "deploy")["command"]
    assert deploy[deploy.index("--pool-type") + 1] == "kubernetes"
    assert deploy[deploy.index("--base-job-template") + 1] == "/etc/neuropool/cluster/base-job-template.json"
    template = json.loads(r.get("ConfigMap", "cluster")["data"]["base-job-template.json"])
    variables = template["variables"]["properties"]
    # the variables Prefect's kubernetes worker fills in are all declared
    placeholders = set(re.findall(r"\{\{ (\w+) \}\}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(variables), placeholders - set(variables)
    defaults = {k: v.get("default") for k, v in variables.items()}
    assert defaults["image"] == "ghcr.io/neuropool/neuropool:0.1.0"
    assert defaults["namespace"] == NAMESPACE and defaults["service_account_name"] == "np-neuropool"

    # the Job as Prefect's own kubernetes worker builds it for a flow run (prefect-kubernetes,
    # no API server needed), then checked against the Kubernetes schemas
    worker = pytest.importorskip("prefect_kubernetes.worker")
    from prefect.client.schemas.objects import FlowRun
    from prefect.utilities.templating import apply_values

    config = worker.KubernetesWorkerJobConfiguration(
        **apply_values(template["job_configuration"], {k: v for k, v in defaults.items() if v is not None}))
    config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="brave-otter", flow_id=uuid.uuid4()))
    job = config.job_manifest
    # prefect-kubernetes insists on these two in the pod spec (they are Job fields; the API
    # server drops them with a warning); nothing else may be unknown to Kubernetes
    assert job["spec"]["template"]["spec"].pop("parallelism") == 1
    assert job["spec"]["template"]["spec"].pop("completions") == 1
    job["metadata"]["name"] = "brave-otter-x1"
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["prefect", "flow-run", "execute"]
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["NEUROPOOL_CLUSTER_DIR"]["value"] == "/etc/neuropool/cluster"
    assert env["PREFECT_API_URL"]["value"] == "http://np-neuropool-prefect-server:4200/api"
    assert "PREFECT__FLOW_RUN_ID" in env  # Prefect's own variables merged with the chart's
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "lab-s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "cluster-profile", "tls"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "flow-run"


# -- the schema -------------------------------------------------------------------------------


@pytest.mark.parametrize("values, field", [
    ({"tls": {"enabled": True}}, "/tls/existingSecret"),
    ({"workerGroups": {"cpu": {"gpus": -1}}}, "/workerGroups/cpu/gpus"),
    ({"workerGroups": {"cpu": {"memoryLimit": "lots"}}}, "/workerGroups/cpu/memoryLimit"),
    ({"workerGroups": {"cpu": {"replica": 3}}}, "/workerGroups/cpu"),
    ({"workerGroups": {"Big_GPUs": {"enabled": True}}}, "propertyName 'Big_GPUs'"),
    ({"prefect": {"worker": {"type": "docker"}}}, "/prefect/worker/type"),
    ({"scheduler": {"port": 70000}}, "/scheduler/port"),
    ({"scheduler": {"external": {"type": "Ingress"}}}, "/scheduler/external/type"),
    ({"networkPolicy": {"externalCIDRs": ["the lab"]}}, "/networkPolicy/externalCIDRs/0"),
    ({"prefect": {"apiUrl": "prefect.lab"}}, "/prefect/apiUrl"),
])
def test_invalid_values_are_refused_naming_the_field(values, field):
    with pytest.raises(helm.HelmValuesError) as e:
        render(values)
    assert (f"at '{field}'" if field.startswith("/") else field) in str(e.value)


def test_the_readme_documents_every_value():
    """Each key of values.yaml (worker groups as ``workerGroups.<name>.KEY``) is in the README."""
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = set()
    for row in re.findall(r"^\| (.+?) \|", readme, flags=re.M):  # `a.b.c`, `.d` -> a.b.c, a.b.d
        keys = re.findall(r"`([^`]+)`", row)
        if keys:
            base = keys[0].rsplit(".", 1)[0]
            documented.update(f"{base}{k}" if k.startswith(".") else k for k in keys)

    def leaves(node: Any, prefix: str) -> list[str]:
        if prefix in ("podSecurityContext", "securityContext") or not isinstance(node, dict) or not node:
            return [prefix]
        if prefix.startswith("workerGroups.") and prefix.count(".") == 1:
            prefix = "workerGroups.<name>"
        if prefix.endswith((".resources", ".jobResources", ".nodeSelector")):
            return [prefix]
        return [k for key, v in node.items() for k in leaves(v, f"{prefix}.{key}" if prefix else key)]

    missing = sorted({k for k in leaves(values, "") if k not in documented})
    assert not missing, f"README.md's values table lacks {missing}"
