"""The deployment files cannot run here; check they parse and speak the settings' language."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from service.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SETTING_NAMES = {f"TALLENNE_{name.upper()}" for name in Settings.model_fields}


def _env_names(text: str) -> set[str]:
    return set(re.findall(r"\b(TALLENNE_[A-Z0-9_]+)\b", text))


def test_every_variable_in_deploy_files_is_a_real_setting() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            unknown = _env_names(path.read_text()) - SETTING_NAMES
            assert not unknown, f"{path.name} uses unknown settings {unknown}"


def test_compose_runs_postgres_17_minio_and_two_replicas_behind_a_proxy() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:17"
    assert services["minio"]["image"].startswith("minio/minio")
    replicas = [s for s in services.values() if "build" in s and s.get("command") != ["migrate"]]
    assert len(replicas) == 2
    for replica in replicas:
        env = replica["environment"]
        assert {"TALLENNE_DATABASE_URL", "TALLENNE_S3_ENDPOINT", "TALLENNE_MASTER_KEY"} <= set(env)
        # The runtime role, never the image's superuser nor the schema owner.
        assert env["TALLENNE_DATABASE_URL"].startswith("postgresql://tallenne:")
        assert "TALLENNE_DATABASE_OWNER_URL" not in env
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "proxy" in services and services["proxy"]["ports"] == ["8080:80"]


def test_compose_creates_the_owner_and_runtime_roles_and_migrates_as_the_owner() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_USER"] == "postgres"
    assert "./postgres-init:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    init = (DEPLOY / "postgres-init" / "10-tallenne-roles.sh").read_text()
    assert "CREATE ROLE tallenne_owner LOGIN" in init
    assert "CREATE ROLE tallenne_runtime NOLOGIN" in init
    assert "NOSUPERUSER NOBYPASSRLS" in init and "IN ROLE tallenne_runtime" in init
    assert "CREATE DATABASE tallenne OWNER tallenne_owner" in init
    migrate = services["migrate"]
    assert migrate["environment"]["TALLENNE_DATABASE_OWNER_URL"].startswith(
        "postgresql://tallenne_owner:")


def test_kubernetes_migrates_as_the_owner_and_serves_as_the_runtime_role() -> None:
    docs = {p.name: yaml.safe_load(p.read_text()) for p in (DEPLOY / "k8s").glob("*.yaml")}
    secret = docs["secret.example.yaml"]["stringData"]
    assert secret["database-url"].startswith("postgresql://tallenne:")
    assert secret["database-owner-url"].startswith("postgresql://tallenne_owner:")
    job = docs["migrate-job.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["migrate"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in job["env"]
            if "valueFrom" in e}
    assert refs["TALLENNE_DATABASE_OWNER_URL"] == "database-owner-url"
    for name in ("deployment.yaml", "purge-cronjob.yaml"):
        spec = docs[name]["spec"]
        pod = spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
        env = pod["spec"]["containers"][0]["env"]
        keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in env if "valueFrom" in e}
        assert "database-owner-url" not in keys and "database-url" in keys


def test_kubernetes_deployment_probes_and_secret_references() -> None:
    docs = {p.name: yaml.safe_load(p.read_text()) for p in (DEPLOY / "k8s").glob("*.yaml")}
    deployment = docs["deployment.yaml"]
    assert deployment["kind"] == "Deployment"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    secret_keys = set(docs["secret.example.yaml"]["stringData"])
    referenced = {
        e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e
    }
    assert referenced <= secret_keys
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert docs["service.yaml"]["kind"] == "Service"


def test_dockerfile_runs_as_non_root_on_a_slim_base() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "python:3.11-slim" in text
    assert re.search(r"^USER (?!root)\S+", text, re.MULTILINE)
