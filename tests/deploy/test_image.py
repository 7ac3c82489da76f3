"""The image built for real (Debian's podman, a debootstrap base) and run as the chart runs it: tests/deploy/image.py.

Marked `image` and left out of the default run (pyproject's addopts say `-m "not image"`): it installs podman,
runc and debootstrap when they are missing, makes the base once (cached under ~/.cache/turnout/image/) and builds
the Dockerfile: 2.5 to 4.5 minutes the first time, then about 30 s (1.5 minutes after a source change). Run it with
`pytest -m image` (or `make image`). When the tools cannot be installed or the image cannot be built, every test
here fails and says why.
"""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.chart_pod import ChartError
from tests.deploy.helm_chart import render
from tests.deploy.image import Answers, ImageError, Report, build_and_run

pytestmark = pytest.mark.image

RUNS = ["docker run", "chart"]


@pytest.fixture(scope="module")
def report() -> Report:
    try:
        return build_and_run()
    except (ImageError, ChartError) as error:
        pytest.fail(f"the image could not be built and run: {error}", pytrace=False)


@pytest.fixture(params=RUNS)
def answers(request: pytest.FixtureRequest, report: Report) -> Answers:
    result: Answers = report.runs[request.param]
    return result


def test_it_answers_the_probes(answers: Answers) -> None:
    assert answers.healthz == {"status": "ok"}
    assert isinstance(answers.readyz, dict)
    assert answers.readyz["status"] == "ready"


def test_it_answers_a_chat_request_from_the_simulated_upstream(answers: Answers) -> None:
    assert answers.content.startswith("This is a simulated answer")


def test_it_runs_as_the_charts_non_root_user(answers: Answers) -> None:
    pod = render().deployment["spec"]["template"]["spec"]["securityContext"]
    assert answers.uid == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    assert not answers.uid.startswith("0:")


def test_its_root_file_system_is_read_only(answers: Answers) -> None:
    assert "Read-only file system" in answers.write_refused


def test_its_healthcheck_passes_and_sigterm_stops_it_cleanly(answers: Answers) -> None:
    assert answers.healthcheck == 0
    assert answers.exit_code == 0


def test_without_a_policy_the_built_in_simulated_upstream_answers(report: Report) -> None:
    plain = report.runs["docker run"]
    assert plain.readyz == {"status": "ready", "routes": ["openai"]}
    assert plain.model == "gpt-4"


def test_as_the_chart_runs_it_the_mounted_policy_routes_the_request(report: Report) -> None:
    policy = yaml.safe_load(render().policy_file)
    chart = report.runs["chart"]
    assert chart.readyz == {"status": "ready", "routes": list(policy["routes"])}
    [default] = [rule["route"] for rule in policy["rules"] if "when" not in rule]
    assert chart.model == policy["routes"][default]["model"]  # the chart's default rule: the fine-tuned route


def test_the_image_is_built_on_the_debootstrap_base(report: Report) -> None:
    assert report.base.startswith("localhost/turnout-base:debian-bookworm-")
    assert report.image_bytes > report.base_bytes > 0
