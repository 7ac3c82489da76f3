"""The Helm chart, linted and rendered by Helm's own Go SDK, every manifest checked against Kubernetes' schemas."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from proxy._version import __version__
from proxy.config.sections import ServerSettings
from proxy.config.settings import ENV_VARS, load_settings
from tests.deploy.helm_chart import (
    ADMIN_KEY,
    CHART,
    DATABASE_PASSWORD,
    DATABASE_URL,
    EVERYTHING_ON,
    KUBE_VERSION,
    NAMESPACE,
    PLACEHOLDER_KEY,
    RELEASE,
    SHARED_DATABASE,
    Rendered,
    chart_copy,
    render,
    walk,
)

DASHBOARD = json.dumps({"title": "Turnout (test)", "panels": [], "schemaVersion": 39})
CRD_KINDS = {"ServiceMonitor"}
"""Kinds that the Prometheus Operator's CRDs define: not in the Kubernetes schemas, checked by hand below."""
CHART_VARIABLES = {"TURNOUT_REDIS_URL", "TURNOUT_KNOWLEDGE_DIR"}
"""Variables the chart sets for the policy file's ${VAR} references, beside Turnout's own settings."""


@pytest.fixture(scope="module")
def defaults() -> Rendered:
    """The chart's defaults, with the one value they lack (keys on two replicas need a shared database)."""
    return render(SHARED_DATABASE)


@pytest.fixture(scope="module")
def one_replica() -> Rendered:
    """The defaults on one replica, which may keep its keys in its own SQLite file."""
    return render({"replicaCount": 1})


@pytest.fixture(scope="module")
def auth_off() -> Rendered:
    return render({"auth": {"mode": "off"}})


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    chart = chart_copy(tmp_path_factory.mktemp("chart"), {"turnout.json": DASHBOARD})
    return render(EVERYTHING_ON, chart)


@pytest.mark.parametrize("values", [{}, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_helm_lint_finds_nothing_worse_than_info(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("which", ["defaults", "everything", "one_replica", "auth_off"])
def test_every_manifest_validates_against_the_kubernetes_schemas(which: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    for obj in rendered.objects:
        if obj["kind"] in CRD_KINDS:
            with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
                kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
            continue
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)  # raises on the first bad field


def test_the_defaults_render_the_core_and_nothing_optional(defaults: Rendered) -> None:
    kinds = sorted(obj["kind"] for obj in defaults.objects if not _is_dashboards(obj))
    assert kinds == ["ConfigMap", "Deployment", "Secret", "Service", "ServiceAccount"]


def _is_dashboards(obj: dict[str, Any]) -> bool:
    name: str = obj["metadata"]["name"]
    return obj["kind"] == "ConfigMap" and name.endswith("-dashboards")


def test_the_charts_own_dashboards_ship_by_default(defaults: Rendered) -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    dashboards = [obj for obj in defaults.objects if _is_dashboards(obj)]
    if not files:  # the dashboard comes with the metrics (issue 6)
        assert dashboards == []
        return
    [configmap] = dashboards
    assert sorted(configmap["data"]) == [path.name for path in files]
    for text in configmap["data"].values():
        assert isinstance(json.loads(text), dict)
    assert len(json.dumps(configmap["data"])) < 1024 * 1024  # a ConfigMap holds at most 1 MiB


def test_everything_on_renders_every_optional_part(everything: Rendered) -> None:
    kinds = sorted(obj["kind"] for obj in everything.objects)
    core = ["ConfigMap", "ConfigMap", "Deployment", "Deployment", "Secret", "Service", "Service", "ServiceAccount"]
    optional = ["HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PersistentVolumeClaim", "Secret"]
    optional += ["Job", "ConfigMap"]  # the knowledge build, and its documents
    assert kinds == sorted(core + optional)


@pytest.mark.parametrize("which", ["defaults", "everything"])
def test_every_object_carries_the_recommended_labels(which: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(which)
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "turnout"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "turnout-0.1.0"
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in rendered.all("Deployment")]
    assert all(pod["app.kubernetes.io/instance"] == RELEASE for pod in pods)


def test_the_pod_runs_as_non_root_on_a_read_only_root_filesystem(everything: Rendered) -> None:
    for deployment in everything.all("Deployment"):  # Turnout and the bundled Redis
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
    pod = everything.deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    tmp = next(m for m in everything.container["volumeMounts"] if m["mountPath"] == "/tmp")  # noqa: S108 - the pod's /tmp
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])


def test_probes_ask_healthz_and_readyz_on_turnouts_port(defaults: Rendered) -> None:
    container = defaults.container
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert defaults.env["TURNOUT_PORT"] == "8000"
    assert defaults.env["TURNOUT_HOST"] == "0.0.0.0"
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


@pytest.mark.parametrize(("drain", "pre_stop"), [(30, 5), (120, 0), (7.5, 10)])
def test_the_grace_period_outlasts_the_pre_stop_sleep_and_the_drain(drain: float, pre_stop: int) -> None:
    rendered = render({**SHARED_DATABASE, "turnout": {"drainTimeout": drain}, "preStopSleepSeconds": pre_stop})
    pod = rendered.deployment["spec"]["template"]["spec"]
    # The server's stop: the requests' drain, then as long again for their background work (`proxy.lifespan`).
    assert pod["terminationGracePeriodSeconds"] > pre_stop + 2 * math.ceil(drain)
    assert float(rendered.env["TURNOUT_DRAIN_TIMEOUT"]) == drain
    pre_stop_command = rendered.container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop_command == ["sleep", str(pre_stop)]


def test_the_chart_sets_only_variables_turnout_reads(everything: Rendered) -> None:
    turnout_vars = {name for name in everything.env if name.startswith("TURNOUT_")}
    assert turnout_vars - CHART_VARIABLES <= set(ENV_VARS)
    assert turnout_vars >= {"TURNOUT_CONFIG", "TURNOUT_DRAIN_TIMEOUT", "TURNOUT_HOST", "TURNOUT_PORT"}


def test_the_policy_is_mounted_as_a_directory_so_that_updates_reach_the_pod(defaults: Rendered) -> None:
    mount = next(m for m in defaults.container["volumeMounts"] if m["name"] == "policy")
    assert "subPath" not in mount  # a subPath mount never sees a ConfigMap update
    assert defaults.env["TURNOUT_CONFIG"] == f"{mount['mountPath']}/policy.yaml"
    volume = next(v for v in defaults.deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "policy")
    assert volume["configMap"]["name"] == defaults.one("ConfigMap", "proxy")["metadata"]["name"]


def test_the_shipped_policy_passes_turnout_check(defaults: Rendered, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(defaults.policy_file, encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": PLACEHOLDER_KEY}
    result = subprocess.run(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "proxy", "check", str(policy)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK (1 upstreams, 2 routes, 3 rules)" in result.stdout
    # The pod's own environment (as rendered) loads the same file into the same settings.
    pod_env = {name: value for name, value in defaults.env.items() if isinstance(value, str)}
    settings = load_settings({**pod_env, "TURNOUT_CONFIG": str(policy), "OPENAI_API_KEY": PLACEHOLDER_KEY})
    assert settings.server.host == "0.0.0.0"
    assert settings.server.drain_timeout == 30
    assert settings.server == ServerSettings(host="0.0.0.0", port=8000)  # the connection limits are Turnout's own
    assert settings.deployment.policy is not None


def test_the_connection_limits_reach_turnout() -> None:
    values = {"maxConnections": 500, "idleTimeout": 120, "headerTimeout": 5, "bodyTimeout": 2.5}
    env = render({**SHARED_DATABASE, "turnout": values}).env
    settings = load_settings(
        {
            name: value
            for name, value in env.items()
            if name in ENV_VARS and name != "TURNOUT_CONFIG" and isinstance(value, str)  # not a Secret's reference
        }
    )
    server = settings.server
    assert (server.max_connections, server.idle_timeout, server.header_timeout, server.body_timeout) == (
        500,
        120.0,
        5.0,
        2.5,
    )


def test_the_checksum_annotation_follows_the_policy_and_nothing_else() -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = render(values).deployment["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/policy"]
        return value

    first = checksum(SHARED_DATABASE)
    assert len(first) == 64
    assert checksum(SHARED_DATABASE) == first
    assert checksum({**SHARED_DATABASE, "replicaCount": 5}) == first
    assert checksum({"auth": {"mode": "off"}}) == first
    changed = render(SHARED_DATABASE).policy_file.replace("gt: 2500", "gt: 3000")
    assert checksum({**SHARED_DATABASE, "policy": {"file": changed}}) != first


def test_the_upstream_keys_come_from_the_charts_secret(everything: Rendered) -> None:
    secret = everything.named("Secret", f"{RELEASE}-turnout-upstream-keys")
    assert base64.b64decode(secret["data"]["OPENAI_API_KEY"]).decode() == PLACEHOLDER_KEY
    assert everything.container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    annotations = everything.deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/upstream-keys" in annotations
    others = [obj for obj in everything.objects if obj["kind"] != "Secret"]
    assert not any(PLACEHOLDER_KEY in str(value) for value in walk(others)), "the key leaked outside the Secret"


def test_an_empty_key_is_left_out_so_that_turnout_names_it_at_startup(defaults: Rendered) -> None:
    assert defaults.one("Secret").get("data") in (None, {})
    assert "OPENAI_API_KEY" in defaults.notes
    assert "will not start" in defaults.notes


def test_an_existing_secret_replaces_the_charts_own() -> None:
    rendered = render(
        {**SHARED_DATABASE, "upstreamKeys": {"existingSecret": "openai-keys"}, "redis": {"existingSecret": "redis-url"}}
    )
    assert rendered.all("Secret") == []
    assert rendered.container["envFrom"] == [{"secretRef": {"name": "openai-keys"}}]
    assert rendered.env["TURNOUT_REDIS_URL"] == {"secretKeyRef": {"name": "redis-url", "key": "url"}}
    assert "checksum/upstream-keys" not in rendered.deployment["spec"]["template"]["metadata"]["annotations"]


def test_the_bundled_redis_is_its_own_workload_behind_its_own_service(everything: Rendered) -> None:
    redis = everything.one("Deployment", "redis")
    service = everything.one("Service", "redis")
    assert redis["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:7-alpine"
    assert everything.env["TURNOUT_REDIS_URL"] == f"redis://{service['metadata']['name']}:6379/0"
    redis_pod = redis["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= redis_pod.items()
    proxy_selector = everything.one("Service", "proxy")["spec"]["selector"]
    assert not proxy_selector.items() <= redis_pod.items(), "Turnout's Service would send traffic to Redis"


def test_an_external_redis_url_wins_over_the_bundled_one() -> None:
    url = "redis://redis.cache.svc:6379/3"
    rendered = render({**SHARED_DATABASE, "redis": {"url": url, "bundled": {"enabled": True}}})
    assert rendered.env["TURNOUT_REDIS_URL"] == url
    assert len(rendered.all("Deployment")) == 1
    assert "Redis" not in rendered.notes
    assert "TURNOUT_REDIS_URL" not in render(SHARED_DATABASE).env
    assert "No Redis is set" in render(SHARED_DATABASE).notes


def test_selectors_find_turnouts_pods(everything: Rendered) -> None:
    pod_labels = everything.deployment["spec"]["template"]["metadata"]["labels"]
    selector = everything.deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert everything.one("Service", "proxy")["spec"]["selector"] == selector
    assert everything.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert everything.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    target = everything.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": everything.deployment["metadata"]["name"]}
    assert "replicas" not in everything.deployment["spec"]  # the autoscaler owns the count


def test_the_service_monitor_scrapes_metrics_on_the_services_port(everything: Rendered) -> None:
    monitor = everything.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = everything.one("Service", "proxy")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_every_dashboard_file_ships_in_a_configmap_with_the_sidecars_label(tmp_path: Path) -> None:
    chart = chart_copy(tmp_path, {"turnout.json": DASHBOARD, "cache.json": "{}", "notes.txt": "not a dashboard"})
    dashboards = [c for c in render(SHARED_DATABASE, chart).objects if _is_dashboards(c)]
    [dashboards_map] = dashboards
    assert dashboards_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards_map["data"] == {"turnout.json": DASHBOARD, "cache.json": "{}"}
    relabelled = render(
        {**SHARED_DATABASE, "dashboards": {"label": "grafana-dashboard", "labelValue": "turnout"}}, chart
    )
    [other] = [c for c in relabelled.objects if _is_dashboards(c)]
    assert other["metadata"]["labels"]["grafana-dashboard"] == "turnout"
    assert "grafana_dashboard" not in other["metadata"]["labels"]
    switched_off = render({**SHARED_DATABASE, "dashboards": {"enabled": False}}, chart)
    assert not [c for c in switched_off.objects if _is_dashboards(c)]


def test_the_knowledge_index_is_a_read_only_volume(everything: Rendered) -> None:
    claim = everything.one("PersistentVolumeClaim")
    mount = next(m for m in everything.container["volumeMounts"] if m["name"] == "knowledge")
    assert mount["readOnly"] is True
    assert everything.env["TURNOUT_KNOWLEDGE_DIR"] == mount["mountPath"] == "/var/lib/turnout/knowledge"
    volume = next(v for v in everything.deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "knowledge")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    existing = render({**SHARED_DATABASE, "knowledge": {"enabled": True, "existingClaim": "docs-index"}})
    assert existing.all("PersistentVolumeClaim") == []
    volumes = existing.deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "knowledge", "persistentVolumeClaim": {"claimName": "docs-index", "readOnly": True}} in volumes


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"turnout": {"port": 0}}, "/turnout/port"),
        ({"turnout": {"logLevel": "loud"}}, "/turnout/logLevel"),
        ({"turnout": {"drainTimeout": -1}}, "/turnout/drainTimeout"),
        ({"redis": {"url": "http://redis:6379"}}, "/redis/url"),
        ({"replicas": 3}, "replicas"),
        ({"autoscaling": {"enabled": "yes"}}, "/autoscaling/enabled"),
        ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
        ({"upstreamKeys": {"values": {"OPENAI-API-KEY": "x"}}}, "OPENAI-API-KEY"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"policy": {"file": ""}}, "/policy/file"),
        ({"auth": {"mode": "on"}}, "/auth/mode"),
        ({"auth": {"adminKey": {"key": "x"}}}, "key"),
        ({"auth": {"adminKey": {"existingSecret": "Admin_Keys"}}}, "/auth/adminKey/existingSecret"),
        ({"database": {"url": "mysql://db/turnout"}}, "/database/url"),
        ({"database": {"existingSecretKey": ""}}, "/database/existingSecretKey"),
    ],
)
def test_the_values_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=complaint):
        chart.render(values, name=RELEASE)


def test_notes_tell_how_to_call_it(everything: Rendered) -> None:
    assert f"http://{RELEASE}-turnout.{NAMESPACE}.svc:80/v1" in everything.notes
    assert "port-forward service/shop-turnout" in everything.notes
    assert 'base_url="http://127.0.0.1:8000/v1"' in everything.notes
    assert "will not start" not in everything.notes  # the key was given
    assert "The bundled Redis (shop-turnout-redis)" in everything.notes


def test_the_charts_app_version_is_turnouts_version() -> None:
    with helm.Chart.load(CHART) as chart:
        assert chart.metadata["appVersion"] == __version__  # the default image tag


def test_a_redis_the_chart_gives_the_pods_becomes_the_policys_cache(everything: Rendered, defaults: Rendered) -> None:
    assert "cache:" not in defaults.policy_file  # no Redis: each pod caches in memory
    assert everything.policy_file.endswith('cache: {url: "${TURNOUT_REDIS_URL}"}\n')
    pod_env = {name: value for name, value in everything.env.items() if isinstance(value, str)}
    with tempfile.TemporaryDirectory() as folder:
        policy = Path(folder) / "policy.yaml"
        policy.write_text(everything.policy_file, encoding="utf-8")
        settings = load_settings({**pod_env, "TURNOUT_CONFIG": str(policy), "OPENAI_API_KEY": PLACEHOLDER_KEY})
    cache = settings.deployment.cache
    assert cache.uses_redis
    assert cache.url == everything.env["TURNOUT_REDIS_URL"]


def test_a_policy_with_its_own_cache_block_keeps_it() -> None:
    own = "upstreams:\n  openai: {api_key: x}\ncache: {ttl: 60}\n"
    rendered = render({**SHARED_DATABASE, "policy": {"file": own}, "redis": {"bundled": {"enabled": True}}})
    assert rendered.policy_file == own


def test_keys_are_on_by_default(defaults: Rendered, one_replica: Rendered) -> None:
    assert defaults.env["TURNOUT_AUTH"] == one_replica.env["TURNOUT_AUTH"] == "keys"
    assert "TURNOUT_ADMIN_KEY" not in defaults.env  # no admin key given: the admin API stays off
    assert "admin HTTP API, /admin/keys and /admin/usage, is off" in defaults.notes
    assert "WARNING: auth.mode is off" not in defaults.notes


def test_the_admin_key_and_the_database_url_come_from_the_charts_secret(everything: Rendered) -> None:
    secret = everything.named("Secret", f"{RELEASE}-turnout-auth")
    decoded = {name: base64.b64decode(value).decode() for name, value in secret["data"].items()}
    assert decoded == {"admin-key": ADMIN_KEY, "database-url": DATABASE_URL}
    env = everything.env
    assert env["TURNOUT_ADMIN_KEY"] == {"secretKeyRef": {"name": f"{RELEASE}-turnout-auth", "key": "admin-key"}}
    assert env["TURNOUT_DATABASE_URL"] == {"secretKeyRef": {"name": f"{RELEASE}-turnout-auth", "key": "database-url"}}
    assert "TURNOUT_DATA_DIR" not in env
    assert "data" not in everything.volumes  # the keys live in PostgreSQL, not in the pod
    annotations = everything.deployment["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/auth"]) == 64  # a new admin key or URL rolls the pods
    others = [obj for obj in everything.objects if obj["kind"] != "Secret"]
    for secret_text in (ADMIN_KEY, DATABASE_PASSWORD):
        assert not any(secret_text in str(value) for value in walk(others)), "a secret leaked outside the Secret"
    assert f"get secret {RELEASE}-turnout-auth -o jsonpath='{{.data.admin-key}}'" in everything.notes


def test_the_charts_secret_holds_only_what_was_given() -> None:
    only_url = render({"database": {"url": DATABASE_URL}, "auth": {"adminKey": {"existingSecret": "turnout-admin"}}})
    assert sorted(only_url.named("Secret", f"{RELEASE}-turnout-auth")["data"]) == ["database-url"]
    assert only_url.env["TURNOUT_ADMIN_KEY"] == {"secretKeyRef": {"name": "turnout-admin", "key": "admin-key"}}
    only_admin = render({**SHARED_DATABASE, "replicaCount": 1, "auth": {"adminKey": {"value": ADMIN_KEY}}})
    assert sorted(only_admin.named("Secret", f"{RELEASE}-turnout-auth")["data"]) == ["admin-key"]
    empty = render({"auth": {"adminKey": {"value": ""}}, "database": {"existingSecret": "turnout-db", "url": ""}})
    assert [obj["metadata"]["name"] for obj in empty.all("Secret")] == [f"{RELEASE}-turnout-upstream-keys"]
    assert "checksum/auth" not in empty.deployment["spec"]["template"]["metadata"]["annotations"]


def test_existing_secrets_give_the_admin_key_and_the_database_url() -> None:
    rendered = render(
        {
            "upstreamKeys": {"existingSecret": "openai-keys"},
            "auth": {"adminKey": {"existingSecret": "turnout-admin", "existingSecretKey": "token"}},
            "database": {"existingSecret": "turnout-db", "existingSecretKey": "dsn", "url": DATABASE_URL},
        }
    )
    assert rendered.all("Secret") == []  # a named Secret wins over a value, which is then not written anywhere
    assert rendered.env["TURNOUT_ADMIN_KEY"] == {"secretKeyRef": {"name": "turnout-admin", "key": "token"}}
    assert rendered.env["TURNOUT_DATABASE_URL"] == {"secretKeyRef": {"name": "turnout-db", "key": "dsn"}}
    assert not any(DATABASE_PASSWORD in str(value) for value in walk(rendered.objects))
    assert "get secret turnout-admin -o jsonpath='{.data.token}'" in rendered.notes
    for obj in rendered.objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize(
    ("values", "pods"),
    [
        ({}, "the 2 replicas (replicaCount)"),
        ({"replicaCount": 3, "database": {"url": ""}}, "the 3 replicas (replicaCount)"),
        ({"replicaCount": 1, "autoscaling": {"enabled": True}}, "the up to 10 replicas (autoscaling.maxReplicas)"),
    ],
    ids=["defaults", "three", "autoscaling"],
)
def test_keys_without_a_database_on_several_replicas_refuse_to_render(values: dict[str, Any], pods: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    message = str(refused.value)
    assert f"auth.mode is keys and no database is set: {pods} would each keep their keys" in message
    for remedy in ("database.existingSecret", "database.url", "replicaCount=1", "auth.mode=off"):
        assert remedy in message


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 1},
        {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}},
        {"replicaCount": 3, "database": {"existingSecret": "turnout-db"}},
        {"autoscaling": {"enabled": True}, "database": {"url": DATABASE_URL}},
        {"replicaCount": 3, "auth": {"mode": "off"}},
    ],
    ids=["one-replica", "autoscaling-to-one", "database-secret", "database-url", "auth-off"],
)
def test_one_replica_a_database_or_auth_off_render(values: dict[str, Any]) -> None:
    assert render(values).deployment["metadata"]["name"] == f"{RELEASE}-turnout"


def test_one_replica_without_a_database_keeps_sqlite_in_an_empty_dir(one_replica: Rendered) -> None:
    assert "TURNOUT_DATABASE_URL" not in one_replica.env
    data_dir = one_replica.env["TURNOUT_DATA_DIR"]
    mount = next(m for m in one_replica.container["volumeMounts"] if m["mountPath"] == data_dir)
    assert mount.get("readOnly") is not True  # the root filesystem is read-only; this is where turnout.db goes
    assert "emptyDir" in one_replica.volumes[mount["name"]]
    assert "WARNING: no database is set" in one_replica.notes
    assert "lost when the pod is replaced" in one_replica.notes


def test_auth_off_renders_without_a_database_and_warns(auth_off: Rendered) -> None:
    assert auth_off.env["TURNOUT_AUTH"] == "off"
    assert auth_off.deployment["spec"]["replicas"] == 2
    assert "TURNOUT_DATABASE_URL" not in auth_off.env
    assert "TURNOUT_ADMIN_KEY" not in auth_off.env
    assert auth_off.all("Secret") == [auth_off.named("Secret", f"{RELEASE}-turnout-upstream-keys")]
    assert "WARNING: auth.mode is off: anyone who can reach the Service is let in" in auth_off.notes
    assert "turnout keys create" not in auth_off.notes
    assert 'api_key="anything"' in auth_off.notes


def test_a_bare_off_in_a_values_file_is_off_too() -> None:
    values = helm.values_from_yaml("auth:\n  mode: off\n")
    assert values == {"auth": {"mode": False}}  # YAML 1.1, as Helm reads a values file
    assert render(values).env["TURNOUT_AUTH"] == "off"


def test_notes_tell_how_to_create_the_first_key(everything: Rendered, defaults: Rendered) -> None:
    create = f"kubectl --namespace {NAMESPACE} exec deploy/{RELEASE}-turnout -- turnout keys create first-team"
    assert create in defaults.notes
    assert create in everything.notes
    assert everything.deployment["metadata"]["name"] == f"{RELEASE}-turnout"  # what `deploy/...` names
    pod_annotations = everything.deployment["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["kubectl.kubernetes.io/default-container"] == everything.container["name"]
    assert "TURNOUT_DATABASE_URL" in everything.env  # `turnout keys create` in the pod reads it like the server
    assert "Authorization: Bearer $ADMIN_KEY" in everything.notes
    assert "http://127.0.0.1:8000/admin/keys" in everything.notes
    assert 'api_key="tk-..."' in everything.notes
    assert "/admin/keys" not in defaults.notes.replace("/admin/keys and /admin/usage, is off", "")
