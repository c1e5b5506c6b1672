"""The Kubernetes manifests (deploy/k8s/) render, validate against the Kubernetes and
operator schemas offline, and say what the services really serve and consume."""

from __future__ import annotations

import importlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tally.cli.security import DEPLOY_SECRETS
from tally.natsconfig import ROLES, SERVICES, password_variable
from tally.service import GRACEFUL_TIMEOUT_S, ServiceKit
from tally.settings import REPO_ROOT
from tests.k8s.kustomize import KustomizeError, json6902, render

K8S = REPO_ROOT / "deploy" / "k8s"
SCHEMAS = REPO_ROOT / "tests" / "k8s" / "schemas"
#: Every directory a user applies with ``kubectl apply -k`` (docs/deploy.md).
KUSTOMIZATIONS = [
    "overlays/production",
    "overlays/production/migrate",
    "overlays/small",
    "overlays/small/migrate",
    "postgres",
]
#: Custom resources, validated against their operators' CRD schemas.
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh-v1alpha1-scaledobject.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io-v1-cluster.json",
}


@cache
def rendered(directory: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(K8S / directory))


def by_kind(directory: str, kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in rendered(directory) if r["kind"] == kind}


def validation_errors(resource: dict[str, Any]) -> list[str]:
    key = (resource["apiVersion"], resource["kind"])
    if key in CRDS:
        schema = json.loads((SCHEMAS / CRDS[key]).read_text())
        return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(resource)]
    try:
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc).splitlines()[0]]
    return []


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_every_resource_validates_against_its_schema(directory: str) -> None:
    resources = rendered(directory)
    assert resources
    for resource in resources:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        assert validation_errors(dict(resource)) == [], f"{directory}: {name}"
        assert resource["metadata"].get("namespace") == "tally", name


def test_the_validators_catch_a_misspelt_field() -> None:
    deployment = json.loads(json.dumps(by_kind("overlays/production", "Deployment")))
    broken = deployment["tally-tracker"]
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert validation_errors(broken)
    scaled = json.loads(json.dumps(by_kind("overlays/production", "ScaledObject")["tally-quota"]))
    scaled["spec"]["minReplicas"] = 2
    assert validation_errors(scaled)
    cluster = json.loads(json.dumps(rendered("postgres")[0]))
    cluster["spec"]["instances"] = "three"
    assert validation_errors(cluster)


def test_the_renderer_refuses_what_it_does_not_apply(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(KustomizeError, match="configMapGenerator"):
        render(tmp_path)
    with pytest.raises(KustomizeError, match="no such field"):
        json6902({"spec": {}}, {"op": "replace", "path": "/spec/minReplicaCount", "value": 1})


def _kit(service: str, monkeypatch: pytest.MonkeyPatch) -> ServiceKit:
    """The service's kit as its ``create_app`` builds it (nothing connects)."""
    kits: list[ServiceKit] = []
    app = ServiceKit.app

    def capture(self: ServiceKit, *args: Any, **kwargs: Any) -> Any:
        kits.append(self)
        return app(self, *args, **kwargs)

    monkeypatch.setattr(ServiceKit, "app", capture)
    importlib.import_module(f"services.{service}.app").create_app()
    return kits[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_probes_its_own_health_endpoints(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = _kit(service, monkeypatch)
    deployment = by_kind("overlays/production", "Deployment")[f"tally-{service}"]
    container = _container(deployment)
    assert container["command"] == ["tally", "serve", service]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": kit.settings.http_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = {e["name"]: e for e in container["env"]}
    prefix = type(kit.settings).model_config["env_prefix"]
    assert env[f"{prefix}HTTP_HOST"]["value"] == "0.0.0.0"
    assert env["TALLY_NATS_USER"]["value"] == service
    secret = env["TALLY_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "tally-secrets", "key": password_variable(service)}
    requests = container["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    # Every YAML tunable the service reads comes from the mounted tally-config.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/etc/tally"
    for field in type(kit.settings).model_fields:
        if field.endswith("_path"):
            path = env[f"{prefix}{field.upper()}"]["value"]
            default = getattr(type(kit.settings)(), field)
            assert path == f"/etc/tally/{Path(default).name}", field
            assert (REPO_ROOT / "deploy" / "config" / Path(default).name).exists()


@pytest.mark.parametrize("service", SERVICES)
def test_pods_stop_gracefully_and_a_budget_keeps_one(service: str) -> None:
    deployment = by_kind("overlays/production", "Deployment")[f"tally-{service}"]
    pod = deployment["spec"]["template"]["spec"]
    # Longer than the drain: in-flight handlers finish and ack before the kill.
    pre_stop = 5 if "lifecycle" in _container(deployment) else 0
    assert pod["terminationGracePeriodSeconds"] > GRACEFUL_TIMEOUT_S + pre_stop + 10
    assert deployment["spec"]["replicas"] >= 2
    budget = by_kind("overlays/production", "PodDisruptionBudget")[f"tally-{service}"]
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    small = by_kind("overlays/small", "PodDisruptionBudget")[f"tally-{service}"]
    assert small["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}


@pytest.mark.parametrize("service", SERVICES)
def test_keda_scales_each_consumer_service_on_the_lag_of_its_durable_consumers(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = _kit(service, monkeypatch)
    consumers = {(c.stream, c.durable) for c in kit.bus.consumers}
    scaled = by_kind("overlays/production", "ScaledObject").get(f"tally-{service}")
    if service == "learner":
        # One replica learns at a time: more replicas are standbys, not throughput.
        assert scaled is None
        return
    assert scaled is not None
    assert scaled["spec"]["scaleTargetRef"] == {"name": f"tally-{service}"}
    assert scaled["spec"]["minReplicaCount"] >= 2
    triggers = scaled["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"nats-jetstream"}
    assert {(t["metadata"]["stream"], t["metadata"]["consumer"]) for t in triggers} == consumers
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["natsServerMonitoringEndpoint"] == "nats-headless.tally.svc.cluster.local:8222"
        assert meta["account"] == "$G"  # users of the shipped authorization block
        assert int(meta["lagThreshold"]) > 0


def test_the_migrations_job_upgrades_the_schema_and_provisions_the_streams() -> None:
    job = by_kind("overlays/production/migrate", "Job")["tally-migrate"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == (
        "tally db upgrade && tally db partitions && tally streams provision"
    )
    env = {e["name"]: e for e in container["env"]}
    assert env["TALLY_NATS_USER"]["value"] == "operator"
    services = by_kind("overlays/production", "Deployment")
    image = _container(services["tally-tracker"])["image"]
    assert container["image"] == image
    assert all(_container(d)["image"] == image for d in services.values())
    settings = by_kind("overlays/production/migrate", "ConfigMap")["tally-settings"]
    assert settings["data"]["TALLY_STREAM_REPLICAS"] == "3"
    small = by_kind("overlays/small/migrate", "ConfigMap")["tally-settings"]
    assert small["data"]["TALLY_STREAM_REPLICAS"] == "1"
    assert by_kind("overlays/small", "ConfigMap")["tally-settings"] == small


def test_the_database_urls_name_the_cloudnativepg_cluster() -> None:
    cluster = rendered("postgres")[0]
    name = cluster["metadata"]["name"]
    database = cluster["spec"]["bootstrap"]["initdb"]["database"]
    for deployment in by_kind("overlays/production", "Deployment").values():
        env = {e["name"]: e for e in _container(deployment)["env"]}
        assert env["PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"{name}-app"
        assert f"@{name}-rw:5432/{database}" in env["TALLY_DATABASE_URL"]["value"]


def test_nats_chart_values_cluster_jetstream_and_include_the_shipped_users() -> None:
    values = yaml.safe_load((K8S / "helm" / "nats-values.yaml").read_text())
    config = values["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["jetstream"]["enabled"] is True
    assert config["monitor"]["port"] == 8222
    # The include is relative to /etc/nats-config/nats.conf; the ConfigMap is mounted there.
    include = config["merge"]["$include"]
    mount = values["container"]["patch"][0]["value"]
    assert f"/etc/nats-config/{Path(include).parent.name}" == mount["mountPath"]
    volume = values["podTemplate"]["patch"][0]["value"]
    assert volume["name"] == mount["name"]
    assert Path(include).name == "auth.conf"
    env = values["container"]["env"]
    assert set(env) == {password_variable(role) for role in ROLES}
    for name, source in env.items():
        assert source["valueFrom"]["secretKeyRef"] == {"name": "tally-secrets", "key": name}


def test_redis_chart_values_read_the_password_tally_secrets_init_writes() -> None:
    values = yaml.safe_load((K8S / "helm" / "redis-cluster-values.yaml").read_text())
    assert values["existingSecret"] == "tally-secrets"
    assert values["existingSecretPasswordKey"] in DEPLOY_SECRETS
    assert values["cluster"]["nodes"] >= 6 and values["cluster"]["replicas"] >= 1
    quota = _container(by_kind("overlays/production", "Deployment")["tally-quota"])
    env = {e["name"]: e for e in quota["env"]}
    assert env["TALLY_REDIS_URL"]["value"].startswith("redis+cluster://:$(REDIS_PASSWORD)@")


def test_a_daily_job_keeps_the_partitions_with_the_retention_setting() -> None:
    job = by_kind("overlays/production", "CronJob")["tally-partitions"]
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["tally", "db", "partitions"]
    assert container["envFrom"] == [{"configMapRef": {"name": "tally-settings"}}]
    settings = by_kind("overlays/production", "ConfigMap")["tally-settings"]["data"]
    assert settings["TALLY_PARTITION_RETENTION_MONTHS"] == "0"
    image = _container(by_kind("overlays/production", "Deployment")["tally-tracker"])["image"]
    assert container["image"] == image


def test_the_reporter_reads_from_the_replicas() -> None:
    reporter = _container(by_kind("overlays/production", "Deployment")["tally-reporter"])
    env = {e["name"]: e for e in reporter["env"]}
    assert "@tally-pg-ro:5432/tally" in env["TALLY_REPORTER_DATABASE_URL"]["value"]
    assert "@tally-pg-rw:5432/tally" in env["TALLY_DATABASE_URL"]["value"]  # its tokens
