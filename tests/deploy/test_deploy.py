"""What the image and the chart rely on, on a real `turnout serve`: the HEALTHCHECK, and a ConfigMap update."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import openai
import pytest

from tests.dockerfile import stages
from tests.e2e.conftest import RunningProcess, clean_env, free_port, running, sdk_client, start_turnout, turnout_env

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}
  gpt4: {upstream: sim, model: gpt-4}
rules:
  - name: default
    route: support-ft
    fallback: [gpt4]
"""
POLICY_V2 = POLICY.replace("gpt4: {upstream: sim, model: gpt-4}", "gpt4o: {upstream: sim, model: gpt-4o}").replace(
    "[gpt4]", "[gpt4o]"
)
"""The update: route gpt4 renamed gpt4o, so that /v1/models shows which file is running."""
RELOAD_TIMEOUT = 10.0


def _healthcheck(port: int) -> int:
    """Run the Dockerfile's HEALTHCHECK command as the image would, against `port`; its exit status."""
    [healthcheck] = [i for i in stages()[-1] if i.keyword == "HEALTHCHECK"]
    command = healthcheck.exec_form()
    env = clean_env(TURNOUT_PORT=str(port))
    return subprocess.run(command, env=env, capture_output=True, timeout=10, check=False).returncode  # noqa: S603


def test_the_images_healthcheck_passes_on_a_running_turnout_and_fails_without_one(turnout: RunningProcess) -> None:
    assert _healthcheck(turnout.port) == 0
    assert _healthcheck(free_port()) != 0


def _publish(directory: Path, text: str, version: int) -> None:
    """Write `text` as the kubelet writes a ConfigMap volume: a new timestamped folder, then a swap of `..data`."""
    folder = directory / f"..2026_11_30_00_00_0{version}.00000000{version}"
    folder.mkdir()
    (folder / "policy.yaml").write_text(text, encoding="utf-8")
    link = directory / "..data_tmp"
    link.symlink_to(folder.name)
    old = (directory / "..data").resolve() if (directory / "..data").is_symlink() else None
    link.rename(directory / "..data")  # atomic, as the kubelet's AtomicWriter does
    if not (directory / "policy.yaml").is_symlink():
        (directory / "policy.yaml").symlink_to("..data/policy.yaml")
    if old is not None:
        (old / "policy.yaml").unlink()
        old.rmdir()


def _routes(client: openai.OpenAI) -> list[str]:
    """The routes and aliases `/v1/models` lists (the upstream's own models follow them, owned by their upstream)."""
    return sorted(model.id for model in client.models.list() if model.owned_by == "turnout")


def test_a_configmap_update_is_picked_up_without_a_restart(simulator: RunningProcess, tmp_path: Path) -> None:
    mount = tmp_path / "etc-turnout"
    mount.mkdir()
    _publish(mount, POLICY, 1)
    env = turnout_env(simulator, TURNOUT_CONFIG=str(mount / "policy.yaml"), SIM_URL=f"{simulator.origin}/v1")
    with running(start_turnout(env)) as process:
        client = sdk_client(process.origin)
        assert _routes(client) == ["gpt4", "support-ft"]
        _publish(mount, POLICY_V2, 2)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while _routes(client) != ["gpt4o", "support-ft"]:
            if time.monotonic() > deadline:
                pytest.fail(f"the swapped ConfigMap was not reloaded within {RELOAD_TIMEOUT} s:\n{process.stderr()}")
            time.sleep(0.1)
        assert os.path.realpath(mount / "policy.yaml").endswith("02.000000002/policy.yaml")
        client.close()
