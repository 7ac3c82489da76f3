"""`load_policy`: every validation error names the file, the line and the rule; a valid policy loads and decides."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from policies import PolicyEngine, PolicyError, RequestFeatures, load_policy
from proxy.config.yamlsource import load_yaml
from proxy.wire.schemas import ChatMessage

ROUTES = ["gpt4", "support-ft", "support-ft-v2", "docs"]
KNOWN = "(routes: docs, gpt4, support-ft, support-ft-v2)"


def locate(path: Sequence[str | int]) -> str:
    """A fake `file:line` whose "line" spells the path, so each test sees exactly what was located."""
    return "policy.yaml:" + ".".join(str(part) for part in path)


def load(rules: object) -> PolicyEngine:
    return load_policy(rules, ROUTES, locate=locate, rng=random.Random(0))


def error(rules: object) -> str:
    with pytest.raises(PolicyError) as caught:
        load(rules)
    return str(caught.value)


DEFAULT = {"name": "default", "route": "support-ft"}


def rule(**fields: object) -> dict[str, object]:
    return {"name": "canary", "when": {"model": "gpt-3.5*"}, **fields}


def test_a_valid_policy_loads():
    policy = load(
        [
            rule(split={"support-ft": 90, "support-ft-v2": 10}, sticky="user", fallback=["gpt4"]),
            {
                "name": "json",
                "when": {"response_format": "json"},
                "route": "docs",
                "shadow": {"route": "gpt4", "sample": 0.05},
            },
            {**DEFAULT, "fallback": ["gpt4"]},
        ]
    )
    assert policy.rules == ("canary", "json", "default")


def test_the_random_generator_is_optional():
    policy = load_policy([DEFAULT], ROUTES, locate=locate)
    features = RequestFeatures(model="m", messages=(ChatMessage(role="user", content="hi"),))
    assert policy.decide(features).route == "support-ft"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        # the section and the rules themselves
        (
            {"default": {"route": "gpt4"}},
            "policy.yaml:rules: rules must be a non-empty list of rules, got {'default': {'route': 'gpt4'}}",
        ),
        ([], "policy.yaml:rules: rules must be a non-empty list of rules, got []"),
        (None, "policy.yaml:rules: rules must be a non-empty list of rules, got None"),
        (["default"], "policy.yaml:rules.0: rule #1: must be a mapping, got 'default'"),
        # keys and names
        (
            [{"name": "x", "whne": {"stream": True}, "route": "gpt4"}, DEFAULT],
            "policy.yaml:rules.0.whne: rule 'x': unknown key 'whne' (did you mean 'when'?); a rule has: name, when, "
            "route, split, sticky, fallback, shadow",
        ),
        ([{"route": "gpt4"}], "policy.yaml:rules.0: rule '#1': has no name"),
        ([{"name": 3, "route": "gpt4"}], "policy.yaml:rules.0.name: rule '#1': name must be a non-empty string, got 3"),
        (
            [{"name": " ", "route": "gpt4"}],
            "policy.yaml:rules.0.name: rule '#1': name must be a non-empty string, got ' '",
        ),
        (
            [rule(route="gpt4"), {**DEFAULT, "name": "canary"}],
            "policy.yaml:rules.1.name: rule 'canary': duplicate rule name (first defined at policy.yaml:rules.0)",
        ),
        # route or split
        (
            [rule(route="gpt4", split={"gpt4": 1}), DEFAULT],
            "policy.yaml:rules.0: rule 'canary': has both `route` and `split`: give exactly one",
        ),
        ([rule(), DEFAULT], "policy.yaml:rules.0: rule 'canary': needs a `route` or a `split`: give exactly one"),
        (
            [rule(route="gpt5"), DEFAULT],
            f"policy.yaml:rules.0.route: rule 'canary': unknown route 'gpt5' {KNOWN}; did you mean 'gpt4'?",
        ),
        (
            [rule(route="nothing-like-it"), DEFAULT],
            f"policy.yaml:rules.0.route: rule 'canary': unknown route 'nothing-like-it' {KNOWN}",
        ),
        (
            [rule(route=["gpt4"]), DEFAULT],
            "policy.yaml:rules.0.route: rule 'canary': route must be a route name, got ['gpt4']",
        ),
        (
            [rule(split={"support-ft": 90, "gpt5": 10}), DEFAULT],
            f"policy.yaml:rules.0.split.gpt5: rule 'canary': unknown route 'gpt5' in split {KNOWN}; did you mean "
            "'gpt4'?",
        ),
        (
            [rule(split=["gpt4"]), DEFAULT],
            "policy.yaml:rules.0.split: rule 'canary': split must be a non-empty mapping of route to weight, got "
            "['gpt4']",
        ),
        (
            [rule(split={}), DEFAULT],
            "policy.yaml:rules.0.split: rule 'canary': split must be a non-empty mapping of route to weight, got {}",
        ),
        (
            [rule(split={"gpt4": 0}), DEFAULT],
            "policy.yaml:rules.0.split.gpt4: rule 'canary': the weight of 'gpt4' must be a number > 0, got 0",
        ),
        (
            [rule(split={"gpt4": -5}), DEFAULT],
            "policy.yaml:rules.0.split.gpt4: rule 'canary': the weight of 'gpt4' must be a number > 0, got -5",
        ),
        (
            [rule(split={"gpt4": "ten"}), DEFAULT],
            "policy.yaml:rules.0.split.gpt4: rule 'canary': the weight of 'gpt4' must be a number > 0, got 'ten'",
        ),
        (
            [rule(split={"gpt4": True}), DEFAULT],
            "policy.yaml:rules.0.split.gpt4: rule 'canary': the weight of 'gpt4' must be a number > 0, got True",
        ),
        # fallback
        (
            [rule(route="gpt4", fallback="docs"), DEFAULT],
            "policy.yaml:rules.0.fallback: rule 'canary': fallback must be a list of route names, got 'docs'",
        ),
        (
            [rule(route="gpt4", fallback=["docs", "gpt5"]), DEFAULT],
            f"policy.yaml:rules.0.fallback.1: rule 'canary': unknown route 'gpt5' in fallback {KNOWN}",
        ),
        (
            [rule(route="gpt4", fallback=["docs", "docs"]), DEFAULT],
            "policy.yaml:rules.0.fallback.1: rule 'canary': route 'docs' is listed twice in fallback",
        ),
        (
            [rule(route="gpt4", fallback=["docs", "gpt4"]), DEFAULT],
            "policy.yaml:rules.0.fallback.1: rule 'canary': route 'gpt4' cannot be its own fallback",
        ),
        (
            [{**DEFAULT, "fallback": ["support-ft"]}],
            "policy.yaml:rules.0.fallback.0: rule 'default': route 'support-ft' cannot be its own fallback",
        ),
        # sticky
        (
            [rule(route="gpt4", sticky="user"), DEFAULT],
            "policy.yaml:rules.0.sticky: rule 'canary': sticky only applies to a `split`",
        ),
        (
            [rule(split={"gpt4": 1, "docs": 1}, sticky="session"), DEFAULT],
            "policy.yaml:rules.0.sticky: rule 'canary': sticky must be one of: user, caller; got 'session'",
        ),
        # shadow
        (
            [rule(route="docs", shadow="gpt4"), DEFAULT],
            "policy.yaml:rules.0.shadow: rule 'canary': shadow must be a mapping with a `route` (and a `sample`), "
            "got 'gpt4'",
        ),
        (
            [rule(route="docs", shadow={"sample": 0.1}), DEFAULT],
            "policy.yaml:rules.0.shadow: rule 'canary': shadow must be a mapping with a `route`",
        ),
        (
            [rule(route="docs", shadow={"route": "gpt4", "rate": 0.1}), DEFAULT],
            "policy.yaml:rules.0.shadow.rate: rule 'canary': unknown key 'rate' in shadow; it has: route, sample",
        ),
        (
            [rule(route="docs", shadow={"route": "gpt5"}), DEFAULT],
            f"policy.yaml:rules.0.shadow.route: rule 'canary': unknown route 'gpt5' in shadow {KNOWN}",
        ),
        (
            [rule(route="docs", shadow={"route": "docs"}), DEFAULT],
            "policy.yaml:rules.0.shadow.route: rule 'canary': the shadow route 'docs' is the rule's own route",
        ),
        (
            [rule(route="docs", shadow={"route": "gpt4", "sample": 0}), DEFAULT],
            "policy.yaml:rules.0.shadow.sample: rule 'canary': sample must be a number with 0 < sample <= 1, got 0",
        ),
        (
            [rule(route="docs", shadow={"route": "gpt4", "sample": 1.5}), DEFAULT],
            "policy.yaml:rules.0.shadow.sample: rule 'canary': sample must be a number with 0 < sample <= 1, got 1.5",
        ),
        (
            [rule(route="docs", shadow={"route": "gpt4", "sample": "5%"}), DEFAULT],
            "policy.yaml:rules.0.shadow.sample: rule 'canary': sample must be a number with 0 < sample <= 1, got '5%'",
        ),
        (
            [rule(route="docs", shadow={"route": "gpt4", "sample": True}), DEFAULT],
            "policy.yaml:rules.0.shadow.sample: rule 'canary': sample must be a number with 0 < sample <= 1, got True",
        ),
        # order: unreachable rules, the default
        (
            [
                rule(route="gpt4"),
                DEFAULT,
                {"name": "late", "when": {"stream": True}, "route": "docs"},
                {"name": "last", "route": "gpt4"},
            ],
            "policy.yaml:rules.2: rule 'late': unreachable: rule 'default' above it (policy.yaml:rules.1) has no "
            "`when` and matches every request",
        ),
        (
            [rule(route="gpt4"), {"name": "json", "when": {"response_format": "json"}, "route": "docs"}],
            "policy.yaml:rules.1.when: rule 'json': the last rule must have no `when`: it is the default, taken when "
            "no other rule matches",
        ),
        # conditions
        (
            [
                {
                    "name": "hard",
                    "when": {"any": [{"has_tools": True}, {"prompt_tokens": {"gtt": 2500}}]},
                    "route": "gpt4",
                },
                DEFAULT,
            ],
            "policy.yaml:rules.0.when.any.1.prompt_tokens.gtt: rule 'hard': when.any[1].prompt_tokens.gtt: unknown "
            "operator 'gtt' (did you mean 'gt'?)",
        ),
        (
            [{"name": "code", "when": {"conversation": {"regex": "```(python"}}, "route": "gpt4"}, DEFAULT],
            "policy.yaml:rules.0.when.conversation.regex: rule 'code': when.conversation.regex: bad regular "
            "expression /```(python/: missing ), unterminated subpattern at position 3",
        ),
        (
            [{"name": "empty", "when": {}, "route": "gpt4"}, DEFAULT],
            "policy.yaml:rules.0.when: rule 'empty': when: expected a non-empty mapping of conditions, got an empty "
            "mapping",
        ),
        (
            [{"name": "typo", "when": {"modle": "gpt-4"}, "route": "gpt4"}, DEFAULT],
            "policy.yaml:rules.0.when.modle: rule 'typo': when.modle: unknown condition 'modle' (did you mean "
            "'model'?)",
        ),
    ],
)
def test_invalid_rules_are_reported_with_file_line_and_rule(rules, message):
    assert error(rules).startswith(message)


def test_the_error_carries_its_path_from_the_rules_root():
    with pytest.raises(PolicyError) as caught:
        load([rule(split={"support-ft": 90, "gpt5": 10}), DEFAULT])
    assert caught.value.path == ("rules", 0, "split", "gpt5")


def test_the_first_problem_is_reported():
    message = error(
        [rule(route="gpt5", fallback=["nope"]), {"name": "late", "when": {"stream": True}, "route": "gpt4"}]
    )
    assert "unknown route 'gpt5'" in message


# --- with a real YAML file ---------------------------------------------------------------------------------------

VALID = """\
routes: {}
rules:
  - name: long-or-tools
    when:
      any:
        - prompt_tokens: {gt: 2500}
        - has_tools: true
    route: gpt4
    fallback: [support-ft]
  - name: canary
    when: {model: ["gpt-3.5*", "support"], header: {x-team: support}}
    split: {support-ft: 90, support-ft-v2: 10}
    sticky: user
  - name: json
    when: {response_format: json}
    route: support-ft
    shadow: {route: gpt4, sample: 0.05}
  - name: default
    route: support-ft
    fallback: [gpt4]
"""


def load_file(tmp_path: Path, text: str) -> PolicyEngine:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    document = load_yaml(str(path))
    return load_policy(document.data["rules"], ROUTES, locate=document.locate, rng=random.Random(0))


def file_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        load_file(tmp_path, text)
    return str(caught.value).replace(str(tmp_path) + "/", "")


def test_a_real_file_loads_and_decides(tmp_path):
    policy = load_file(tmp_path, VALID)
    assert policy.rules == ("long-or-tools", "canary", "json", "default")
    features = RequestFeatures(
        model="gpt-3.5-turbo",
        messages=(ChatMessage(role="user", content="hi"),),
        headers={"x-team": "support"},
        user="u1",
    )
    assert policy.decide(features).rule == "canary"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "split: {support-ft: 90, support-ft-v2: 10}",
            "split: {support-ft: 90, gpt5: 10}",
            f"policy.yaml:12: rule 'canary': unknown route 'gpt5' in split {KNOWN}; did you mean 'gpt4'?",
        ),
        (
            "- prompt_tokens: {gt: 2500}",
            "- prompt_tokens: {gtt: 2500}",
            "policy.yaml:6: rule 'long-or-tools': when.any[0].prompt_tokens.gtt: unknown operator 'gtt'",
        ),
        (
            "- has_tools: true",
            "- has_tools: yes please",
            "policy.yaml:7: rule 'long-or-tools': when.any[1].has_tools: expected true or false",
        ),
        (
            "sample: 0.05",
            "sample: 5",
            "policy.yaml:17: rule 'json': sample must be a number with 0 < sample <= 1, got 5",
        ),
        (
            "    route: support-ft\n    fallback: [gpt4]\n",
            "    route: support-ft\n    fallback: [gpt4]\n    when: {stream: true}\n",
            "policy.yaml:21: rule 'default': the last rule must have no `when`",
        ),
        (
            "  - name: default\n",
            "  - name: canary\n",
            "policy.yaml:18: rule 'canary': duplicate rule name (first defined at policy.yaml:10)",
        ),
    ],
)
def test_errors_in_a_real_file_name_the_real_line(tmp_path, old, new, message):
    assert old in VALID
    assert file_error(tmp_path, VALID.replace(old, new, 1)).startswith(message)


def test_an_unreachable_rule_in_a_real_file(tmp_path):
    text = VALID.replace("  - name: json\n    when: {response_format: json}\n", "  - name: json\n", 1)
    assert file_error(tmp_path, text).startswith(
        "policy.yaml:17: rule 'default': unreachable: rule 'json' above it (policy.yaml:14) has no `when`"
    )


def test_a_bad_regex_in_a_real_file(tmp_path):
    text = VALID.replace("when: {response_format: json}", 'when: {last_user_message: {regex: "(?P<x"}}', 1)
    assert file_error(tmp_path, text).startswith(
        "policy.yaml:15: rule 'json': when.last_user_message.regex: bad regular expression /(?P<x/"
    )
