"""Render the Helm chart offline with Helm's own Go SDK (helm-python-sdk) and pick objects out of the result."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "turnout"
KUBE_VERSION = "1.31.0"
"""The Kubernetes version the manifests are validated against (kubernetes-validate's schemas, offline)."""
RELEASE = "shop"
NAMESPACE = "ai"
PLACEHOLDER_KEY = "sk-chart-test-key-0123456789"
ADMIN_KEY = "chart-test-admin-key-0123456789"
DATABASE_PASSWORD = "chart-test-db-password-0123456789"  # noqa: S105 - a test value
DATABASE_URL = f"postgresql://turnout:{DATABASE_PASSWORD}@postgres.db.svc:5432/turnout"

SHARED_DATABASE: dict[str, Any] = {"database": {"existingSecret": "turnout-database"}}
"""The one value the defaults lack: with keys on (the default) and two replicas, a database they share."""

EVERYTHING_ON: dict[str, Any] = {
    "upstreamKeys": {"values": {"OPENAI_API_KEY": PLACEHOLDER_KEY}},
    "auth": {"adminKey": {"value": ADMIN_KEY}},
    "database": {"url": DATABASE_URL},
    "redis": {"bundled": {"enabled": True}},
    "knowledge": {
        "enabled": True,
        "build": {"enabled": True, "documents": {"refunds.md": "# Refunds\\n\\nIn 30 days.\\n"}},
    },
    "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
    "podDisruptionBudget": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Turnout"}},
    "podAnnotations": {"example.com/team": "ml"},
}
"""Values that switch every optional part of the chart on."""


@dataclass(frozen=True)
class Rendered:
    """A chart rendered with some values: its manifests as objects, and NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of `kind`."""
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        """The only object of `kind` (and of `component`, when given)."""
        found = [
            obj
            for obj in self.all(kind)
            if component is None or obj["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} ({component}), found {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        """The object of `kind` called `name`."""
        [found] = [obj for obj in self.all(kind) if obj["metadata"]["name"] == name]
        return found

    @property
    def deployment(self) -> dict[str, Any]:
        """Turnout's own Deployment (not the bundled Redis)."""
        return self.one("Deployment", "proxy")

    @property
    def container(self) -> dict[str, Any]:
        """Turnout's container."""
        containers: list[dict[str, Any]] = self.deployment["spec"]["template"]["spec"]["containers"]
        return next(c for c in containers if c["name"] == "turnout")

    @property
    def env(self) -> dict[str, Any]:
        """The container's env entries by name (a value or a valueFrom)."""
        return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in self.container["env"]}

    @property
    def volumes(self) -> dict[str, dict[str, Any]]:
        """The pod's volumes by name."""
        return {volume["name"]: volume for volume in self.deployment["spec"]["template"]["spec"]["volumes"]}

    @property
    def policy_file(self) -> str:
        """The policy file the ConfigMap carries."""
        policy: str = self.one("ConfigMap", "proxy")["data"]["policy.yaml"]
        return policy


def render(values: Mapping[str, Any] | None = None, chart: Path = CHART) -> Rendered:
    """Render `chart` as `helm template` would, for release `RELEASE` in `NAMESPACE`."""
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(dict(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = [
        obj
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for obj in yaml.safe_load_all(text)
        if obj
    ]
    notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
    return Rendered(objects=objects, notes=notes)


def chart_copy(destination: Path, dashboards: Mapping[str, str]) -> Path:
    """A copy of the chart with `dashboards` (file name → JSON text) in its dashboards/ folder."""
    copy = destination / "turnout"
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("dashboards"))
    (copy / "dashboards").mkdir()
    for name, text in dashboards.items():
        (copy / "dashboards" / name).write_text(text, encoding="utf-8")
    return copy


def walk(value: Any) -> Iterator[Any]:
    """Every value nested anywhere in `value` (mappings and lists included)."""
    yield value
    if isinstance(value, Mapping):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)
