"""Schemathesis against OpenAI's spec, through the real server: valid and invalid requests, with and without a policy.

Every operation Turnout serves (chat completions, streamed and not; embeddings; legacy completions; the model
list; one model) gets
positive cases (requests the spec allows) and negative ones (requests it forbids), against Turnout
without a policy file and with one. Whatever was sent, the answer is a success that matches the spec's
response schema or an OpenAI-format 4xx, never a 5xx, with sane headers and no error in the server's
log (`tests/fuzz/checks.py`). The number of examples per run is fixed and the seed too, so the whole
module runs in well under a minute on two cores; `FUZZ_SCALE` and `FUZZ_SEED` make a longer or a
different run (see the README's Tests section).
"""

from __future__ import annotations

import pytest
from schemathesis import GenerationMode

from tests.fuzz.conftest import StatusTable, Target
from tests.fuzz.runner import FuzzRun, Plan
from tests.fuzz.spec import needs_spec

pytestmark = [pytest.mark.fuzz, needs_spec]

POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
CHAT, MODELS, MODEL = "POST /chat/completions", "GET /models", "GET /models/{model}"
EMBEDDINGS, COMPLETIONS = "POST /embeddings", "POST /completions"
FLOATS = (("encoding_format", "float"),)
PLANS = [
    Plan(CHAT, POSITIVE, 40, stream=False),
    Plan(CHAT, POSITIVE, 40, stream=True),
    Plan(CHAT, NEGATIVE, 40, stream=False),
    Plan(CHAT, NEGATIVE, 25, stream=True),
    Plan(EMBEDDINGS, POSITIVE, 25, fixed=FLOATS),
    Plan(EMBEDDINGS, NEGATIVE, 20, fixed=FLOATS),
    Plan(COMPLETIONS, POSITIVE, 25, stream=False),
    Plan(COMPLETIONS, NEGATIVE, 20, stream=False),
    Plan(MODELS, POSITIVE, 10),
    Plan(MODELS, NEGATIVE, 15),
    Plan(MODEL, POSITIVE, 30),
    Plan(MODEL, NEGATIVE, 20),
]


@pytest.mark.parametrize("plan", PLANS, ids=[plan.id for plan in PLANS])
def test_every_answer_is_a_valid_success_or_an_openai_error(
    target: Target, plan: Plan, status_table: StatusTable
) -> None:
    run = FuzzRun(target, plan, status_table.row(target.name, plan.label))
    run.run()

    assert run.row.statuses.total() > 0
    if run.seen:
        pytest.fail(run.report(), pytrace=False)
