"""The `nearest` rule: its checks, the decision (threshold, margin, none of these), the leave-one-out
calibration, one embedding per request, and `explain` showing the competing scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from policies import PolicyEngine, PolicyError, RequestFeatures, SemanticFeatures, load_policy
from policies.features import NearestKey, RouteScore
from proxy.decide import decide_semantically, explain_semantically
from proxy.endpoints.chat import CHAT
from proxy.semantic import SemanticScorer, calibrated_threshold, top_k_mean
from routes.knowledge.embedding import LocalEmbedder
from tests.unit.test_semantic_policy import CountingEmbedder, call_of

ROUTES = ["alarm", "music", "weather", "gpt4"]
ALARM = ["set an alarm for 7am", "wake me up at six tomorrow", "cancel my morning alarm"]
MUSIC = ["play some jazz", "put on my workout playlist", "play the latest song by queen"]


def locate(path: Sequence[str | int]) -> str:
    return "policy.yaml:1"


def rules(nearest: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    return [
        {"name": "tools", "when": {"has_tools": True}, "route": "gpt4"},
        {"name": "intents", "nearest": nearest, **extra},
        {
            "name": "weather",
            "when": {"similar_to": {"examples": ["will it rain"], "threshold": 0.5}},
            "route": "weather",
        },
        {"name": "default", "route": "gpt4"},
    ]


def policy_of(**nearest: Any) -> PolicyEngine:
    routes = nearest.pop("routes", {"alarm": ALARM, "music": MUSIC})
    extra = nearest.pop("extra", {})
    return load_policy(rules({"routes": routes, **nearest}, **extra), ROUTES, locate=locate)


@pytest.mark.parametrize(
    ("nearest", "extra", "message"),
    [
        ({"routes": {"alarm": ALARM}}, {}, "at least two routes"),
        ({"routes": {"alarm": ALARM, "musik": MUSIC}}, {}, "unknown route 'musik'"),
        ({"routes": {"alarm": ALARM, "music": MUSIC}, "marg": 0.1}, {}, "unknown key 'marg'"),
        ({"routes": {"alarm": ALARM, "music": MUSIC}, "margin": -0.1}, {}, "nearest.margin: expected a number"),
        ({"routes": {"alarm": ALARM, "music": MUSIC}, "k": 0}, {}, "nearest.k: expected a whole number"),
        ({"routes": {"alarm": ALARM, "music": MUSIC}, "calibration": 2}, {}, "nearest.calibration"),
        ({"routes": {"alarm": ["one"], "music": MUSIC}}, {}, "at least two examples"),
        ({"routes": {"alarm": [], "music": MUSIC}}, {}, "non-empty list of example utterances"),
        ({"routes": {"alarm": {"examples": ALARM, "threshold": 3}, "music": MUSIC}}, {}, "from -1 to 1"),
        ({"routes": {"alarm": {"examples": ALARM, "floor": 0.3}, "music": MUSIC}}, {}, "unknown key 'floor'"),
        ({"routes": {"alarm": ALARM, "music": MUSIC}}, {"route": "gpt4"}, "it has no `route`"),
        ({"routes": {"alarm": ALARM, "music": MUSIC}}, {"split": {"gpt4": 1}}, "it has no `split`"),
        ({"routes": "alarm"}, {}, "nearest.routes"),
    ],
)
def test_bad_nearest_blocks_are_refused_with_the_file_line_and_rule(
    nearest: dict[str, Any], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(PolicyError, match=message) as error:
        load_policy(rules(nearest, **extra), ROUTES, locate=locate)
    assert str(error.value).startswith("policy.yaml:1: rule 'intents': ")


def test_a_single_example_is_allowed_with_a_threshold_of_its_own() -> None:
    policy = policy_of(routes={"alarm": {"examples": ["wake me"], "threshold": 0.4}, "music": MUSIC})
    assert "alarm" in policy.route_names


def scored(policy: PolicyEngine, *scores: tuple[str, float, float]) -> SemanticFeatures:
    (key,) = policy.semantic_needs.nearest
    return SemanticFeatures(
        similarity={examples: (0.0, examples[0]) for examples in policy.semantic_needs.examples},
        nearest={key: tuple(RouteScore(route, score, calibrated, "ex") for route, score, calibrated in scores)},
    )


def features() -> RequestFeatures:
    return RequestFeatures(model="gpt-4o")


def decide(policy: PolicyEngine, semantic: SemanticFeatures) -> tuple[str, str]:
    decision = policy.decide(features().with_semantic(semantic))
    return decision.route, decision.rule


def test_the_closest_route_wins_whatever_the_order_written() -> None:
    policy = policy_of(extra={"fallback": ["gpt4", "music"]})
    assert decide(policy, scored(policy, ("music", 0.8, 0.5), ("alarm", 0.6, 0.5))) == ("music", "intents")
    decision = policy.decide(features().with_semantic(scored(policy, ("music", 0.8, 0.5), ("alarm", 0.6, 0.5))))
    assert decision.fallbacks == ("gpt4",)  # the chosen route is not its own fallback
    assert decision.reason.endswith("nearest route: music")


def test_below_its_calibrated_threshold_is_none_of_these_and_falls_through() -> None:
    policy = policy_of()
    assert decide(policy, scored(policy, ("alarm", 0.45, 0.5), ("music", 0.1, 0.3))) == ("gpt4", "default")
    assert decide(policy, scored(policy, ("alarm", 0.5, 0.5), ("music", 0.1, 0.3))) == ("alarm", "intents")


def test_a_route_threshold_of_its_own_replaces_the_calibrated_one() -> None:
    policy = policy_of(routes={"alarm": {"examples": ALARM, "threshold": 0.2}, "music": MUSIC})
    assert decide(policy, scored(policy, ("alarm", 0.3, 0.9), ("music", 0.1, 0.3))) == ("alarm", "intents")
    assert decide(policy, scored(policy, ("alarm", 0.19, 0.0), ("music", 0.1, 0.0))) == ("gpt4", "default")


def test_a_lead_under_the_margin_is_none_of_these() -> None:
    policy = policy_of(margin=0.05)
    assert decide(policy, scored(policy, ("alarm", 0.70, 0.5), ("music", 0.66, 0.5))) == ("gpt4", "default")
    assert decide(policy, scored(policy, ("alarm", 0.72, 0.5), ("music", 0.66, 0.5))) == ("alarm", "intents")
    default = policy_of()  # the shipped margin, 0.01
    assert decide(default, scored(default, ("alarm", 0.700, 0.5), ("music", 0.695, 0.5))) == ("gpt4", "default")


def test_the_defaults_are_in_the_key_the_proxy_scores() -> None:
    (key,) = policy_of().semantic_needs.nearest
    assert key == NearestKey(routes=(("alarm", tuple(ALARM)), ("music", tuple(MUSIC))), k=3, calibration=0.2)
    (other,) = policy_of(margin=0.3).semantic_needs.nearest
    assert other == key  # the margin is the engine's: tuning it needs no new scores


def unit(*rows: Sequence[float]) -> np.ndarray:
    matrix = np.array(rows, dtype=np.float32)
    normalised: np.ndarray = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return normalised


def test_leave_one_out_calibration_scores_each_example_against_the_others() -> None:
    # cos(a, b) = 0.8, cos(a, c) = 0.6, cos(b, c) = 0.96 (c is between a and b... worked by hand below)
    examples = unit([1.0, 0.0], [0.8, 0.6], [0.6, 0.8])
    gram = examples @ examples.T
    assert gram[0, 1] == pytest.approx(0.8)
    assert gram[0, 2] == pytest.approx(0.6)
    assert gram[1, 2] == pytest.approx(0.96)
    # k = 1: each example's best other: a 0.8, b 0.96, c 0.96; the 0 quantile is the least of them
    assert calibrated_threshold(examples, 1, 0.0) == pytest.approx(0.8)
    assert calibrated_threshold(examples, 1, 1.0) == pytest.approx(0.96)
    # k = 2 (all the others): a (0.8 + 0.6) / 2 = 0.7, b 0.88, c 0.78; the median is 0.78
    assert calibrated_threshold(examples, 2, 0.5) == pytest.approx(0.78)
    # k larger than the others: the same as all of them, never the left-out example itself
    assert calibrated_threshold(examples, 5, 0.5) == pytest.approx(0.78)
    assert top_k_mean(np.array([[0.1, 0.9, 0.5]]), 2)[0] == pytest.approx(0.7)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder(256)


async def test_the_scorer_calibrates_at_load_and_embeds_each_request_once(embedder: LocalEmbedder) -> None:
    policy = policy_of()
    counting = CountingEmbedder(embedder)
    scorer = SemanticScorer(policy.semantic_needs, counting, {})
    await scorer.prepare()
    assert counting.calls == [len(ALARM) + len(MUSIC) + 1]  # every example list of the policy, in one batch
    decide_args: dict[str, Any] = {"policy": policy, "named": {}, "default_route": "gpt4", "scorer": scorer}
    decision = await decide_semantically(CHAT, call_of("please wake me at 5 am"), **decide_args)
    assert (decision.route, decision.rule) == ("alarm", "intents")
    assert counting.calls[1:] == [1]  # one embedding, for the nearest rule and the similar_to after it
    decision = await decide_semantically(CHAT, call_of("play a song by abba"), **decide_args)
    assert (decision.route, decision.rule) == ("music", "intents")
    decision = await decide_semantically(
        CHAT, call_of("x", tools=[{"type": "function", "function": {"name": "f"}}]), **decide_args
    )
    assert decision.rule == "tools"
    assert counting.calls[1:] == [1, 1]
    semantic = await scorer.features(call_of("wake me up").question)
    (key,) = policy.semantic_needs.nearest
    scores = semantic.nearest[key]
    assert [s.score for s in scores] == sorted((s.score for s in scores), reverse=True)
    alarm = next(s for s in scores if s.route == "alarm")
    vectors = (await embedder.embed(ALARM)).vectors
    assert alarm.calibrated == pytest.approx(calibrated_threshold(vectors, 3, 0.2))
    question = (await embedder.embed(["wake me up"])).vectors[0]
    assert alarm.score == pytest.approx(float(np.mean(np.sort(vectors @ question)[::-1][:3])), abs=1e-6)


async def test_explain_shows_the_top_routes_the_margin_and_the_later_rules_scores(embedder: LocalEmbedder) -> None:
    policy = policy_of()
    scorer = SemanticScorer(policy.semantic_needs, embedder, {})
    args: dict[str, Any] = {"policy": policy, "named": {}, "default_route": "gpt4", "scorer": scorer}
    decision, explanation = await explain_semantically(CHAT, call_of("please wake me at 5 am"), **args)
    assert decision.route == "alarm"
    assert explanation is not None
    text = explanation.render()
    assert "intents: matched" in text
    assert "+ nearest: alarm " in text
    assert ", leads by " in text
    assert "+ alarm: " in text
    assert "- music: " in text
    assert "closest example: " in text
    # the similar_to rule after the match is explained for its score, marked as not tried
    assert "weather: no match (not tried: 'intents' decided; shown for its scores)" in text
    assert "similar_to: " in text
    assert "default" not in text.split("rules, in order:")[1]  # the catch-all after the match has no scores
    _, none = await explain_semantically(CHAT, call_of("Who won the battle of Hastings?"), **args)
    assert none is not None
    assert none.decision.rule == "default"
    assert "none of these: " in none.render()
    assert any(line.startswith("intents: none of these") for line in none.scores())


async def test_routes_of_different_sizes_are_scored_as_each_alone(embedder: LocalEmbedder) -> None:
    routes = {"alarm": ALARM[:2], "music": MUSIC, "weather": ["will it rain", "is it sunny", "how cold", "wind?"]}
    policy = policy_of(routes=routes)
    scorer = SemanticScorer(policy.semantic_needs, embedder, {})
    semantic = await scorer.features(call_of("wake me up").question)
    (key,) = policy.semantic_needs.nearest
    question = (await embedder.embed(["wake me up"])).vectors[0]
    for score in semantic.nearest[key]:
        similarities = (await embedder.embed(routes[score.route])).vectors @ question
        top = np.sort(similarities)[::-1][:3]  # the alarm route has 2: their mean, no padding in it
        assert score.score == pytest.approx(float(top.mean()), abs=1e-6)
        assert score.closest == routes[score.route][int(np.argmax(similarities))]
