"""The issue-15 case through the real `turnout serve`: a RAG route answered by the fine-tuned model, against GPT-4.

The baseline is what the client's own question would have cost on GPT-4 (its prompt without the passages,
estimated for GPT-4's tokenizer, and the answer's completion tokens), so a RAG route whose passages make
the fine-tuned model's prompt long shows the overspend it really is.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from policies.features import estimate_prompt_tokens
from proxy.accounting.cost import PriceTable
from proxy.wire.schemas import ChatMessage, Usage
from tests.e2e.conftest import (
    RunningProcess,
    new_request_id,
    running,
    sdk_client,
    start_turnout,
    turnout_cli,
    turnout_env,
)
from tests.e2e.test_chat import wait_for_log_line

FT = "ft:gpt-3.5-turbo-0613:acme::8Xyz"
POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
embedder: {upstream: sim, model: text-embedding-3-small, dimension: 256}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}
  gpt4: {upstream: sim, model: gpt-4}
  docs: {kind: rag, index: ./index, answer_with: support-ft, top_k: 3, context_tokens: 600}
baseline: gpt4
rules:
  - name: default
    route: docs
"""
POLICIES = " ".join(
    f"Refund rule {n}: a cancelled order of category {n} is paid back within {n + 20} days of the request."
    for n in range(40)
)
QUESTIONS = [f"How many days until a refund of category {n} is paid back?" for n in (3, 17, 29)]


@pytest.fixture(scope="module")
def rag(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProcess, Any]]:
    folder = Path(tmp_path_factory.mktemp("cost-rag"))
    (folder / "docs").mkdir()
    (folder / "docs" / "refunds.md").write_text(f"# Refunds\n\n{POLICIES}\n", encoding="utf-8")
    policy = folder / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1")
    built = turnout_cli(
        "index", "add", str(folder / "docs"), "--index", str(folder / "index"), "--config", str(policy), env=env
    )
    assert built.returncode == 0, built.stderr
    with running(start_turnout(env)) as process, sdk_client(process.origin) as client:
        yield process, client


def test_the_baseline_is_the_client_s_own_question_on_gpt_4(rag: tuple[RunningProcess, Any]) -> None:
    process, client = rag
    table = PriceTable(baseline_model="gpt-4")
    spent = baseline = Decimal(0)
    for text in QUESTIONS:
        request_id = new_request_id()
        messages: Any = [{"role": "user", "content": text}]
        raw = client.chat.completions.with_raw_response.create(
            model="docs", messages=messages, extra_headers={"x-request-id": request_id}
        )
        answer: Any = raw.parse()
        line = wait_for_log_line(process, request_id)
        assert (line["route"], line["model"]) == ("docs", FT)
        own = estimate_prompt_tokens([ChatMessage(role="user", content=text)])
        assert line["prompt_tokens"] > 3 * own  # the fine-tuned model was sent the passages too
        completion = answer.usage.completion_tokens
        answered = table.cost(FT, Usage(prompt_tokens=line["prompt_tokens"], completion_tokens=completion))
        # The question's embedding is spend too (the simulator bills 1.3 tokens a word), with no baseline.
        embedded = table.cost("text-embedding-3-small", Usage(prompt_tokens=round(len(text.split()) * 1.3)))
        expected_baseline = table.cost("gpt-4", Usage(prompt_tokens=own, completion_tokens=completion))
        assert answered is not None
        assert embedded is not None
        assert expected_baseline is not None
        expected_cost = answered + embedded
        assert Decimal(line["cost_usd"]) == Decimal(raw.headers["x-turnout-cost-usd"]) == expected_cost
        assert Decimal(line["baseline_cost_usd"]) == expected_baseline
        assert Decimal(raw.headers["x-turnout-savings-usd"]) == expected_baseline - expected_cost
        spent += expected_cost
        baseline += expected_baseline
    # The finding: with its passages, the RAG route costs more than asking GPT-4 straight away.
    assert baseline - spent < 0
