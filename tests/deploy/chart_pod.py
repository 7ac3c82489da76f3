"""The chart's pod for podman: Turnout's container as Helm's SDK renders the chart, read into `podman run` flags.

`tests/deploy/image.py` runs the built image with these, so the container is restricted as a cluster would restrict
it (user and group, read-only root file system, capabilities, no privilege escalation), with the chart's env, its
Secret, its ConfigMap mounted where the chart mounts it and its emptyDir as a tmpfs. What the chart asks that podman
cannot stand in for here (a PersistentVolumeClaim, an env var from a secretKeyRef) is a ChartError, not skipped.
Left to podman's own defaults: the seccompProfile (RuntimeDefault is podman's default profile) and fsGroup (the
mounted ConfigMap is readable by everyone, as the kubelet's is).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.helm_chart import Rendered, render

OPENAI = "https://api.openai.com/v1"
"""The upstream the chart's default policy names, replaced by the one the pod can reach."""


class ChartError(Exception):
    """The chart asks for something this translation does not know."""


@dataclass(frozen=True)
class ChartPod:
    """Turnout's container as the chart renders it (Helm's SDK, tests/deploy/helm_chart.py), as podman flags."""

    security: list[str]
    """The pod's and the container's securityContext: user and group, read-only root, capabilities, privileges."""
    tmp: list[str]
    """The emptyDir volumes, as tmpfs mounts of their size limit."""
    env: list[str]
    """The env entries and the Secret's keys (envFrom)."""
    volumes: list[str]
    """The ConfigMap volumes, as read-only bind mounts."""
    args: list[str]
    port: int
    probes: dict[str, str]


def chart_pod(work: Path, *, upstream_key: str, upstream: str) -> ChartPod:
    """The chart's Deployment, ConfigMap and Secret read into flags; anything this does not know is a ChartError.

    Rendered with the chart's defaults and `upstream_key` as its upstream keys Secret. The ConfigMap's policy (the
    chart's default) is written into `work` with its upstream aimed at `upstream` (OpenAI's base URL replaced),
    and mounted where the chart mounts it; the emptyDir becomes a tmpfs of its size limit.
    """
    rendered = render({"upstreamKeys": {"values": {"OPENAI_API_KEY": upstream_key}}})
    spec = rendered.deployment["spec"]["template"]["spec"]
    container = rendered.container
    pod, own = spec["securityContext"], container["securityContext"]
    if pod.get("runAsNonRoot") is not True or not pod.get("runAsUser"):
        raise ChartError(f"the chart's pod securityContext runs as root: {pod}")
    security = ["--user", f"{pod['runAsUser']}:{pod['runAsGroup']}"]
    if own.get("readOnlyRootFilesystem"):
        security += ["--read-only", "--read-only-tmpfs=false"]
    if own.get("allowPrivilegeEscalation") is False:
        security += ["--security-opt", "no-new-privileges"]
    security += [arg for cap in own.get("capabilities", {}).get("drop", []) for arg in ("--cap-drop", cap.lower())]
    env: list[str] = []
    for entry in container["env"]:
        if "value" not in entry:
            raise ChartError(f"the chart's env {entry['name']} is not a plain value: {entry}")
        env += ["--env", f"{entry['name']}={entry['value']}"]
    secrets = {secret["metadata"]["name"]: secret["data"] for secret in rendered.all("Secret")}
    for source in container.get("envFrom", []):
        for name, value in secrets[source["secretRef"]["name"]].items():
            env += ["--env", f"{name}={base64.b64decode(value).decode()}"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    tmp: list[str] = []
    mounts: list[str] = []
    for mount in container["volumeMounts"]:
        volume, path = volumes[mount["name"]], mount["mountPath"]
        if "configMap" in volume:
            mounts += ["--volume", f"{config_map(rendered, volume['configMap']['name'], work, upstream)}:{path}:ro"]
        elif "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit", "64Mi").removesuffix("i").lower()
            tmp += ["--tmpfs", f"{path}:rw,size={size},mode=1777"]
        else:
            raise ChartError(f"the chart mounts a volume this run cannot stand in for: {volume}")
    probes = {name: container[name]["httpGet"]["path"] for name in ("livenessProbe", "readinessProbe")}
    [port] = [port["containerPort"] for port in container["ports"] if port["name"] == "http"]
    return ChartPod(security, tmp, env, mounts, args=container["args"], port=port, probes=probes)


def config_map(rendered: Rendered, name: str, work: Path, upstream: str) -> Path:
    """The ConfigMap's files in a directory (its policy aimed at `upstream`), readable by all."""
    [data] = [obj["data"] for obj in rendered.all("ConfigMap") if obj["metadata"]["name"] == name]
    directory = work / name
    directory.mkdir(mode=0o755)
    for file, text in data.items():
        aimed = text.replace(OPENAI, upstream)
        if file == "policy.yaml" and aimed == text:
            raise ChartError(f"the chart's policy no longer names {OPENAI}: aim it at {upstream} another way")
        (directory / file).write_text(aimed, encoding="utf-8")
        (directory / file).chmod(0o644)
    return directory
