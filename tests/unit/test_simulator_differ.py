"""The simulator's `x-simulated-differ` and `x-simulated-reply`: a model that disagrees on a share, a fixed reply."""

from __future__ import annotations

import pytest

from routes.simulator.answers import Answer
from routes.simulator.limits import SimulatorRejectedError, differs, reply_of


def messages(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {index}"}]


def test_a_share_of_prompts_differs_always_the_same_ones_and_only_for_the_model_named():
    headers = {"x-simulated-differ": "20", "x-simulated-differ-for": "ft-35"}
    chosen = [differs(headers, "ft-35", messages(i)) for i in range(1000)]
    assert 150 < sum(chosen) < 250  # about 20% of distinct prompts
    assert chosen == [differs(headers, "ft-35", messages(i)) for i in range(1000)]  # the same ones every time
    assert not any(differs(headers, "gpt-4", messages(i)) for i in range(100))
    assert not any(differs({}, "ft-35", messages(i)) for i in range(100))
    assert all(differs({"x-simulated-differ": "100"}, "gpt-4", messages(i)) for i in range(100))


@pytest.mark.parametrize("percent", ["101", "-1", "ten", "2.5"])
def test_a_bad_percent_is_refused(percent):
    with pytest.raises(SimulatorRejectedError, match="x-simulated-differ must be a percent"):
        differs({"x-simulated-differ": percent}, "m", [])


def test_a_differing_answer_has_other_words_and_a_reply_is_answered_as_given():
    body = {"model": "ft-35", "messages": messages(1)}
    usual = Answer(body=body, latency=0, interval=0, chunks=6, fault="")
    other = Answer(body=body, latency=0, interval=0, chunks=6, fault="", differs=True)
    assert "".join(usual.pieces()) == "This is a simulated answer from"
    assert "".join(other.pieces()) != "".join(usual.pieces())
    given = Answer(body=body, latency=0, interval=0, chunks=6, fault="", reply="VERDICT: TIE")
    assert given.pieces() == ["VERDICT: TIE"]
    assert reply_of({"x-simulated-reply": "VERDICT: A", "x-simulated-reply-for": "judge"}, "judge") == "VERDICT: A"
    assert reply_of({"x-simulated-reply": "VERDICT: A", "x-simulated-reply-for": "judge"}, "gpt-4") is None
    with pytest.raises(SimulatorRejectedError, match="over 4096"):
        reply_of({"x-simulated-reply": "x" * 4097}, "judge")
