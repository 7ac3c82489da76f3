"""Fuzz fixtures: the real `turnout serve`, with and without a policy file, in front of `turnout simulate`.

Both run as subprocesses on loopback ports, as in `tests/e2e`, but each with a cap on the memory it may
take (`RLIMIT_DATA`): a fuzzed request that makes a process allocate without bound (an `n` of 2^70
choices) fails there with a `MemoryError`, which the tests see as a 5xx, instead of taking the machine.

`Target.sync()` ties server log lines to the request that caused them: it sends a sentinel request and
waits for its access-log line, so everything logged for the requests before it is in the log by then.
The session's `StatusTable` collects what every fuzz test sent and got; pytest prints it at the end.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, RunningProcess, clean_env, free_port, running, turnout_env

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
"""How many times more cases than planned every fuzz run generates (`FUZZ_SCALE=20`: a long local run)."""
SEED = int(os.environ.get("FUZZ_SEED", "11"))
"""The Hypothesis seed: fixed unless set (not derived from the tests' source, which every edit would change)."""
REQUEST_TIMEOUT = 30.0
"""Seconds for one fuzzed request: a hang guard, far above any answer of the simulator."""
SIMULATOR_DATA_LIMIT = 384 * 2**20
"""Bytes of heap the simulator may use: twice what it uses, far below what would hurt the machine."""
TURNOUT_DATA_LIMIT = 4 * 2**30
"""Bytes of heap Turnout may use (the policy target loads the local embedding model)."""
SYNC_TIMEOUT = 10.0
"""Seconds a sentinel request's log line may take to appear: a hang guard, never reached when all is well."""
KNOWLEDGE_INDEX = ROOT / "policies" / "examples" / "knowledge-index"

# Every kind of rule the policy language has that needs no network: tools, metadata, keywords, regex,
# numbers, headers, response_format, a sticky split, meaning (the local embedder) and a RAG route, so
# that fuzzed bodies go through feature extraction, the engine, retrieval and the model rewrite.
POLICY = f"""
upstreams:
  sim: {{base_url: "${{SIM_URL}}", api_key: "${{OPENAI_API_KEY}}"}}
routes:
  support-ft: {{upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}}
  support-ft-v2: {{upstream: sim, model: "ft:gpt-3.5-turbo-1106:acme::9Abc"}}
  gpt4: {{upstream: sim, model: gpt-4}}
  docs: {{kind: rag, index: "{KNOWLEDGE_INDEX}", answer_with: support-ft, top_k: 2, context_tokens: 200}}
aliases: {{support: support-ft}}
baseline: gpt4
rules:
  - name: tools
    when: {{has_tools: true}}
    route: gpt4
  - name: triage
    when: {{any: [{{metadata: {{task: [classify, "tri*"]}}}}, {{header: {{x-team: data}}}}]}}
    route: support-ft
  - name: escalation
    when:
      any:
        - {{conversation: {{keywords: [refund, lawyer]}}}}
        - {{last_user_message: {{regex: "(?i)cancel\\\\s+my"}}}}
    route: gpt4
  - name: sampling
    when: {{all: [{{n: {{gt: 1}}}}, {{temperature: {{lt: 0.5}}}}, {{not: {{stream: true}}}}]}}
    route: gpt4
  - name: structured
    when: {{response_format: json}}
    route: support-ft
  - name: contact
    when: {{similar_to: {{examples: ["When is support open?", "How can I call support?"], threshold: 0.6}}}}
    route: docs
  - name: long
    when: {{prompt_tokens: {{gt: 2000}}}}
    route: gpt4
  - name: default
    split: {{support-ft: 90, support-ft-v2: 10}}
    sticky: user
    fallback: [gpt4]
"""

_PROBLEM_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) |^Traceback \(most recent call last\)", re.MULTILINE)


def log_problems(text: str) -> list[str]:
    """The lines of a server log that no client's request may cause: ERROR, CRITICAL and tracebacks."""
    return [line for line in text.splitlines() if _PROBLEM_LINE.match(line)]


def _capped(limit: int) -> None:
    """In the child before exec: cap its heap (brk and private anonymous mappings)."""
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def start_capped(name: str, args: list[str], env: Mapping[str, str], limit: int) -> RunningProcess:
    """Start `python -m proxy ARGS --port P` on a free port with its heap capped to `limit` bytes."""
    port = free_port()
    stderr_file = tempfile.NamedTemporaryFile(prefix=f"turnout-fuzz-{name}-", suffix=".log")  # noqa: SIM115
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", "proxy", *args, "--port", str(port)],
        cwd=ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr_file,
        preexec_fn=lambda: _capped(limit),  # only setrlimit between fork and exec
    )
    return RunningProcess(name=name, process=process, stderr_file=stderr_file, port=port)


@dataclass
class Target:
    """One running Turnout under fuzz, the simulator behind it, and a cursor into its log."""

    name: str
    """`plain` (no policy file) or `policy`."""
    server: RunningProcess
    simulator: RunningProcess
    _seen: int = 0

    @property
    def origin(self) -> str:
        return self.server.origin

    @property
    def port(self) -> int:
        return self.server.port

    def log_size(self) -> int:
        return Path(self.server.stderr_file.name).stat().st_size

    def new_log(self) -> str:
        """What the server logged since the last call (or since it started)."""
        with Path(self.server.stderr_file.name).open("rb") as log:
            log.seek(self._seen)
            data = log.read()
        self._seen += len(data)
        return data.decode("utf-8", "replace")

    def wait_for(self, marker: str) -> str:
        """Everything logged since the last call, read until it holds `marker` (a request id, say)."""
        deadline = time.monotonic() + SYNC_TIMEOUT
        text = self.new_log()
        while marker not in text and time.monotonic() < deadline:
            time.sleep(0.005)
            text += self.new_log()
        assert marker in text, f"{self.name} logged no line with {marker} within {SYNC_TIMEOUT} s:\n{text}"
        return text

    def sync(self) -> str:
        """Send a sentinel request, wait for its access-log line, and return everything logged since last time."""
        request_id = f"fuzz-sync-{uuid.uuid4().hex}"
        httpx.get(f"{self.origin}/_fuzz/sync", headers={"x-request-id": request_id}, timeout=SYNC_TIMEOUT)
        return self.wait_for(request_id)


@dataclass
class Row:
    """What one fuzz run sent and got: statuses (or what else happened) by count, and how long it took."""

    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


class StatusTable:
    """Cases and statuses by target and operation, for the end-of-session summary."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}

    def row(self, target: str, label: str) -> Row:
        return self.rows.setdefault((target, label), Row())

    def lines(self) -> list[str]:
        """The table as text lines, one row per (target, operation), plus the totals."""
        statuses = sorted({status for row in self.rows.values() for status in row.statuses})
        header = ["target", "operation", "cases", *statuses, "seconds"]
        body = [
            [target, label, str(row.statuses.total()), *(str(row.statuses[s]) for s in statuses), f"{row.seconds:.1f}"]
            for (target, label), row in self.rows.items()
        ]
        total = Counter[str]()
        for row in self.rows.values():
            total.update(row.statuses)
        seconds = sum(row.seconds for row in self.rows.values())
        body.append(["all", "", str(total.total()), *(str(total[s]) for s in statuses), f"{seconds:.1f}"])
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        return [
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in [header, *body]
        ]


_TABLE = pytest.StashKey[StatusTable]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TABLE] = StatusTable()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    table = config.stash.get(_TABLE, None)
    if table is not None and table.rows:
        terminalreporter.section(f"fuzz: cases and statuses (FUZZ_SEED={SEED}, FUZZ_SCALE={SCALE:g})")
        for line in table.lines():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def status_table(pytestconfig: pytest.Config) -> StatusTable:
    """The session's table of fuzz cases and statuses."""
    return pytestconfig.stash[_TABLE]


@pytest.fixture(scope="session")
def fuzz_simulator() -> Iterator[RunningProcess]:
    """`turnout simulate`, its heap capped, shared by both targets."""
    simulator = start_capped("simulator", ["simulate"], clean_env(), SIMULATOR_DATA_LIMIT)
    with running(simulator) as process:
        process.wait_ready("/v1/models")
        yield process


def _start_target(name: str, simulator: RunningProcess, **env: str) -> Target:
    server = start_capped(name, ["serve"], turnout_env(simulator, **env), TURNOUT_DATA_LIMIT)
    server.wait_ready("/readyz")
    return Target(name=name, server=server, simulator=simulator)


@pytest.fixture(scope="session")
def plain_target(fuzz_simulator: RunningProcess) -> Iterator[Target]:
    """Turnout with no policy file: everything forwarded to the simulator with the caller's model."""
    target = _start_target("plain", fuzz_simulator)
    with running(target.server):
        yield target


@pytest.fixture(scope="session")
def policy_target(fuzz_simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Turnout with `POLICY`: rules of every kind, a split, a RAG route, models rewritten."""
    policy = tmp_path_factory.mktemp("fuzz-policy") / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    target = _start_target("policy", fuzz_simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{fuzz_simulator.origin}/v1")
    with running(target.server):
        yield target


@pytest.fixture(scope="session", params=["plain", "policy"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each target in turn: Turnout without and with a policy file."""
    fixture: Target = request.getfixturevalue(f"{request.param}_target")
    return fixture
