"""`load_experiments`: a rule's `parity:` and `canary:` blocks, and their errors with file, line and rule."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from policies import PolicyError, load_experiments, load_policy

ROUTES = ["gpt4", "ft35", "judge"]


def locate(path: Sequence[str | int]) -> str:
    return "policy.yaml:" + ".".join(str(part) for part in path)


def rules(**blocks: object) -> list[dict[str, object]]:
    return [{"name": "classify", "when": {"model": "x"}, "route": "gpt4", **blocks}, {"name": "d", "route": "ft35"}]


PARITY = {"reference": "gpt4", "evaluators": ["exact"], "margin": 0.9, "min_pairs": 5}
CANARY = {"candidate": "ft35", "steps": [10, 50, 100], "min_pairs": 5}


def error(raw: list[dict[str, object]]) -> str:
    load_policy(raw, ROUTES, locate=locate)  # the rule loader lets the blocks through
    with pytest.raises(PolicyError) as caught:
        load_experiments(raw, ROUTES, locate=locate)
    return str(caught.value)


def test_a_canary_rule_reads_both_blocks_and_names_its_routes():
    found = load_experiments(rules(parity=PARITY, canary=CANARY), ROUTES, locate=locate)
    experiment = found["classify"]
    assert (experiment.candidate, experiment.reference, experiment.route) == ("ft35", "gpt4", "gpt4")
    assert experiment.canary is not None
    assert experiment.canary.steps == [10, 50, 100]
    assert experiment.parity.margin == 0.9
    assert list(found) == ["classify"]


def test_parity_alone_makes_the_rules_route_the_candidate():
    raw = [{"name": "d", "route": "ft35", "parity": PARITY}]
    experiment = load_experiments(raw, ROUTES, locate=locate)["d"]
    assert (experiment.candidate, experiment.reference, experiment.canary) == ("ft35", "gpt4", None)


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        (
            {"parity": PARITY, "canary": {**CANARY, "candidate": "ft36"}},
            "policy.yaml:rules.0.canary: rule 'classify': canary.candidate: no route is named 'ft36'",
        ),
        (
            {"parity": PARITY, "canary": {**CANARY, "steps": [50, 10]}},
            "policy.yaml:rules.0.canary: rule 'classify': canary: the steps must increase: [50, 10]",
        ),
        (
            {"parity": {**PARITY, "evaluators": ["exakt"]}},
            "rule 'classify': Invalid enum value 'exakt' - at `parity.evaluators[0]`",
        ),
        ({"canary": CANARY}, "rule 'classify': canary needs a parity block"),
        ({"parity": PARITY}, "the reference 'gpt4' is the rule's own route"),
        (
            {"parity": {**PARITY, "reference": "judge"}, "canary": CANARY},
            "with a canary, the rule's route is the reference: route 'gpt4' is not parity.reference 'judge'",
        ),
        ({"parity": {**PARITY, "margin": 1.5}}, "Expected `float` < 1.0 - at `parity.margin`"),
    ],
)
def test_bad_blocks_are_reported_with_file_line_and_rule(blocks, message):
    assert message in error(rules(**blocks))


def test_a_split_rule_cannot_have_the_blocks():
    raw = [{"name": "ab", "split": {"gpt4": 1, "ft35": 1}, "parity": PARITY}]
    load_policy(raw, ROUTES, locate=locate)
    with pytest.raises(PolicyError, match="rule 'ab': parity and canary need a rule with one `route`"):
        load_experiments(raw, ROUTES, locate=locate)


def test_an_unknown_key_in_the_rule_is_still_refused():
    with pytest.raises(PolicyError, match="unknown key 'parityy'"):
        load_policy(rules(parityy=PARITY), ROUTES, locate=locate)


def test_the_judges_prompt_is_read_at_load_relative_to_the_policy(tmp_path):
    judge = {**PARITY, "judge": {"route": "judge", "prompt": "judge.md"}}
    with pytest.raises(PolicyError, match=r"parity\.judge\.prompt: .*judge\.md: cannot read the judge's prompt"):
        load_experiments(rules(parity=judge, canary=CANARY), ROUTES, locate=locate, base=tmp_path)
    (tmp_path / "judge.md").write_text("Compare $answer_a with $answer_b.", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"must use \$request, \$answer_a and \$answer_b \(missing \['request'\]"):
        load_experiments(rules(parity=judge, canary=CANARY), ROUTES, locate=locate, base=tmp_path)
    (tmp_path / "judge.md").write_text("$request: $answer_a or $answer_b? VERDICT: A, B or TIE", encoding="utf-8")
    experiment = load_experiments(rules(parity=judge, canary=CANARY), ROUTES, locate=locate, base=tmp_path)["classify"]
    assert experiment.judge_prompt is not None
    assert experiment.judge_prompt.template.startswith("$request: ")
    shipped = {**PARITY, "judge": {"route": "judge"}}
    experiment = load_experiments(rules(parity=shipped, canary=CANARY), ROUTES, locate=locate)["classify"]
    assert experiment.judge_prompt is not None
    assert "VERDICT:" in experiment.judge_prompt.template
