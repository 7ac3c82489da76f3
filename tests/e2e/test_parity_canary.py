"""Parity and canaries on the real server: pairs from live traffic, promotion, rollback, two replicas, the CLI.

The simulator plays the routes: the reference `gpt4` and the candidate `ft35` answer the same words, unless
`x-simulated-differ` makes the candidate answer others on a share of the prompts (chosen by a hash of the
messages, so the same prompts always differ), or `x-simulated-fault` fails it. Each scenario has its own
rule (chosen by `x-turnout-caller`), so its own canary. Steps and minimum pairs are small to keep it fast.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import (
    RunningProcess,
    SimulatorCalls,
    running,
    sdk_client,
    start_turnout,
    turnout_cli,
    turnout_env,
)

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
routes:
  gpt4: {upstream: sim, model: gpt-4}
  ft35: {upstream: sim, model: ft-35}
  judge: {upstream: sim, model: judge-model}
prices:
  gpt-4: {input: 0.03, output: 0.06}
  ft-35: {input: 0.003, output: 0.006}
  judge-model: {input: 0.01, output: 0.03}
baseline: gpt4
database_url: "${PARITY_DB}"
canary_ttl: 0.1
rules:
  - name: agree
    when: {caller: agree}
    route: gpt4
    parity: {reference: gpt4, sample: 1, evaluators: [exact], margin: 0.9, min_pairs: 10}
    canary:
      candidate: ft35
      steps: [10, 50, 100]
      min_pairs: 5
      holdout: 0.1
      guardrails: {error_rate: 0.2, min_requests: 5}
  - name: disagree
    when: {caller: disagree}
    route: gpt4
    parity: {reference: gpt4, sample: 1, evaluators: [normalised], margin: 0.95, min_pairs: 10}
    canary: {candidate: ft35, steps: [10, 50, 100], min_pairs: 5, guardrails: {min_requests: 5}}
  - name: burst
    when: {caller: burst}
    route: gpt4
    parity: {reference: gpt4, sample: 1, evaluators: [exact], margin: 0.9, min_pairs: 10}
    canary:
      candidate: ft35
      steps: [10, 50, 100]
      min_pairs: 5
      guardrails: {error_rate: 0.2, min_requests: 5}
  - name: judged
    when: {caller: judged}
    route: ft35
    parity:
      reference: gpt4
      sample: 1
      evaluators: [{kind: exact, disagree: undecided}]
      judge: {route: judge, audit: 1}
      margin: 0.9
      min_pairs: 5
  - name: similar
    when: {caller: similar}
    route: ft35
    parity: {reference: gpt4, sample: 1, evaluators: [semantic], margin: 0.9, min_pairs: 5}
  - name: default
    route: gpt4
"""
CANARY = re.compile(r"^(?P<rule>\w+);step=(?P<step>\d+);share=(?P<share>[\d.]+);verdict=(?P<verdict>\w+);served=(\w+)$")


@pytest.fixture(scope="module")
def env(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = Path(tmp_path_factory.mktemp("parity"))
    policy = directory / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    database = f"sqlite:///{directory / 'turnout.db'}"
    return turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1", PARITY_DB=database)


@pytest.fixture(scope="module")
def servers(env: dict[str, str]) -> Iterator[tuple[RunningProcess, RunningProcess]]:
    """Two replicas on one policy and one database."""
    with running(start_turnout(env)) as first, running(start_turnout(env)) as second:
        yield first, second


def ask(client: openai.OpenAI, caller: str, prompt: str, **headers: str) -> dict[str, str]:
    """One chat request for `caller`'s rule; the canary header read."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4",
        messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-turnout-caller": caller, **headers},
    )
    raw.parse()
    match = CANARY.match(raw.headers["x-turnout-canary"])
    assert match is not None, raw.headers["x-turnout-canary"]
    assert match["rule"] == caller
    return {**match.groupdict(), "route": raw.headers["x-turnout-route"]}


def parity(env: dict[str, str], rule: str) -> dict[str, Any]:
    done = turnout_cli("parity", "--rule", rule, "--json", env=env)
    assert done.returncode == 0, done.stderr
    row: dict[str, Any] = json.loads(done.stdout)
    return row


def stored(env: dict[str, str], rule: str) -> dict[str, Any]:
    """The rule's pairs and canary as the database holds them (read directly: the CLI is slower to start)."""
    path = env["PARITY_DB"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        pairs = connection.execute("SELECT COUNT(*) FROM turnout_parity_pairs WHERE rule = ?", (rule,)).fetchone()[0]
        row = connection.execute("SELECT share, status, version FROM turnout_canary WHERE rule = ?", (rule,)).fetchone()
    share, status, version = row if row is not None else (None, None, None)
    return {"pairs": pairs, "step": share, "state": status, "version": version}


def until(condition: Any, what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"not within {timeout} s: {what}")


def drive(client: openai.OpenAI, env: dict[str, str], caller: str, stop: Any, limit: int, **headers: str) -> int:
    """Requests until `stop(stored row)` holds (each one's pair and review settled first); how many it took."""
    before = stored(env, caller)["pairs"]
    for sent in range(1, limit + 1):
        ask(client, caller, f"{caller} question {sent}", **headers)
        until(lambda n=sent: stored(env, caller)["pairs"] >= before + n, "the pair")
        time.sleep(0.02)  # the review follows the pair's write
        if stop(stored(env, caller)):
            return sent
    pytest.fail(f"{caller}: not done after {limit} requests: {stored(env, caller)}")


def test_an_agreeing_candidate_reaches_100_percent_and_both_replicas_see_it(servers, env) -> None:
    first, second = servers
    with sdk_client(first.origin) as one, sdk_client(second.origin) as two:
        assert ask(one, "agree", "hello")["step"] == "10"
        sent = drive(one, env, "agree", lambda row: row["state"] == "complete", limit=80)
        row = parity(env, "agree")
        # the sequential test passes 43 agreeing pairs at 90% / 95%, then 5 more pairs at the 50% step
        assert 43 <= row["pairs"] <= 60, row
        assert sent <= 60
        assert (row["verdict"], row["step"], row["share"], row["successes"]) == ("pass", 100, 0.9, row["pairs"])
        assert row["lower"] > 0.9
        seen = [
            until(lambda c=c: (a := ask(c, "agree", "again"))["step"] == "100" and a, "step 100") for c in (one, two)
        ]
        assert {(s["step"], s["share"], s["verdict"] in ("pass", "undecided")) for s in seen} == {("100", "0.9", True)}
        routes = [ask(two, "agree", f"share {i}")["route"] for i in range(100)]
        # the holdout (10%) still reaches the reference: none of 100 would be a 0.9^100 = 0.003% chance
        assert 1 <= routes.count("gpt4") <= 30, routes.count("gpt4")
        assert routes.count("ft35") == 100 - routes.count("gpt4")
        metrics = httpx.get(f"{first.origin}/metrics").text
    assert 'turnout_canary_share{rule="agree"} 0.9' in metrics
    assert re.search(r'turnout_canary_step_changes_total\{direction="up",rule="agree"\} 2\.0', metrics), metrics
    assert re.search(r'turnout_parity_pairs_total\{candidate="ft35",outcome="tie",rule="agree"\} \d+', metrics)
    assert 'turnout_parity_verdict{candidate="ft35",rule="agree",verdict="pass"} 1.0' in metrics
    assert re.search(r'turnout_evaluation_cost_usd_total\{kind="reference",rule="agree"\} 0\.0*[1-9]', metrics)
    assert "canary " in first.stderr() + second.stderr()
    advanced = [line for line in (first.stderr() + second.stderr()).splitlines() if '"action": "advance"' in line]
    assert len(advanced) == 2, advanced  # one replica moved each step: compare-and-set
    assert all('"pairs": ' in line and '"lower_bound": ' in line for line in advanced)


def test_a_candidate_that_disagrees_on_20_percent_is_rolled_back_with_its_bound_shown(servers, env) -> None:
    first, _ = servers
    differ = {"x-simulated-differ": "20", "x-simulated-differ-for": "ft-35"}
    with sdk_client(first.origin) as client:
        sent = drive(client, env, "disagree", lambda row: row["state"] == "rolled_back", limit=150, **differ)
        after = ask(client, "disagree", "after", **differ)
    row = parity(env, "disagree")
    assert (row["verdict"], row["step"], row["share"]) == ("fail", 0, 0.0), row
    assert row["upper"] < 0.95  # the bound that failed it
    assert 0.6 < row["successes"] / row["pairs"] < 0.95
    assert (after["step"], after["route"]) == ("0", "gpt4")
    table = turnout_cli("parity", "--rule", "disagree", env=env)
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()
    assert header.split() == [
        "rule",
        "candidate",
        "reference",
        "pairs",
        "rate",
        "lower",
        "upper",
        "margin",
        "verdict",
        "step",
        "state",
        "judge",
    ]
    assert line.split()[:3] == ["disagree", "ft35", "gpt4"]
    assert line.split()[6] == f"{row['upper']:.4f}"
    assert line.split()[-4:] == ["fail", "0%", "rolled_back", "-"]
    assert sent < 150


def test_an_error_burst_rolls_back_to_the_last_safe_step_and_the_cli_commands_work(servers, env) -> None:
    first, second = servers
    with sdk_client(first.origin) as client, sdk_client(second.origin) as other:
        drive(client, env, "burst", lambda row: row["step"] == 50, limit=80)
        failing = {"x-simulated-fault": "500", "x-simulated-fault-for": "ft-35"}
        for i in range(20):
            ask(client, "burst", f"burst failing {i}", **failing)  # the reference answers: the candidate's fallback
            if stored(env, "burst")["state"] == "rolled_back":
                break
        until(lambda: stored(env, "burst")["state"] == "rolled_back", "the rollback")
        row = parity(env, "burst")
        assert (row["step"], row["verdict"]) == (10, "pass"), row  # the gate still passes: the guardrail tripped
        log = first.stderr() + second.stderr()
        assert re.search(r'"action": "rollback".*guardrail: error rate', log), log[-3000:]

        pinned = turnout_cli("canary", "pin", "burst", "25", env=env)
        assert pinned.returncode == 0, pinned.stderr
        assert "pinned at 25%" in pinned.stdout
        seen = [
            until(lambda c=c: (a := ask(c, "burst", "pinned"))["step"] == "25" and a, "25") for c in (client, other)
        ]
        assert {s["share"] for s in seen} == {"0.25"}
        for command in ("pause", "resume", "reset"):
            done = turnout_cli("canary", command, "burst", env=env)
            assert done.returncode == 0, done.stderr
        assert parity(env, "burst")["state"] == "running"
        assert parity(env, "burst")["step"] == 10
        assert parity(env, "burst")["pairs"] == 0  # reset: the evidence starts afresh


def test_the_cli_says_what_is_wrong(env) -> None:
    done = turnout_cli("parity", "--rule", "default", env=env)
    assert done.returncode == 2
    assert "rule 'default' has no parity block (rules with one: agree, burst, disagree, judged, similar)" in done.stderr
    done = turnout_cli("canary", "pin", "agree", "101", env=env)
    assert done.returncode == 2
    assert "0 to 100 percent" in done.stderr


def test_the_judge_decides_what_the_evaluators_cannot_and_its_agreement_is_counted(
    servers, env, simulator_call: SimulatorCalls
) -> None:
    first, _ = servers
    headers = {
        "x-simulated-differ": "50",
        "x-simulated-differ-for": "ft-35",
        "x-simulated-reply": "VERDICT: TIE",  # a header has one line: the verdict line alone
        "x-simulated-reply-for": "judge-model",
    }
    with sdk_client(first.origin) as client:
        for index in range(1, 21):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4",
                messages=[{"role": "user", "content": f"judged {index}"}],
                extra_headers={"x-turnout-caller": "judged", "x-request-id": f"parity-judged-{index}", **headers},
            )
            raw.parse()
            assert "x-turnout-canary" not in raw.headers  # parity alone: no canary
        until(lambda: stored(env, "judged")["pairs"] == 20, "20 pairs")
        metrics = httpx.get(f"{first.origin}/metrics").text
    row = parity(env, "judged")
    path = env["PARITY_DB"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        rows = connection.execute(
            "SELECT evaluator, outcome, judge_outcome, COUNT(*) FROM turnout_parity_pairs WHERE rule = 'judged' "
            "GROUP BY evaluator, outcome, judge_outcome"
        ).fetchall()
    by = {(evaluator, outcome, judged): count for evaluator, outcome, judged, count in rows}
    differing = by.get(("judge", "tie", None), 0)
    agreeing = by.get(("exact", "tie", "tie"), 0)
    assert differing + agreeing == 20, by  # the judge alone decides where exact cannot
    assert differing > 0, by
    assert agreeing > 0, by
    assert (row["pairs"], row["successes"], row["judge_pairs"], row["judge_agrees"]) == (20, 20, agreeing, agreeing)
    assert row["judge"] == f"{agreeing}/{agreeing}"
    asked = simulator_call("parity-judged-1-judge")
    prompt = asked["body"]["messages"][0]["content"]
    assert "VERDICT:" in prompt  # the shipped prompt
    assert "user: judged 1" in prompt  # with the request in it
    assert asked["body"]["model"] == "judge-model"
    assert re.search(r'turnout_evaluation_cost_usd_total\{kind="judge",rule="judged"\} 0\.0*[1-9]', metrics)
    # no canary to review, the gate's gauges still follow the pairs (20 of 20: sequential at 90% needs 43)
    gauges = 'turnout_parity_verdict{candidate="ft35",rule="judged",verdict="undecided"} 1.0'

    def scraped() -> str:
        text = httpx.get(f"{first.origin}/metrics").text
        return text if gauges in text else ""

    metrics = until(scraped, "the gate's gauges")
    assert 'turnout_parity_rate{candidate="ft35",rule="judged"} 1.0' in metrics


def test_the_semantic_evaluator_ties_answers_of_the_same_words_with_the_local_model(servers, env) -> None:
    first, _ = servers
    differ = {"x-simulated-differ": "100", "x-simulated-differ-for": "ft-35"}  # the same words, in reverse order
    with sdk_client(first.origin) as client:
        for index in range(1, 6):
            ask_similar = {"x-turnout-caller": "similar", **differ}
            client.chat.completions.create(
                model="gpt-4", messages=[{"role": "user", "content": f"similar {index}"}], extra_headers=ask_similar
            )
    until(lambda: stored(env, "similar")["pairs"] == 5, "5 pairs", timeout=30)
    path = env["PARITY_DB"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        rows = connection.execute(
            "SELECT evaluator, outcome, COUNT(*) FROM turnout_parity_pairs WHERE rule = 'similar' "
            "GROUP BY evaluator, outcome"
        ).fetchall()
    assert rows == [("semantic", "tie", 5)]


def test_a_streamed_answer_is_paired_whole_and_its_copy_asks_for_the_whole_answer(
    servers, env, simulator_call: SimulatorCalls
) -> None:
    first, _ = servers
    before = stored(env, "similar")["pairs"]
    with sdk_client(first.origin) as client:
        stream = client.chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "similar streamed"}],
            stream=True,
            extra_headers={"x-turnout-caller": "similar", "x-request-id": "parity-streamed-1"},
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.startswith("This is a simulated answer")
    until(lambda: stored(env, "similar")["pairs"] == before + 1, "the streamed request's pair", timeout=10)
    copy = simulator_call("parity-streamed-1-reference")
    assert copy["body"]["model"] == "gpt-4"
    assert "stream" not in copy["body"]
    path = env["PARITY_DB"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        row = connection.execute(
            "SELECT evaluator, outcome, candidate_text FROM turnout_parity_pairs WHERE request_id = 'parity-streamed-1'"
        ).fetchone()
    assert row == ("semantic", "tie", None)  # the same answer; no text kept without TURNOUT_LOG_CONTENT


def test_two_replicas_share_a_canary_kept_in_redis(
    simulator: RunningProcess, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    policy = tmp_path / "policy.yaml"
    # the store's keys go under this test's own prefix: the Redis may be shared
    store = f"parity_redis_url: {redis_url}\nparity_redis_prefix: {redis_prefix}\n"
    policy.write_text(POLICY.replace('database_url: "${PARITY_DB}"\n', store), encoding="utf-8")
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1")
    with (
        running(start_turnout(env)) as first,
        running(start_turnout(env)) as second,
        sdk_client(first.origin) as one,
        sdk_client(second.origin) as two,
    ):
        for index in range(6):
            ask(one if index % 2 else two, "agree", f"redis {index}")
        until(lambda: parity(env, "agree")["pairs"] >= 6, "6 pairs from both replicas", timeout=15)
        pinned = turnout_cli("canary", "pin", "agree", "50", env=env)
        assert pinned.returncode == 0, pinned.stderr
        seen = [until(lambda c=c: (a := ask(c, "agree", "pinned"))["step"] == "50" and a, "50") for c in (one, two)]
        assert {s["share"] for s in seen} == {"0.5"}
        assert turnout_cli("canary", "reset", "agree", env=env).returncode == 0
    assert parity(env, "agree")["state"] == "running"
