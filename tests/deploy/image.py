"""Build the Dockerfile for real with Debian's podman, on a base made by debootstrap, and run it as the chart does.

No container registry answers on this machine (docker.io, quay.io: not even DNS), so `python:3.11-slim-bookworm`
cannot be pulled. What stands in for it: Debian bookworm (the Debian of that image, whose `python3` is 3.11) made by
`debootstrap --variant=minbase` with `python3` and `python3-venv`, trimmed of apt lists, docs and locales, and
imported with `podman import`. The Dockerfile's `ARG PYTHON_IMAGE` names it; pip in the build installs from PyPI.

The image then runs twice, each container restricted as the chart's securityContext says (rendered with Helm's SDK:
user 10001:10001, read-only root file system, every capability dropped, no privilege escalation):
- as `docker run IMAGE`: no key, no policy, the built-in simulated upstream (README, "Deploy");
- as the chart's pod: its env, its Secret, its ConfigMap's policy mounted read-only at /etc/turnout (the upstream
  aimed at `turnout simulate`, run from the same image in the pod's network namespace), its emptyDir as a tmpfs.
Each answers the chart's probes (`/healthz`, `/readyz`), a chat completion asked with the openai SDK from this
host and the image's HEALTHCHECK, refuses a write to its root, and exits 0 on SIGTERM.

Run: `make image` (or `.venv/bin/python -m tests.deploy.image`); `tests/deploy/test_image.py` runs the same.
Idempotent: the debootstrap base is cached as a tarball under ~/.cache/turnout/image/ (keyed by suite, mirror and
packages), imported once; podman's layer cache makes an unchanged rebuild take seconds, and the images a changed
build supersedes are removed.

Two things this machine needs that a plain Debian host does not (both harmless there):
- runc, not crun: crun refuses the hybrid cgroup v1/v2 layout here ("cgroups in hybrid mode not supported");
- explicit `--ulimit`s: podman's defaults as root (1,048,576 open files, 4,194,304 processes) are over what this
  sandbox lets a process set, so the container would not start.
And the build sees this host's CA bundle (a pip.conf and the bundle mounted for the build only, in no layer):
PyPI is reached here through a proxy whose certificate Debian's bundle does not know.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

from tests.deploy.chart_pod import ChartError, ChartPod, chart_pod

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
"""The Debian of python:3.11-slim-bookworm; its python3 is the 3.11 the Dockerfile's default base has."""
MIRROR = os.environ.get("TURNOUT_IMAGE_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "python3-venv", "ca-certificates")
TRIM = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info")
"""Emptied in the base, as the slim images are: apt's caches and lists, documentation, translations."""
TOOLS = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
"""Each command this needs, and the Debian package it comes in."""
IMAGE = "localhost/turnout:dev"
BUILD_STAGE = "localhost/turnout:dev-build"
CLIENT_KEY = "sk-image-client-key-0123456789"
UPSTREAM_KEY = "sk-image-upstream-key-0123456789"
"""The chart's upstream keys Secret, for the policy's ${OPENAI_API_KEY}; the simulator takes any key."""
SIMULATOR_PORT = 8001
"""Where `turnout simulate` listens in the pod, on its loopback: the chart's policy is aimed there."""
START_TIMEOUT = 60.0


class ImageError(Exception):
    """A step failed; the message says which and what it printed."""


@dataclass
class Answers:
    """What one running container answered."""

    healthz: object
    readyz: object
    model: str
    content: str
    uid: str
    write_refused: str
    healthcheck: int
    exit_code: int


@dataclass
class Report:
    """The whole run: the images, their sizes, each step's wall time, and both runs' answers."""

    base: str
    base_bytes: int
    image: str
    image_bytes: int
    installed: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    runs: dict[str, Answers] = field(default_factory=dict)


def cache_dir() -> Path:
    """~/.cache/turnout/image (or under $XDG_CACHE_HOME)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "turnout" / "image"


def run(*args: str, timeout: float = 1800.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command to its end, its output captured; ImageError with that output when it fails and `check`."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if check and result.returncode != 0:
        raise ImageError(f"`{' '.join(args)}` exited with {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def ensure_tools() -> list[str]:
    """Install podman, runc and debootstrap from Debian when missing (as root); the packages installed."""
    missing = sorted({package for command, package in TOOLS.items() if shutil.which(command) is None})
    if not missing:
        return []
    how = f"apt-get install -y --no-install-recommends {' '.join(missing)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ImageError(f"{', '.join(missing)} missing and this is not root on Debian: install them ({how})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=600"]  # another apt run on this machine holds the lock for a while
    for command in (["apt-get", *wait, "update", "-qq"], ["apt-get", *wait, *how.split()[1:]]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)  # noqa: S603
        if result.returncode != 0:
            raise ImageError(f"could not install {', '.join(missing)}: `{' '.join(command)}` failed:\n{result.stderr}")
    return missing


def base_tarball() -> Path:
    """The debootstrap base as a tarball, made once (about a minute) and cached."""
    key = hashlib.sha256(json.dumps([SUITE, MIRROR, PACKAGES, TRIM]).encode()).hexdigest()[:12]
    tarball = cache_dir() / f"debian-{SUITE}-python3-{key}.tar"
    if tarball.exists():
        return tarball
    if os.geteuid() != 0:
        raise ImageError(f"debootstrap needs root, and no base is cached at {tarball}")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="debootstrap-") as work:
        rootfs = Path(work) / "rootfs"
        include = ",".join(PACKAGES)
        run("debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(rootfs), MIRROR, timeout=1800)
        for trimmed in TRIM:
            for entry in (rootfs / trimmed).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        partial = Path(work) / "base.tar"
        run("tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), ".")
        partial.replace(tarball)  # whole or absent: an interrupted run leaves no half tarball behind
    return tarball


def import_base(tarball: Path) -> str:
    """The base as a podman image named after the tarball, imported unless it is already there."""
    name = f"localhost/turnout-base:{tarball.stem}"
    if run("podman", "image", "exists", name, check=False).returncode != 0:
        run("podman", "import", "--change", 'CMD ["python3"]', str(tarball), name)
    return name


def runtime_flags() -> list[str]:
    """runc and ulimits this sandbox accepts (module docstring); the open-file limit is the one this process has."""
    _, files = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = 1_048_576 if files == resource.RLIM_INFINITY else min(files, 1_048_576)
    return ["--runtime", "runc", "--ulimit", f"nofile={files}:{files}", "--ulimit", "nproc=4096:4096"]


def build(base: str, work: Path) -> str:
    """`podman build` of the Dockerfile on `base`, in Docker format (OCI has no HEALTHCHECK).

    The build stage is tagged too (`--target build` first, from the same cache), so that the images a rebuild
    supersedes can be removed by their ids: without it each changed build would leave about 0.7 GB behind.
    """
    mounts: list[str] = []
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        pip_conf = work / "pip.conf"
        pip_conf.write_text(f"[global]\ncert = {bundle}\n", encoding="utf-8")
        mounts = ["--volume", f"{bundle}:{bundle}:ro", "--volume", f"{pip_conf}:/etc/pip.conf:ro"]
    before = {tag: image_id(tag) for tag in (BUILD_STAGE, IMAGE)}
    for target, tag in (["--target", "build"], BUILD_STAGE), ([], IMAGE):
        run(
            "podman", "build", *runtime_flags(), "--format", "docker", "--network", "host", *mounts, *target,
            "--build-arg", f"PYTHON_IMAGE={base}", "--tag", tag, "--file", str(ROOT / "Dockerfile"), str(ROOT),
        )  # fmt: skip
    for tag, old in before.items():
        if old and old != image_id(tag):
            run("podman", "rmi", old, check=False)  # and its untagged parents; kept if a container still uses it
    return IMAGE


def image_id(name: str) -> str:
    """The id `name` points at, empty when there is no such image."""
    return run("podman", "image", "inspect", "--format", "{{.Id}}", name, check=False).stdout.strip()


def image_bytes(name: str) -> int:
    """The image's size as `podman images` shows it: every layer, uncompressed."""
    size: int = json.loads(run("podman", "image", "inspect", name).stdout)[0]["Size"]
    return size


def running() -> list[str]:
    """`podman run` flags of every container here: detached, with the runtime and limits this sandbox accepts."""
    return [*runtime_flags(), "--detach"]


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def containers() -> Iterator[list[str]]:
    """Names of the containers started in the block, removed afterwards (last first: a pod's owner goes last)."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in reversed(names):
            run("podman", "rm", "--force", "--time", "5", name, check=False)


def start(names: list[str], name: str, flags: Sequence[str], image: str, *args: str) -> str:
    """`podman run` one container under a unique name, recorded in `names` for removal."""
    unique = f"turnout-image-{name}-{os.getpid()}"
    run("podman", "rm", "--force", unique, check=False)
    names.append(unique)
    run("podman", "run", "--name", unique, *flags, image, *args)
    return unique


def wait_healthy(container: str, origin: str, path: str) -> None:
    """Poll `path` until it answers 200; ImageError with the container's log when it exits or never does."""
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{origin}{path}").status_code == 200:
                    return
            state = run("podman", "inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
            if state not in ("running", "created", "configured"):
                break
            time.sleep(0.2)
    log = run("podman", "logs", container, check=False)
    raise ImageError(f"{container} did not answer {path} at {origin}:\n{log.stdout}{log.stderr}")


def ask(container: str, port: int, model: str, probes: dict[str, str]) -> Answers:
    """The chart's probes, one chat completion with the SDK, the container's own view, and a graceful stop."""
    origin = f"http://127.0.0.1:{port}"
    liveness, readiness = probes["livenessProbe"], probes["readinessProbe"]
    wait_healthy(container, origin, liveness)
    with httpx.Client(base_url=origin, timeout=10.0) as http:
        healthz, readyz = http.get(liveness), http.get(readiness)
    if (healthz.status_code, readyz.status_code) != (200, 200):
        raise ImageError(f"{container}: {liveness} {healthz.status_code} {healthz.text}, {readiness} {readyz.text}")
    sdk = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{origin}/v1", max_retries=0, timeout=30.0)
    completion = sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "Where is my order?"}])
    probe = "open('/opt/turnout/probe', 'w')"
    write = run("podman", "exec", container, "python", "-c", probe, check=False)
    healthcheck = run("podman", "healthcheck", "run", container, check=False)
    answers = Answers(
        healthz=healthz.json(),
        readyz=readyz.json(),
        model=completion.model,
        content=completion.choices[0].message.content or "",
        uid=run("podman", "exec", container, "sh", "-c", "echo $(id -u):$(id -g)").stdout.strip(),
        write_refused=write.stderr.strip().splitlines()[-1] if write.returncode != 0 else "",
        healthcheck=healthcheck.returncode,
        exit_code=-1,
    )
    run("podman", "stop", "--time", "20", container)
    answers.exit_code = int(run("podman", "inspect", "--format", "{{.State.ExitCode}}", container).stdout)
    return answers


def run_as_docker_run(image: str, chart: ChartPod) -> Answers:
    """`docker run IMAGE` as the README shows it (no key, no policy: the built-in simulated upstream), restricted
    as the chart restricts the pod."""
    port = free_port()
    with containers() as names:
        flags = [*running(), *chart.security, *chart.tmp, "--publish", f"127.0.0.1:{port}:8000"]
        container = start(names, "plain", flags, image)
        return ask(container, port, "gpt-4", chart.probes)


def run_as_the_chart(image: str, chart: ChartPod) -> Answers:
    """The chart's pod: Turnout as the chart runs it, and `turnout simulate` beside it in the pod's network."""
    port = free_port()
    with containers() as names:
        # The simulator owns the pod's network namespace, so it publishes Turnout's port too; it listens on the
        # pod's loopback only, under the same restrictions as Turnout.
        sidecar = [*running(), *chart.security, "--publish", f"127.0.0.1:{port}:{chart.port}"]
        simulate = ("simulate", "--host", "127.0.0.1", "--port", str(SIMULATOR_PORT))
        pod = start(names, "simulator", sidecar, image, *simulate)
        flags = [*running(), *chart.security, *chart.tmp, *chart.env, *chart.volumes, "--network", f"container:{pod}"]
        container = start(names, "turnout", flags, image, *chart.args)
        return ask(container, port, "gpt-4", chart.probes)


def build_and_run() -> Report:
    """Every step, timed: tools, base, import, build, both runs."""
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        seconds[name] = round(time.monotonic() - started, 1)

    with step("tools"):
        installed = ensure_tools()
    with step("base"):
        tarball = base_tarball()
    with step("import"):
        base = import_base(tarball)
    with tempfile.TemporaryDirectory(prefix="turnout-image-") as scratch:
        work = Path(scratch)
        with step("build"):
            image = build(base, work)
        report = Report(base, image_bytes(base), image, image_bytes(image), installed, seconds)
        chart = chart_pod(work, upstream_key=UPSTREAM_KEY, upstream=f"http://127.0.0.1:{SIMULATOR_PORT}/v1")
        with step("run"):
            report.runs["docker run"] = run_as_docker_run(image, chart)
        with step("run as the chart"):
            report.runs["chart"] = run_as_the_chart(image, chart)
    return report


def main() -> int:
    """`make image`: build, run, print what was answered and how long each step took."""
    started = time.monotonic()
    try:
        report = build_and_run()
    except (ImageError, ChartError) as error:
        print(f"image: {error}", file=sys.stderr)
        return 1
    print(f"base  {report.base}: {report.base_bytes / 1e6:.0f} MB")
    print(f"image {report.image}: {report.image_bytes / 1e6:.0f} MB (uncompressed, base included)")
    if report.installed:
        print(f"installed from Debian: {' '.join(report.installed)}")
    for name, answers in report.runs.items():
        print(f"{name}: uid:gid {answers.uid}, /healthz {answers.healthz}, /readyz {answers.readyz}")
        print(f"  chat ({answers.model}): {answers.content!r}")
        print(f"  write to /opt: {answers.write_refused!r}; HEALTHCHECK exit {answers.healthcheck}")
        print(f"  exit code after SIGTERM: {answers.exit_code}")
    steps = ", ".join(f"{name} {value} s" for name, value in report.seconds.items())
    print(f"{steps}; total {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
