"""`turnout replay` on a small log, its figures worked out by hand from the shipped price table.

Prices (USD per 1M tokens, `proxy.accounting.prices`): gpt-4 input 30.00, output 60.00; gpt-4o-mini input
0.15, output 0.60. The candidate sends requests with tools to `big` (gpt-4) and the rest to `small`.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.cli.main import main
from tests.exchange_log import chat_request, exchange, write_log

CANDIDATE = """\
upstreams:
  sim: {base_url: "http://127.0.0.1:9/v1", api_key: sk-test-candidate}
routes:
  small: {upstream: sim, model: gpt-4o-mini}
  big: {upstream: sim, model: gpt-4}
baseline: big
rules:
  - name: tools
    when: {has_tools: true}
    route: big
  - name: default
    route: small
"""
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


LOG = [
    # r1: gpt-4, 1000 in / 200 out: 1000 x 30/1M + 200 x 60/1M = 0.03 + 0.012 = 0.042 (cost = baseline)
    #     candidate: `default` → small: 1000 x 0.15/1M + 200 x 0.60/1M = 0.00015 + 0.00012 = 0.00027; moved
    exchange(
        "r1", 1, route="big", rule="all", usage=usage(1000, 200), cost=Decimal("0.042"), baseline=Decimal("0.042")
    ),
    # r2: tools, 500 / 100 on gpt-4: 0.015 + 0.006 = 0.021; candidate: `tools` → big, the same 0.021; not moved
    exchange(
        "r2",
        2,
        route="big",
        rule="all",
        usage=usage(500, 100),
        cost=Decimal("0.021"),
        baseline=Decimal("0.021"),
        request=chat_request("Look it up", tools=[TOOL]),
    ),
    # r3: on small already, 2000 / 500 on gpt-4o-mini: 0.0003 + 0.0003 = 0.0006; its baseline (gpt-4):
    #     0.06 + 0.03 = 0.09; candidate: `default` → small, 0.0006; not moved
    exchange(
        "r3",
        3,
        route="small",
        rule="short",
        model="gpt-4o-mini",
        usage=usage(2000, 500),
        cost=Decimal("0.0006"),
        baseline=Decimal("0.09"),
    ),
    # r4: a cache hit on big (cost 0), 100 / 100, baseline 0.003 + 0.006 = 0.009; candidate: small, moved, so
    #     no longer a hit: 100 x 0.15/1M + 100 x 0.60/1M = 0.000015 + 0.00006 = 0.000075
    exchange(
        "r4", 4, route="big", rule="all", cache="hit", usage=usage(100, 100), cost=Decimal(0), baseline=Decimal("0.009")
    ),
    # r5: no content logged: not decided
    exchange("r5", 5, route="big", request=None, answer=None),
    # r6: an embedding: rules do not decide it
    exchange("r6", 6, endpoint="embeddings", route="big", request={"model": "x", "input": "y"}, answer=None),
    # r7: a failed request (no usage): decided (small, moved from big) but not priced
    exchange("r7", 7, route="big", status=502, error="upstream_error", usage=None, cost=None, baseline=None),
]
# (default, small): r1 r3 r4 r7 → 4 requests, 3 moved (r1 r4 r7), 1 unpriced (r7)
#   projected 0.00027 + 0.0006 + 0.000075 = 0.000945; current 0.042 + 0.0006 + 0 = 0.0426;
#   baseline 0.042 + 0.09 + 0.009 = 0.141; vs baseline 0.141 - 0.000945 = 0.140055; vs current 0.041655
# (tools, big): r2 → 1 request, 0 moved; 0.021 projected, current and baseline; savings 0 and 0


@pytest.fixture(params=["jsonl", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = str(tmp_path / "traffic.jsonl") if request.param == "jsonl" else f"sqlite:///{tmp_path / 'turnout.db'}"
    write_log(url, LOG)
    return url


@pytest.fixture
def candidate(tmp_path: Path) -> Path:
    path = tmp_path / "candidate.yaml"
    path.write_text(CANDIDATE)
    return path


def test_the_figures_per_rule_and_route_are_the_hand_computed_ones(
    store: str, candidate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--policy", str(candidate), "--store", store, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(row["rule"], row["route"]): row for row in report["rows"]}
    assert set(rows) == {("default", "small"), ("tools", "big")}
    small, big = rows["default", "small"], rows["tools", "big"]
    assert (small["requests"], small["moved"], small["unpriced"]) == (4, 3, 1)
    assert Decimal(small["projected_usd"]) == Decimal("0.000945")
    assert Decimal(small["current_usd"]) == Decimal("0.0426")
    assert Decimal(small["baseline_usd"]) == Decimal("0.141")
    assert Decimal(small["savings_vs_baseline_usd"]) == Decimal("0.140055")
    assert Decimal(small["savings_vs_current_usd"]) == Decimal("0.041655")
    assert (big["requests"], big["moved"]) == (1, 0)
    assert Decimal(big["projected_usd"]) == Decimal(big["current_usd"]) == Decimal("0.021")
    assert Decimal(big["savings_vs_current_usd"]) == 0
    assert Decimal(report["total"]["projected_usd"]) == Decimal("0.021945")
    assert report["moves"] == [{"from": "big", "to": "small", "requests": 3}]
    assert report["undecided"] == {"endpoint embeddings": 1, "no content": 1}


def test_the_table_says_what_moved_and_what_could_not_be_decided(
    store: str, candidate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--policy", str(candidate), "--store", store, "--rule", "all"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "rule",
        "route",
        "requests",
        "moved",
        "projected",
        "$",
        "current",
        "$",
        "baseline",
        "$",
        "vs",
        "baseline",
        "vs",
        "current",
    ]
    # --rule all: r1 r2 r4 (r3 was logged under `short`, r5 r6 r7 under `default`); (default, small) is r1 and r4:
    # projected 0.00027 + 0.000075, current 0.042 + 0, baseline 0.042 + 0.009
    assert lines[1].split() == [
        "default",
        "small",
        "2",
        "2",
        "0.000345",
        "0.042000",
        "0.051000",
        "0.050655",
        "0.041655",
    ]
    assert lines[2].split() == ["tools", "big", "1", "0", "0.021000", "0.021000", "0.021000", "0.000000", "0.000000"]
    assert "moved 2: big -> small" in out
    assert "not decided" not in out
    assert "not priced" not in out


def test_since_keeps_the_later_exchanges(store: str, candidate: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # r1..r7 are 1..7 s after 2025-11-24T16:00:00Z; since 16:00:03.5 leaves r4 r5 r6 r7
    assert (
        main(["replay", "--policy", str(candidate), "--store", store, "--since", "2025-11-24T16:00:03.5", "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["requests"] == 2  # r4 and r7 decided; r5 (no content) and r6 (embedding) not
    assert report["undecided"] == {"endpoint embeddings": 1, "no content": 1}


def test_a_missing_policy_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--policy", str(tmp_path / "none.yaml"), "--store", str(tmp_path / "t.jsonl")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_the_table_counts_what_could_not_be_decided_or_priced(
    store: str, candidate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--policy", str(candidate), "--store", store]) == 0
    out = capsys.readouterr().out
    assert "not decided 1: no content logged (needed to decide)" in out
    assert "not decided 1: endpoint embeddings" in out
    assert "not priced 1: no usage logged" in out
    assert out.splitlines()[3].split() == [
        "total",
        "5",
        "3",
        "0.021945",
        "0.063600",
        "0.162000",
        "0.140055",
        "0.041655",
    ]


def test_execute_against_an_unreachable_upstream_says_so_without_its_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(tmp_path / "traffic.jsonl")
    write_log(log, LOG)
    policy = tmp_path / "candidate.yaml"
    policy.write_text(CANDIDATE.replace("http://127.0.0.1:9/v1", "http://user:pa55word@127.0.0.1:9/v1"))
    args = ["replay", "--policy", str(policy), "--store", log, "--execute", "--sample", "2", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["executed"] == {"sent": 2, "answered": 0, "out": str(tmp_path / "traffic.replays.jsonl")}
    rows = [json.loads(line) for line in (tmp_path / "traffic.replays.jsonl").read_text().splitlines()]
    assert [row["status"] for row in rows] == [None, None]
    assert all("calling http://***@127.0.0.1:9/v1" in row["error"] for row in rows)
    written = (tmp_path / "traffic.replays.jsonl").read_text()
    assert "pa55word" not in written
    assert "sk-test-candidate" not in written
