"""deploy/k8s: the kustomize base and the production overlay render with ``kubectl kustomize``
and every object validates against the Kubernetes API's schemas (kubernetes-validate ships
them; nothing is fetched). Then what the gateway relies on: probes on the keyless ops port, a
non-root read-only pod, secrets by reference, the policy folder mounted whole (so ConfigMap
updates reach the watcher), and the production overlay's replicas and image."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi import FastAPI

from gateway.ledger.capacity import parse_size
from gateway.policy import load_policy
from gateway.server import uvicorn_config
from gateway.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32"  # the oldest minor this is meant to run on
KINDS = {
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Job",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Service",
}
SECRET_ENV = {
    "TIERGATE_DATABASE_URL": "database-url",
    "TIERGATE_REDIS_URL": "redis-url",
    "TIERGATE_ADMIN_KEY": "admin-key",
    "TIERGATE_API_KEYS": "api-keys",
}


# After the drain: the ledger's last insert (TIERGATE_LEDGER_INSERT_TIMEOUT_S, 5 s, then the
# outbox), the budgets' reconcile with Redis, the connections closed.
SHUTDOWN_MARGIN_S = 10


def render(target: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "this test needs kubectl (1.27 or later: kustomize built in) on PATH"
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = {obj["kind"]: obj for obj in objects}
    assert len(kinds) == len(objects), "one object of each kind"
    return kinds


def container(objects: list[dict[str, Any]], kind: str = "Deployment") -> dict[str, Any]:
    (only,) = by_kind(objects)[kind]["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


@pytest.fixture(scope="module", params=["base", "overlays/production"])
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def test_every_object_is_valid_for_the_api(objects: list[dict[str, Any]]) -> None:
    assert set(by_kind(objects)) == KINDS
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_probes_use_the_ops_port(objects: list[dict[str, Any]]) -> None:
    gateway = container(objects)
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert ports == {"http": 8000, "ops": 9000}
    env = {item["name"]: item for item in gateway["env"]}
    assert env["TIERGATE_OPS_PORT"]["value"] == "9000"
    assert env["TIERGATE_PORT"]["value"] == "8000"
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert gateway["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    annotations = by_kind(objects)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9000"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_pods_run_as_the_images_user_without_privileges(objects: list[dict[str, Any]]) -> None:
    for kind in ("Deployment", "Job"):
        pod = by_kind(objects)[kind]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        (only,) = pod["containers"]
        assert only["securityContext"]["allowPrivilegeEscalation"] is False
        assert only["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert only["resources"]["requests"]
        assert only["resources"]["limits"]["memory"]
        # A read-only root: every path the process writes is a volume.
        assert only["securityContext"]["readOnlyRootFilesystem"] is True
        assert "/tmp" in {m["mountPath"] for m in only["volumeMounts"]}
    mounts = {m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert "/var/lib/tiergate" in mounts  # the image's working directory: outbox, journal


def test_secrets_are_referenced_not_written(objects: list[dict[str, Any]]) -> None:
    env = {item["name"]: item for item in container(objects)["env"]}
    for name, key in SECRET_ENV.items():
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "tiergate", "key": key}
    migrate_env = {item["name"]: item for item in container(objects, "Job")["env"]}
    assert migrate_env["TIERGATE_DATABASE_URL"] == env["TIERGATE_DATABASE_URL"]
    assert "Secret" not in by_kind(objects)


def test_the_policy_configmap_is_mounted_as_a_folder(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    kinds = by_kind(objects)
    config_map = kinds["ConfigMap"]
    assert config_map["metadata"]["name"] == "tiergate-policy"  # no hash: updated in place
    (source,) = config_map["data"].items()
    name, text = source
    (tmp_path / name).write_text(text)
    assert load_policy(tmp_path / name).tiers
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == "tiergate-policy"
    (mount,) = (m for m in container(objects)["volumeMounts"] if m["name"] == "policy")
    assert "subPath" not in mount  # a subPath mount never sees an update
    env = {item["name"]: item.get("value") for item in container(objects)["env"]}
    assert env["TIERGATE_POLICY"] == f"{mount['mountPath']}/{name}"


def test_migration_job_and_availability(objects: list[dict[str, Any]]) -> None:
    kinds = by_kind(objects)
    assert container(objects, "Job")["args"] == ["db", "upgrade"]
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    job_labels = kinds["Job"]["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= job_labels.items()  # the Service never sends to it
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]


OPS_ACCESS = {"tiergate.io/ops-access": "true"}


def test_the_ops_port_admits_only_pods_labelled_for_it(objects: list[dict[str, Any]]) -> None:
    """The ops port serves /readyz's operator detail (backend addresses) and /metrics with no
    key: a NetworkPolicy admits it only from pods or namespaces labelled
    ``tiergate.io/ops-access: "true"`` (a Prometheus), and the API port from anywhere."""
    kinds = by_kind(objects)
    policy = kinds["NetworkPolicy"]
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    # Ingress only: egress (PostgreSQL, Redis, Ollama, the hosted APIs, DNS) stays open.
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {port["port"]: rule for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert set(rules) == {"http", "ops"}
    assert "from" not in rules["http"], "the API port: from anywhere the Service sends"
    assert len(rules["http"]["ports"]) == 1, "no other port rides on the open rule"
    sources = rules["ops"]["from"]
    assert sources, "an ops rule with no sources would admit everyone"
    assert len(rules["ops"]["ports"]) == 1
    for source in sources:
        # Every source needs the label on the pod or on its namespace: never an empty
        # selector, which admits every pod (or every namespace).
        labels = [
            source.get(key, {}).get("matchLabels")
            for key in ("podSelector", "namespaceSelector")
            if source.get(key, {}).get("matchLabels")
        ]
        assert OPS_ACCESS in labels, source
        assert "ipBlock" not in source
    # A labelled Prometheus pod in any namespace, and every pod of a labelled namespace.
    assert {"podSelector": {"matchLabels": OPS_ACCESS}, "namespaceSelector": {}} in sources
    assert {"namespaceSelector": {"matchLabels": OPS_ACCESS}} in sources


def test_production_overlay() -> None:
    kinds = by_kind(render("overlays/production"))
    deployment = kinds["Deployment"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3
    assert kinds["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 20
    gateway = deployment["spec"]["template"]["spec"]["containers"][0]
    assert gateway["image"] == "registry.example.com/tiergate:0.1.0"
    assert gateway["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert container(list(kinds.values()), "Job")["image"] == gateway["image"]
    assert {obj["metadata"].get("namespace") for obj in kinds.values()} == {"tiergate"}


def drain_s(env: dict[str, str]) -> int:
    """The drain on SIGTERM that a gateway started with these ``TIERGATE_*`` values gets."""
    prefix = "TIERGATE_"
    settings = Settings.model_validate(
        {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    )
    drain = uvicorn_config(FastAPI(), settings).timeout_graceful_shutdown
    assert drain is not None
    return drain


def test_the_outbox_bound_leaves_a_margin_in_its_volume(objects: list[dict[str, Any]]) -> None:
    """Past an emptyDir's sizeLimit the kubelet evicts the pod, and every row in its outbox is
    gone. The gateway stops admitting requests at TIERGATE_OUTBOX_MAX_BYTES (the default when
    the manifest does not name it); the volume holds that and a quarter of itself besides, for
    the rows of requests in flight past the bound, the outbox's WAL and the journal."""
    gateway = container(objects)
    env = {item["name"]: item["value"] for item in gateway["env"] if "value" in item}
    prefix = "TIERGATE_"
    settings = Settings.model_validate(
        {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    )
    assert not settings.outbox_path.is_absolute()  # under the working directory: the volume
    (mount,) = (m for m in gateway["volumeMounts"] if m["mountPath"] == "/var/lib/tiergate")
    pod = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    size_limit = parse_size(volumes[mount["name"]]["emptyDir"]["sizeLimit"])
    assert settings.outbox_max_bytes <= size_limit * 3 // 4, (settings.outbox_max_bytes, size_limit)


def test_a_rollout_lets_every_request_the_policy_allows_finish(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """SIGTERM drains requests in flight; a request may run for the policy's timeouts.total_s,
    so the drain is at least that, and the grace period covers the preStop pause, the drain and
    the shutdown after it (else the kubelet's SIGKILL cuts the drain short)."""
    kinds = by_kind(objects)
    ((name, text),) = kinds["ConfigMap"]["data"].items()
    (tmp_path / name).write_text(text)
    total_s = load_policy(tmp_path / name).timeouts.total_s
    gateway = container(objects)
    env = {item["name"]: item["value"] for item in gateway["env"] if "value" in item}
    drain = drain_s(env)
    assert drain >= total_s, f"the drain ({drain} s) cuts requests the policy allows {total_s} s"
    sleep, seconds = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    grace = kinds["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(seconds) + drain + SHUTDOWN_MARGIN_S


def test_the_autoscaler_alone_sets_the_replica_count(objects: list[dict[str, Any]]) -> None:
    """With an HPA, a Deployment that names spec.replicas is scaled back to that number by every
    `kubectl apply` (the Kubernetes docs: remove it from the manifest); the HPA's minReplicas is
    the floor instead, two at least so the PDB lets a drain take one."""
    kinds = by_kind(objects)
    assert "replicas" not in kinds["Deployment"]["spec"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_replicas_are_spread_over_nodes(objects: list[dict[str, Any]]) -> None:
    """One node's loss must not take every gateway (a PDB guards drains, not crashes)."""
    deployment = by_kind(objects)["Deployment"]
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def _cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_the_tiny_model_uses_the_pods_cpus_not_the_nodes(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """llama.cpp's default threads come from the node's core count (multiprocessing.cpu_count
    sees the node, not the pod's CPU request): on a 64-core node, 32 generation threads in a
    pod that asked for one core. The policy's in-process model names its threads instead."""
    kinds = by_kind(objects)
    ((name, text),) = kinds["ConfigMap"]["data"].items()
    (tmp_path / name).write_text(text)
    request = _cpus(container(objects)["resources"]["requests"]["cpu"])
    tiny = [b for b in load_policy(tmp_path / name).backends.values() if b.type == "tiny"]
    assert tiny
    for backend in tiny:
        threads = backend.n_threads
        assert threads is not None, "set n_threads: llama.cpp's default is half the node's cores"
        assert threads <= max(1, round(request)), (threads, request)
