"""Deployment files parse, and what they run exists: commands, queues, settings, files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from workers.celery_app import QUEUES
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMMANDS = {
    "worker",
    "flower",
    "reconcile",
    "db",
    "analyze",
    "submit",
    "status",
    "results",
    "serve",
    "callback-worker",
}


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def check_args(args: list[str]) -> None:
    assert args[0] in COMMANDS, f"unknown command {args[0]!r}"
    if args[0] == "worker":
        queues = args[args.index("--queues") + 1].split(",")
        assert set(queues) <= set(QUEUES), queues


def check_env(names: list[str]) -> None:
    fields = {f"OCEANSTREAM_{name.upper()}" for name in Settings.model_fields}
    for name in names:
        if name.startswith("OCEANSTREAM_"):
            assert name in fields, f"{name} is not a setting"


def test_compose_services_run_real_commands() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        if "command" in service and service.get("image", "").startswith("oceanstream"):
            check_args(service["command"])
        check_env(list(service.get("environment", {})))
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    assert {"worker-ingest", "worker-features", "worker-inference", "reconcile"} <= set(services)
    served = {
        q
        for s in services.values()
        if s.get("command", [None])[0] == "worker"
        for q in s["command"][s["command"].index("--queues") + 1].split(",")
    }
    assert served == set(QUEUES), "every queue needs a worker"
    for volume in services["prometheus"]["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).exists()


@pytest.mark.parametrize("dockerfile", sorted((DEPLOY / "docker").glob("Dockerfile.*")))
def test_dockerfiles_copy_what_exists(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    for source in re.findall(r"^COPY (\S+)", text, flags=re.MULTILINE):
        assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
    assert 'ENTRYPOINT ["oceanstream"]' in text


def test_kubernetes_manifests_are_consistent() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs = [doc for name in kustomization["resources"] for doc in load_all(DEPLOY / "k8s" / name)]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    deployments = {name for kind, name in kinds if kind == "Deployment"}
    assert {"worker-ingest", "worker-features", "worker-inference", "reconcile"} <= deployments
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    check_env([*config["data"], *secret["stringData"]])
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for container in spec["containers"]:
                check_args(container["args"])
                for source in container.get("envFrom", []):
                    ref = source.get("configMapRef") or source.get("secretRef")
                    assert ref["name"] == "oceanstream"
            if doc["kind"] == "Deployment":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        if doc["kind"] == "ScaledObject":
            assert doc["spec"]["scaleTargetRef"]["name"] in deployments
            for trigger in doc["spec"]["triggers"]:
                assert trigger["metadata"]["listName"] in QUEUES
    gpu = next(d for d in docs if d["metadata"]["name"] == "worker-inference")
    limits = gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1


def test_every_metrics_exporter_sets_the_address_it_binds() -> None:
    """The exporter has no auth and binds 127.0.0.1 by default: a scraped container must say
    which address it serves on (a pod its own IP, from the downward API)."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if "OCEANSTREAM_METRICS_PORT" in service.get("environment", {}):
            assert service["environment"].get("OCEANSTREAM_METRICS_ADDRESS"), name
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs = [doc for name in kustomization["resources"] for doc in load_all(DEPLOY / "k8s" / name)]
    scraped = [
        container
        for doc in docs
        if doc["kind"] == "Deployment"
        and doc["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape")
        == "true"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]
    assert len(scraped) == 3
    for container in scraped:
        env = {e["name"]: e for e in container.get("env", [])}
        address = env["OCEANSTREAM_METRICS_ADDRESS"]
        assert address["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert "OCEANSTREAM_METRICS_ADDRESS" not in doc["data"]  # per pod, not shared


def test_compose_serves_the_api_and_delivers_callbacks() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    api = services["api"]
    assert api["command"][:1] == ["serve"] and "0.0.0.0" in api["command"]
    port = api["command"][api["command"].index("--port") + 1]
    assert any(mapping.endswith(f":{port}") for mapping in api["ports"])
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert services["callback-worker"]["command"][0] == "callback-worker"


def test_kubernetes_api_has_probes_a_service_and_an_ingress() -> None:
    docs = load_all(DEPLOY / "k8s" / "api.yaml")
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert "api.yaml" in kustomization["resources"]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = by_kind[("Deployment", "api")]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["args"][0] == "serve"
    port = int(container["args"][container["args"].index("--port") + 1])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named["http"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    check_env([e["name"] for e in container.get("env", [])])
    service = by_kind[("Service", "api")]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    ingress = by_kind[("Ingress", "api")]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "api"
    assert backend["port"]["name"] == service["spec"]["ports"][0]["name"]
    worker = by_kind[("Deployment", "callback-worker")]
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"][0] == "callback-worker"


def test_deploy_commands_are_oceanstream_commands() -> None:
    """Every command the deploy files run is registered on the CLI."""
    import workers.cli.callbacks
    import workers.cli.serve  # noqa: F401
    from workers.cli import app

    names = {command.name or command.callback.__name__ for command in app.registered_commands}
    names |= {group.name for group in app.registered_groups}
    assert {"serve", "callback-worker"} <= names


def test_kubernetes_manifests_validate_against_kubernetes_schemas() -> None:
    """Each resource against the schema of its kind (kubernetes-validate ships Kubernetes'
    own), strictly: an unknown or misspelt field fails. KEDA's ScaledObject is a custom
    resource with no schema there."""
    import kubernetes_validate

    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    version = kubernetes_validate.latest_version()
    checked = 0
    for name in kustomization["resources"]:
        for doc in load_all(DEPLOY / "k8s" / name):
            if doc["kind"] == "ScaledObject":
                continue
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked >= 10
