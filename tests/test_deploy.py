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
    cronjob = next(d for _, d in manifests() if d["kind"] == "CronJob"
                   and d["metadata"]["name"] == "tallenne-purge")
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
    assert "pg_basebackup" in (DEPLOY / "postgres" / "clone-standby.sh").read_text()
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
    assert ("./postgres-init/10-tallenne-roles.sh:/docker-entrypoint-initdb.d/"
            "10-tallenne-roles.sh:ro") in postgres["volumes"]
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
    # The owner's URL goes to the migrations and the backup (pg_dump) only.
    for kind, name in [("Deployment", "tallenne"), ("CronJob", "tallenne-purge")]:
        env = containers(docs[(kind, name)])[-1]["env"]
        keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in env if "valueFrom" in e}
        assert "database-owner-url" not in keys and "database-url" in keys


def test_dockerfile_runs_as_non_root_on_a_slim_base() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "python:3.11-slim" in text
    assert re.search(r"^USER (?!root)\S+", text, re.MULTILINE)


# --- what the deployment files must get right ----------------------------------------------


def _doc(kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for _, d in manifests()
                                 if d["kind"] == kind and d["metadata"]["name"] == name)
    return found


def _settings_lines(text: str) -> list[str]:
    """A postgresql.conf's setting lines, comments left out."""
    return [line.split("#")[0].strip() for line in text.splitlines()
            if line.split("#")[0].strip()]


def _ha_compose() -> dict[str, Any]:
    """compose.yaml with compose.postgres-ha.yaml over it, services merged key by key."""
    services: dict[str, Any] = compose()["services"]
    for name, override in compose("compose.postgres-ha.yaml")["services"].items():
        merged = dict(services.get(name, {}))
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            elif isinstance(value, list) and isinstance(merged.get(key), list) \
                    and key == "volumes":
                merged[key] = [*merged[key], *value]
            else:
                merged[key] = value
        services[name] = merged
    return services


def test_synchronous_commit_is_switched_on_after_the_first_start_not_during_it() -> None:
    # The postgres image's temporary server of the first start reads the same config_file:
    # with synchronous_standby_names set there, the init scripts' first commit waits forever.
    k8s = _doc("ConfigMap", "postgres-config")["data"]
    for conf in ((DEPLOY / "postgres" / "primary.conf").read_text(), k8s["postgresql.conf"]):
        assert not any(line.startswith("synchronous_standby_names")
                       for line in _settings_lines(conf))
    for init in ((DEPLOY / "postgres" / "init-replication.sh").read_text(),
                 k8s["init-replication.sh"]):
        assert "ALTER SYSTEM SET synchronous_standby_names = '*'" in init
    assert k8s["init-replication.sh"] == (DEPLOY / "postgres" / "init-replication.sh").read_text()


def test_kubernetes_postgres_creates_the_owner_and_runtime_roles() -> None:
    statefulset = _doc("StatefulSet", "postgres")
    config = _doc("ConfigMap", "postgres-config")["data"]
    postgres = pod_spec(statefulset)["containers"][0]
    init_scripts = {m["mountPath"].rsplit("/", 1)[1]: m.get("subPath")
                    for m in postgres["volumeMounts"]
                    if m["mountPath"].startswith("/docker-entrypoint-initdb.d/")}
    roles = next((sub for name, sub in init_scripts.items() if "roles" in name), None)
    assert roles is not None, "the image never runs the roles script: tallenne_owner is missing"
    assert config[roles] == (DEPLOY / "postgres-init" / "10-tallenne-roles.sh").read_text()
    assert sorted(init_scripts)[0] == next(n for n in init_scripts if "roles" in n), \
        "the roles come before the replication settings"
    env = {e["name"]: e for e in postgres["env"]}
    secret = _doc("Secret", "postgres-secrets")["stringData"]
    for name in ("POSTGRES_OWNER_PASSWORD", "POSTGRES_APP_PASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] in secret, name
    # The image would create the database itself, owned by its superuser, and the roles
    # script's CREATE DATABASE … OWNER tallenne_owner would then fail.
    assert "POSTGRES_DB" not in env


def _postgres_pods() -> list[str]:
    statefulset = _doc("StatefulSet", "postgres")
    service, namespace = statefulset["spec"]["serviceName"], statefulset["metadata"]["namespace"]
    return [f"{statefulset['metadata']['name']}-{i}.{service}.{namespace}.svc"
            for i in range(statefulset["spec"]["replicas"])]


def _addresses(dsn: str) -> tuple[list[str], str]:
    from asyncpg import connect_utils

    addresses, params = connect_utils._parse_connect_dsn_and_args(
        dsn=dsn, host=None, port=None, user=None, password=None, passfile=None, database=None,
        ssl=None, service=None, servicefile=None, direct_tls=None, server_settings=None,
        target_session_attrs=None, krbsrvname=None, gsslib=None)
    return [str(host) for host, _ in addresses], str(params.target_session_attrs)


def test_database_urls_name_every_server_and_reach_only_the_primary() -> None:
    # A headless Service's name resolves to the standby too; only target_session_attrs
    # keeps connections (and the migrations) off it.
    secret = _doc("Secret", "tallenne-secrets")["stringData"]
    for key in ("database-url", "database-owner-url"):
        hosts, attrs = _addresses(secret[key])
        assert hosts == _postgres_pods() and attrs.endswith("read_write"), key
    services = _ha_compose()
    servers = [n for n, s in services.items() if str(s.get("image", "")).startswith("postgres:")
               and "profiles" not in s]
    for name, service in services.items():
        for key in ("TALLENNE_DATABASE_URL", "TALLENNE_DATABASE_OWNER_URL"):
            if key in (service.get("environment") or {}):
                hosts, attrs = _addresses(service["environment"][key])
                assert sorted(hosts) == sorted(servers) and attrs.endswith("read_write"), \
                    f"{name}: {key}"


def test_compose_wal_archive_is_writable_by_both_servers_and_pruned() -> None:
    services = _ha_compose()
    archivers = {n: s for n, s in services.items()
                 if any(str(v).startswith("pgarchive:") for v in s.get("volumes", []))}
    servers = [n for n, s in archivers.items() if "profiles" not in s]
    assert len(servers) == 2
    for name in servers:
        mount = next(str(v) for v in archivers[name]["volumes"] if str(v).startswith("pgarchive:"))
        assert not mount.endswith(":ro"), f"{name} archives after a promotion"
        # A new volume is root's; the postgres user must be able to write it.
        entry = " ".join(archivers[name].get("entrypoint") or [])
        script = DEPLOY / "postgres" / Path(entry.split()[-1]).name if entry else None
        owned = script is not None and script.exists() and re.search(
            r"(install -d -o postgres|chown \S*postgres\S* /archive)", script.read_text())
        assert owned, f"{name}: nothing makes the new (root's) /archive the postgres user's"
    pruners = [s for n, s in archivers.items() if "profiles" in s]
    assert pruners, "no service takes base backups and prunes the archive"
    backup_script = next(str(v).split(":")[0] for v in pruners[0]["volumes"]
                         if str(v).endswith(".sh:ro"))
    text = (DEPLOY / backup_script).read_text()
    assert "pg_basebackup" in text and "pg_archivecleanup /archive" in text


def test_every_file_a_compose_file_mounts_is_in_the_repository() -> None:
    tracked = set(subprocess.run(["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.split())
    for name in COMPOSE_FILES:
        loaded = compose(name)
        mounts = [str(v).split(":")[0] for s in loaded["services"].values()
                  for v in s.get("volumes", [])]
        mounts += [str(s["file"]) for s in (loaded.get("secrets") or {}).values()]
        for source in mounts:
            if not source.startswith("./"):
                continue  # a named volume
            path = f"deploy/{source[2:]}".rstrip("/")
            if path == "deploy/seaweedfs/s3.json":
                continue  # made from s3.example.json, never committed
            held = path in tracked or any(f.startswith(f"{path}/") for f in tracked)
            assert held, f"{name} mounts {source}, which git does not hold"


def test_a_server_is_cloned_from_whichever_one_is_the_primary() -> None:
    k8s = _doc("ConfigMap", "postgres-config")["data"]
    # The primary is found by asking (a promoted pod-1 is one), never assumed to be pod 0,
    # and pod 0 does not skip the check (and initialise a new cluster beside a live peer).
    assert "pg_is_in_recovery()" in k8s["clone-standby.sh"]
    assert "postgres-0" not in k8s["clone-standby.sh"]
    assert "exit 0 ;;" not in k8s["clone-standby.sh"]
    script = (DEPLOY / "postgres" / "clone-standby.sh").read_text()
    assert k8s["clone-standby.sh"] == script
    statefulset = _doc("StatefulSet", "postgres")
    init = pod_spec(statefulset)["initContainers"][0]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["SERVERS"].split() == _postgres_pods()
    assert any(e["name"] == "SELF" and "fieldRef" in e.get("valueFrom", {})
               for e in init["env"])
    # A replication slot lives on one server only: after a promotion the rebuilt standby
    # would ask the new primary for a slot it does not have.
    for text in ((DEPLOY / "postgres" / "primary.conf").read_text(), k8s["postgresql.conf"]):
        assert not any(line.startswith("primary_slot_name") for line in _settings_lines(text))
    for name, service in _ha_compose().items():
        if str(service.get("image", "")).startswith("postgres:"):
            entry = " ".join(service.get("entrypoint") or [])
            assert "/start.sh" in entry or "base-backup.sh" in entry, name


def test_every_healthcheck_of_postgres_asks_over_tcp() -> None:
    # Over the socket pg_isready also answers for the temporary server of the first start.
    checks = [" ".join(s["healthcheck"]["test"]) for s in _ha_compose().values()
              if "healthcheck" in s]
    checks += [" ".join(c["readinessProbe"]["exec"]["command"])
               for _, d in manifests() if d["kind"] in WORKLOADS for c in containers(d)
               if "exec" in c.get("readinessProbe", {})]
    pg = [c for c in checks if "pg_isready" in c]
    assert len(pg) >= 3
    assert all(re.search(r"-h 127\.0\.0\.1\b", c) for c in pg), pg


# --- the object store ----------------------------------------------------------------------


def _service_buckets() -> dict[str, str]:
    env = {e["name"]: e.get("value") for e in containers(_doc("Deployment", "tallenne"))[0]["env"]}
    settings = Settings(s3_bucket=env.get("TALLENNE_S3_BUCKET", "tallenne"))
    return {"audio": settings.s3_bucket, "keys": settings.key_bucket,
            "exports": settings.export_target_bucket, "audit": settings.audit_bucket}


def test_every_bucket_the_service_uses_is_created_and_granted() -> None:
    buckets = _service_buckets()
    weed = (DEPLOY / "seaweedfs" / "buckets.weed").read_text()
    created = dict(re.findall(r"^s3\.bucket\.create -name (\S+)(.*)$", weed, re.MULTILINE))
    identities = json.loads((DEPLOY / "seaweedfs" / "s3.example.json").read_text())
    service = next(i for i in identities["identities"] if i["name"] == "tallenne")
    for use, bucket in buckets.items():
        assert bucket in created, f"buckets.weed does not create the {use} bucket {bucket}"
        assert f"-locationPrefix=/buckets/{bucket}/ -replication=" in weed, bucket
        for action in ("Read", "Write", "List"):
            assert f"{action}:{bucket}" in service["actions"], f"{action}:{bucket}"
    # Checkpoints are locked only where the bucket has Object Lock, and the service sees it
    # only when it may read the bucket's lock configuration.
    assert "-withLock" in created[buckets["audit"]]
    assert f"GetBucketObjectLockConfiguration:{buckets['audit']}" in service["actions"]


def test_no_credential_can_create_or_delete_a_bucket() -> None:
    identities = json.loads((DEPLOY / "seaweedfs" / "s3.example.json").read_text())
    for identity in identities["identities"]:
        for action in identity["actions"]:
            assert action.split(":")[0] not in {"Admin", "DeleteBucket"}, \
                f"{identity['name']}: {action}"
    gateways = [_args(s) for s in compose()["services"].values() if _args(s)[:1] == ["s3"]]
    gateways += [c["args"] for c in containers(_doc("Deployment", "seaweedfs-s3"))]
    assert len(gateways) >= 3
    for args in gateways:
        assert "-allowDeleteBucketNotEmpty=false" in args, args


def _run_buckets_job(command: list[str], config: dict[str, str], tmp_path: Path,
                     weed_says: str, weed_exits: int) -> tuple[int, str]:
    """Run a buckets job's command with its /config files in a scratch directory and a
    stand-in `weed` that prints `weed_says` and records its arguments."""
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    for name, text in config.items():
        (config_dir / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    weed = bin_dir / "weed"
    weed.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/weed-args\ncat > /dev/null\n'
                    f"printf '%s\\n' '{weed_says}'\nexit {weed_exits}\n")
    weed.chmod(0o755)
    argv = [part.replace("/config/", f"{config_dir}/") for part in command]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    args = (tmp_path / "weed-args").read_text() if (tmp_path / "weed-args").exists() else ""
    return result.returncode, args


def _buckets_jobs() -> list[tuple[str, list[str], dict[str, str]]]:
    job = containers(_doc("Job", "seaweedfs-buckets"))[0]
    k8s_config = _doc("ConfigMap", "seaweedfs-config")["data"]
    service = compose()["services"]["seaweedfs-buckets"]
    compose_config = {Path(str(v).split(":")[1]).name: (DEPLOY / str(v).split(":")[0]).read_text()
                      for v in service["volumes"]}
    return [("kubernetes", [*job.get("command", []), *job.get("args", [])], k8s_config),
            ("compose", [str(a) for a in service["entrypoint"]], compose_config)]


@pytest.mark.parametrize("where", ["kubernetes", "compose"])
def test_the_buckets_job_fails_when_weed_shell_reports_an_error(where: str,
                                                                tmp_path: Path) -> None:
    _, command, config = next(j for j in _buckets_jobs() if j[0] == where)
    # weed shell goes on after a failed command and may exit 0 (a misspelt flag does).
    status, args = _run_buckets_job(command, config, tmp_path,
                                    "flag provided but not defined: -replicaton", 0)
    assert status != 0
    assert re.search(r"-filer=\S+", args), "name the filer: s3.bucket.create needs one"
    status, _ = _run_buckets_job(command, config, tmp_path,
                                 "error: need to run \"lock\" first to continue", 1)
    assert status != 0
    # Run again, the buckets exist already: that is no failure.
    status, _ = _run_buckets_job(command, config, tmp_path,
                                 "error: bucket tallenne already exists", 1)
    assert status == 0
    if where == "kubernetes":
        assert config["apply-buckets.sh"] == \
            (DEPLOY / "seaweedfs" / "apply-buckets.sh").read_text()


# --- the service's replicas ----------------------------------------------------------------


def test_replicas_have_a_public_url_and_the_checkpoint_credential() -> None:
    k8s = {e["name"]: e for e in containers(_doc("Deployment", "tallenne"))[0]["env"]}
    replicas = [s["environment"] for s in compose()["services"].values()
                if "build" in s and s.get("command") != ["migrate"]]
    for env in [k8s, *replicas]:
        for name in ("TALLENNE_S3_AUDIT_ACCESS_KEY", "TALLENNE_S3_AUDIT_SECRET_KEY",
                     "TALLENNE_PUBLIC_URL"):
            assert name in env, name
    assert k8s["TALLENNE_PUBLIC_URL"]["value"].startswith("https://")
    assert Settings.model_fields["public_url"].default not in (
        k8s["TALLENNE_PUBLIC_URL"]["value"], *(env["TALLENNE_PUBLIC_URL"] for env in replicas))


def test_the_readiness_probe_waits_longer_than_readyz_itself() -> None:
    from service.ops.views import READY_TIMEOUT_S

    probe = containers(_doc("Deployment", "tallenne"))[0]["readinessProbe"]
    assert probe.get("timeoutSeconds", 1) > READY_TIMEOUT_S


def _quantity(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "": 1}
    found = re.fullmatch(r"([\d.]+)([A-Za-z]*)", str(text))
    assert found is not None, text
    return float(found.group(1)) * units[found.group(2)]


def test_upload_spools_fit_the_tmp_volume_and_the_storage_request() -> None:
    deployment = _doc("Deployment", "tallenne")
    container = containers(deployment)[0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    fields = Settings.model_fields
    in_flight = int(env.get("TALLENNE_MAX_UPLOADS_IN_FLIGHT")
                    or fields["max_uploads_in_flight"].default)
    largest = int(env.get("TALLENNE_MAX_RECORDING_BYTES")
                  or fields["max_recording_bytes"].default)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    assert _quantity(volume["emptyDir"].get("sizeLimit", "0")) >= in_flight * largest, \
        "uploads may fill the node's disk"
    assert _quantity(container["resources"]["requests"].get("ephemeral-storage", "0")) \
        >= in_flight * largest


def test_replica_resources_follow_the_readme_sizing() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "Request 1 core, set no CPU limit" in readme
    assert "Request 256–512 MiB, limit 1 GiB" in readme
    resources = containers(_doc("Deployment", "tallenne"))[0]["resources"]
    assert _quantity(resources["requests"]["cpu"]) >= 1
    assert "cpu" not in resources["limits"]
    assert 256 * 2**20 <= _quantity(resources["requests"]["memory"]) <= 512 * 2**20
    assert _quantity(resources["limits"]["memory"]) == 2**30


def test_kubernetes_takes_backups_nightly_one_at_a_time() -> None:
    cronjob = next((d for _, d in manifests() if d["kind"] == "CronJob"
                    and containers(d)[0]["args"][:1] == ["backup"]), None)
    assert cronjob is not None, "no CronJob runs `tallenne backup`"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    container = containers(cronjob)[0]
    directory = container["args"][1]
    assert "--keep" in container["args"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]
           if "valueFrom" in e}
    secret = _doc("Secret", "tallenne-secrets")["stringData"]
    for name in ("TALLENNE_BACKUP_KEY", "TALLENNE_DATABASE_OWNER_URL", "TALLENNE_DATABASE_URL",
                 "TALLENNE_MASTER_KEY"):
        assert env[name] in secret, name
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in pod_spec(cronjob)["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert any(d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim
               for _, d in manifests())


def test_every_secret_a_workload_reads_has_that_key_in_its_example() -> None:
    secrets = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d["stringData"]
               for _, d in manifests() if d["kind"] == "Secret"}
    for name, doc in manifests():
        if doc["kind"] not in WORKLOADS:
            continue
        for container in containers(doc):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                secret = secrets.get((doc["metadata"].get("namespace"), ref["name"]))
                assert secret is not None and ref["key"] in secret, \
                    f"{name}:{container['name']}: {ref['name']}/{ref['key']}"


# --- the runbook ---------------------------------------------------------------------------


def _runbook() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("### Runbook")[1].split("\n### ")[0]


def test_the_volume_server_runbook_repairs_rather_than_simulates() -> None:
    runbook = _runbook()
    # Without -apply both only print a plan; with it they refuse to run before `lock`.
    assert "volume.fix.replication -apply" in runbook
    assert "volume.balance -apply" in runbook
    lock, fix = runbook.index("`lock`"), runbook.index("volume.fix.replication -apply")
    assert lock < fix < runbook.index("`unlock`")


def test_every_tallenne_command_in_the_runbook_is_complete() -> None:
    for match in re.finditer(r"`tallenne (backup|restore)([^`]*)`", _runbook()):
        assert match.group(2).strip(), f"`tallenne {match.group(1)}` needs its DIR"


def test_the_load_balancer_logs_no_query_string_and_no_client_address() -> None:
    """A replay's URL carries its reason, a search's a telephone number: nginx's default
    access log (`$request`, `$remote_addr`) would keep both, for every request."""
    conf = (DEPLOY / "nginx.conf").read_text()
    formats = dict(re.findall(r"log_format\s+(\S+)\s+((?:'[^']*'\s*)+);", conf))
    logs = re.findall(r"^\s*access_log\s+(\S+)(?:\s+(\S+))?;", conf, re.MULTILINE)
    assert logs, "nginx.conf sets no access_log: the image's default format logs $request"
    for target, name in logs:
        if target == "off":
            continue
        assert name in formats, f"access_log {target} uses a format nginx.conf does not define"
        for leak in ("$request ", "$request'", "$request_uri", "$args", "$query_string",
                     "$remote_addr", "$http_x_forwarded_for", "$arg_"):
            assert leak not in formats[name], (name, leak)
