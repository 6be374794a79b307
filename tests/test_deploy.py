"""The deployment files are checked, not just parsed: Kubernetes manifests against the
Kubernetes API schemas, compose files against the compose specification's schema, the image
built where a builder is at hand, and the rules of the house (real settings only, secrets
only by reference, resources, disruption budgets, readiness, one purge at a time)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.37.0"
COMPOSE_FILES = ["compose.yaml", "compose.postgres-ha.yaml"]
SETTING_NAMES = {f"TALLENNE_{name.upper()}" for name in Settings.model_fields}
# Environment variables whose value is a secret: never written into a deployment file.
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|_KEY$|_KEYS$|ACCESS_KEY|DATABASE_URL)")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def _env_names(text: str) -> set[str]:
    return set(re.findall(r"\b(TALLENNE_[A-Z0-9_]+)\b", text))


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return loaded


# --- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,doc", list(manifests()),
                         ids=[f"{n}:{d['kind']}:{d['metadata']['name']}" for n, d in manifests()])
def test_kubernetes_manifest_is_valid_against_the_api_schema(name: str,
                                                             doc: dict[str, Any]) -> None:
    # strict: a misspelt or misplaced field is an error, not silently ignored
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_kubernetes_mistake_is_caught_by_the_schema() -> None:
    _, deployment = next((n, d) for n, d in manifests() if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] \
        = {"name": "http"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _compose_schema() -> dict[str, Any]:
    # The compose specification's schema as check-jsonschema vendors it (offline).
    text = (resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
            / "compose-spec.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_is_valid_against_the_compose_schema(name: str) -> None:
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose(name))]
    assert errors == []


def test_a_compose_mistake_is_caught_by_the_schema() -> None:
    schema = _compose_schema()
    broken = compose()
    broken["services"]["app1"]["depends_on"]["postgres"] = {"condition": "service_happy"}
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


def _builder() -> list[str] | None:
    for tool in ("docker", "podman"):
        if shutil.which(tool) and subprocess.run([tool, "info"], capture_output=True,
                                                 check=False).returncode == 0:
            return [tool, "build"]
    if shutil.which("buildah"):
        return ["buildah", "bud"]
    return None


def test_the_image_builds_from_the_dockerfile() -> None:
    builder = _builder()
    if builder is None:
        pytest.skip("no container builder here (docker or podman with a running engine, "
                    "or buildah)")
    result = subprocess.run([*builder, "-f", str(DEPLOY / "Dockerfile"), "-t",
                             "tallenne:deploy-test", str(ROOT)],
                            capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# --- rules of the house --------------------------------------------------------------------


def test_every_variable_in_deploy_files_is_a_real_setting() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            unknown = _env_names(path.read_text()) - SETTING_NAMES
            assert not unknown, f"{path.name} uses unknown settings {unknown}"


def test_kubernetes_secrets_only_by_reference() -> None:
    for name, doc in manifests():
        if doc["kind"] == "Secret":
            assert name.startswith("secret.example"), f"{name} holds a Secret"
            assert all("CHANGE-ME" in str(v) for v in doc["stringData"].values())
            continue
        if doc["kind"] not in WORKLOADS:
            continue
        for container in containers(doc):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "valueFrom" in env and "secretKeyRef" in env["valueFrom"], \
                        f"{name}: {env['name']} must come from a Secret"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_secrets_only_by_reference(name: str) -> None:
    for service_name, service in compose(name)["services"].items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert "${" in str(value), f"{service_name}: {key} must come from the environment"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "deploy/seaweedfs/s3.json" in ignored
    tracked = subprocess.run(["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert "deploy/seaweedfs/s3.json" not in tracked


def test_every_workload_container_has_requests_and_a_memory_limit() -> None:
    for name, doc in manifests():
        if doc["kind"] not in WORKLOADS:
            continue
        for container in containers(doc):
            res = container.get("resources", {})
            where = f"{name}:{doc['metadata']['name']}:{container['name']}"
            assert {"cpu", "memory"} <= set(res.get("requests", {})), where
            assert "memory" in res.get("limits", {}), where


def test_every_long_running_workload_has_a_disruption_budget_and_readiness() -> None:
    budgets = [(doc["metadata"].get("namespace"), doc["spec"]["selector"]["matchLabels"])
               for _, doc in manifests() if doc["kind"] == "PodDisruptionBudget"]
    for name, doc in manifests():
        if doc["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        namespace = doc["metadata"].get("namespace")
        assert any(ns == namespace and sel.items() <= labels.items() for ns, sel in budgets), \
            f"{name}:{doc['metadata']['name']} has no PodDisruptionBudget"
        for container in pod_spec(doc)["containers"]:
            assert "readinessProbe" in container, f"{name}:{container['name']}"


def test_tallenne_replicas_are_ready_only_when_readyz_says_so() -> None:
    deployment = next(d for _, d in manifests()
                      if d["kind"] == "Deployment" and d["metadata"]["name"] == "tallenne")
    container = pod_spec(deployment)["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod_spec(deployment)["securityContext"]["runAsNonRoot"] is True
    budget = next(d for _, d in manifests() if d["kind"] == "PodDisruptionBudget"
                  and d["metadata"]["name"] == "tallenne")
    assert 0 < budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TALLENNE_PURGE_ENABLED"] == "false"  # the CronJob purges


def test_the_purge_cronjob_never_runs_twice_at_once() -> None:
    cronjob = next(d for _, d in manifests() if d["kind"] == "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert containers(cronjob)[0]["args"] == ["purge"]


# --- the object store and the database -----------------------------------------------------


SEAWEEDFS_IMAGE = re.compile(r"^chrislusf/seaweedfs:\d+\.\d+$")


def test_no_minio_server_anywhere_in_deploy() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert "minio/minio" not in path.read_text(), path.name


def _args(service: dict[str, Any]) -> list[str]:
    return [str(a) for a in service.get("command") or []]


def test_compose_runs_seaweedfs_distributed_behind_load_balancers() -> None:
    services = compose()["services"]
    weed = {n: s for n, s in services.items() if "seaweedfs" in str(s.get("image", ""))}
    assert all(SEAWEEDFS_IMAGE.match(s["image"]) for s in weed.values()), "pin the version"
    masters = [s for s in weed.values() if _args(s)[:1] == ["master"]]
    volumes = [s for s in weed.values() if _args(s)[:1] == ["volume"]]
    filers = [s for s in weed.values() if _args(s)[:1] == ["filer"]]
    gateways = [n for n, s in weed.items() if _args(s)[:1] == ["s3"]]
    assert len(masters) == 3
    for master in masters:
        peers = next(a for a in _args(master) if a.startswith("-peers="))
        assert len(peers.split(",")) == 3
        assert "-defaultReplication=001" in _args(master)
    assert len(volumes) >= 3 and len(filers) == 1 and len(gateways) == 2
    assert any("filer.toml" in str(v) for v in filers[0]["volumes"])
    toml = (DEPLOY / "seaweedfs" / "filer.toml").read_text()
    assert re.search(r"^\[leveldb2\]\nenabled = true", toml, re.MULTILINE)
    lb = (DEPLOY / "seaweedfs" / "nginx-s3.conf").read_text()
    assert all(f"server {g}:8333" in lb for g in gateways)
    replicas = [s for s in services.values() if "build" in s and s.get("command") != ["migrate"]]
    assert len(replicas) == 2
    for replica in replicas:
        env = replica["environment"]
        assert env["TALLENNE_S3_ENDPOINT"] == "s3-lb:8333"
        assert {"TALLENNE_DATABASE_URL", "TALLENNE_MASTER_KEY"} <= set(env)
    assert services["proxy"]["ports"] == ["8080:80"]
    buckets = (DEPLOY / "seaweedfs" / "buckets.weed").read_text()
    assert "s3.bucket.create -name tallenne\n" in buckets and "-replication=001" in buckets


def test_kubernetes_runs_seaweedfs_distributed() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in manifests()}
    masters = docs[("StatefulSet", "seaweedfs-master")]
    assert masters["spec"]["replicas"] == 3
    volumes = docs[("StatefulSet", "seaweedfs-volume")]
    assert volumes["spec"]["replicas"] >= 3
    assert docs[("Deployment", "seaweedfs-s3")]["spec"]["replicas"] >= 2
    for kind, name in [("StatefulSet", "seaweedfs-master"), ("StatefulSet", "seaweedfs-volume"),
                       ("StatefulSet", "seaweedfs-filer"), ("Deployment", "seaweedfs-s3"),
                       ("Job", "seaweedfs-buckets")]:
        for container in containers(docs[(kind, name)]):
            assert SEAWEEDFS_IMAGE.match(container["image"]), name
    config = docs[("ConfigMap", "seaweedfs-config")]["data"]
    assert config["buckets.weed"] == (DEPLOY / "seaweedfs" / "buckets.weed").read_text()
    endpoint = {e["name"]: e.get("value") for e in
                containers(docs[("Deployment", "tallenne")])[0]["env"]}["TALLENNE_S3_ENDPOINT"]
    assert endpoint == "seaweedfs-s3.storage.svc:8333"


def test_s3_identities_give_checkpoints_a_write_only_credential() -> None:
    identities = json.loads((DEPLOY / "seaweedfs" / "s3.example.json").read_text())
    by_name = {i["name"]: i for i in identities["identities"]}
    assert {a.split(":")[0] for a in by_name["audit-checkpoints"]["actions"]} == {
        "Write", "PutObjectRetention"}
    assert all(a.endswith(":tallenne-audit") for a in by_name["audit-checkpoints"]["actions"])
    assert {a.split(":")[0] for a in by_name["tallenne"]["actions"]} >= {"Read", "Write", "List"}
    secret = next(d for _, d in manifests() if d["kind"] == "Secret"
                  and d["metadata"]["name"] == "seaweedfs-s3-identities")
    assert json.loads(secret["stringData"]["s3.json"]) == identities


def test_postgres_has_a_streaming_standby_and_archives_wal() -> None:
    conf = (DEPLOY / "postgres" / "primary.conf").read_text()
    for line in ("wal_level = replica", "archive_mode = on", "hot_standby = on"):
        assert line in conf
    assert re.search(r"^archive_command = '.+%p.+%f'", conf, re.MULTILINE)
    ha = compose("compose.postgres-ha.yaml")["services"]
    assert "pg_basebackup" in (DEPLOY / "postgres" / "standby.sh").read_text()
    assert ha["postgres-standby"]["image"] == "postgres:17"
    statefulset = next(d for _, d in manifests()
                       if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "postgres")
    assert statefulset["spec"]["replicas"] == 2
    k8s_conf = next(d for _, d in manifests() if d["kind"] == "ConfigMap"
                    and d["metadata"]["name"] == "postgres-config")["data"]
    assert "archive_command" in k8s_conf["postgresql.conf"]
    assert "pg_basebackup" in k8s_conf["clone-standby.sh"]

def test_compose_replicas_serve_as_the_runtime_role_after_migrating_as_the_owner() -> None:
    services = compose()["services"]
    assert services["postgres"]["image"] == "postgres:17"
    replicas = [s for s in services.values() if "build" in s and s.get("command") != ["migrate"]]
    assert len(replicas) == 2
    for replica in replicas:
        env = replica["environment"]
        # The runtime role, never the image's superuser nor the schema owner.
        assert env["TALLENNE_DATABASE_URL"].startswith("postgresql://tallenne:")
        assert "TALLENNE_DATABASE_OWNER_URL" not in env
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_creates_the_owner_and_runtime_roles_and_migrates_as_the_owner() -> None:
    services = compose()["services"]
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
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in manifests()}
    secret = next(d for _, d in manifests() if d["kind"] == "Secret"
                  and "database-url" in d.get("stringData", {}))["stringData"]
    assert secret["database-url"].startswith("postgresql://tallenne:")
    assert secret["database-owner-url"].startswith("postgresql://tallenne_owner:")
    job = next(d for (kind, _), d in docs.items() if kind == "Job"
               and containers(d)[0].get("args") == ["migrate"])
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in containers(job)[0]["env"]
            if "valueFrom" in e}
    assert refs["TALLENNE_DATABASE_OWNER_URL"] == "database-owner-url"
    for kind, name in [("Deployment", "tallenne"), ("CronJob", None)]:
        workload = next(d for (k, n), d in docs.items() if k == kind and name in (None, n))
        env = containers(workload)[-1]["env"]
        keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in env if "valueFrom" in e}
        assert "database-owner-url" not in keys and "database-url" in keys


def test_dockerfile_runs_as_non_root_on_a_slim_base() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "python:3.11-slim" in text
    assert re.search(r"^USER (?!root)\S+", text, re.MULTILINE)
