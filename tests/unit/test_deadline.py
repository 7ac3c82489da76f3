"""`proxy.deadline`: where a request's deadline comes from, and each attempt's share of what is left."""

from __future__ import annotations

import pytest

from policies import PolicyError, RequestFeatures, load_policy
from proxy.config.sections import DeadlineSettings
from proxy.deadline import TIMER_SLACK, Deadline, client_deadline, deadline_seconds
from proxy.wire.errors import InvalidRequestError
from proxy.wire.schemas import ChatMessage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SETTINGS = DeadlineSettings(default=60, max=120, fallback_share=0.5)


@pytest.mark.parametrize(("value", "seconds"), [("30", 30.0), (" 2.5 ", 2.5), ("0.001", 0.001), ("1e2", 100.0)])
def test_the_client_header_reads_as_seconds(value: str, seconds: float) -> None:
    assert client_deadline(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "0", "-1", "nan", "inf", "-inf", "1e999", "30s", "0x10"])
def test_a_header_that_is_no_positive_finite_number_is_the_callers_400(value: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        client_deadline(value)
    assert caught.value.status == 400
    assert caught.value.param == "x-turnout-timeout"
    assert caught.value.instance_code == "invalid_timeout"


def test_no_header_no_client_deadline() -> None:
    assert client_deadline(None) is None


def test_the_client_wins_within_the_max_then_the_rule_then_the_default() -> None:
    assert deadline_seconds(SETTINGS, None, None) == 60
    assert deadline_seconds(SETTINGS, 20, None) == 20
    assert deadline_seconds(SETTINGS, 20, 5) == 5
    assert deadline_seconds(SETTINGS, 20, 90) == 90  # longer than the rule's, within the max
    assert deadline_seconds(SETTINGS, None, 500) == 120  # clamped to the max


def test_a_route_before_its_fallbacks_leaves_them_their_share() -> None:
    clock = Clock()
    deadline = Deadline(100, clock.now, fallback_share=0.5, clock=clock)
    assert deadline.for_attempt(0, 3) == 50  # the whole share held back for both fallbacks
    assert deadline.for_attempt(1, 3) == 75  # a half of it for the one after
    assert deadline.for_attempt(2, 3) == 100  # the last route gets all that is left
    clock.now += 60  # the first route took 60 s (it was given at most 50: retries and backoff)
    assert deadline.for_attempt(0, 3) == -10
    assert deadline.for_attempt(1, 3) == 15
    assert deadline.for_attempt(2, 3) == 40
    assert not deadline.expired()
    clock.now += 40
    assert deadline.left() == 0
    assert deadline.expired()


def test_a_timer_that_fires_a_hair_early_is_the_deadline_all_the_same() -> None:
    # uvloop truncates a timer's delay to whole milliseconds: an attempt given all that is left (0.5004 s) ends
    # at 0.500 s, when perf_counter still shows 0.4 ms left; outside the slack the deadline has not passed.
    clock = Clock()
    deadline = Deadline(1, clock.now, clock=clock)
    clock.now += 0.9996
    assert deadline.left() > 0
    assert deadline.expired()
    clock.now -= 2 * TIMER_SLACK
    assert not deadline.expired()


def test_a_single_route_gets_the_whole_deadline_and_no_share_means_none_held_back() -> None:
    clock = Clock()
    assert Deadline(10, clock.now, fallback_share=0.9, clock=clock).for_attempt(0, 1) == 10
    assert Deadline(10, clock.now, fallback_share=0.0, clock=clock).for_attempt(0, 2) == 10


def test_the_deadline_runs_from_the_requests_arrival() -> None:
    clock = Clock()
    deadline = Deadline(10, clock.now - 4, clock=clock)  # deciding and the cache took 4 s
    assert deadline.left() == 6


def test_a_rules_deadline_reaches_its_decision_and_nonsense_is_a_load_error() -> None:
    rules = [{"name": "slow", "when": {"model": "gpt-4*"}, "route": "b", "deadline": 30}, {"name": "d", "route": "a"}]
    policy = load_policy(rules, ["a", "b"], locate=lambda path: "policy.yaml:1")
    messages = (ChatMessage(role="user", content="hi"),)
    assert policy.decide(RequestFeatures(model="gpt-4", messages=messages)).deadline == 30
    assert policy.decide(RequestFeatures(model="other", messages=messages)).deadline is None
    for bad in (0, -5, "soon", True):
        with pytest.raises(PolicyError, match="deadline must be a number of seconds > 0"):
            load_policy([{"name": "d", "route": "a", "deadline": bad}], ["a"], locate=lambda path: "policy.yaml:1")
