"""What a policy decision costs: `python -m tests.bench.policy_decision`.

A policy of 20 realistic rules (globs on the model, headers, metadata, keywords and regexes on the text,
token and temperature bounds, all / any / not, a split and a shadow) where the request matches none but
the 19th. Prints, with `timeit` (best of several repeats), microseconds per:

- `decide` on features already extracted (the lazy text and token estimate already computed),
- `extract_features` + `decide` on a fresh request each time (the token estimate and the text searches
  paid once, as a real request pays them),
- `extract_features` alone,
- `explain` (for comparison; never on the request path),

then where the time goes: each rule's own cost (a policy of that rule and the default, less a policy of
the default alone).

Never part of the test suite: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import random
import timeit

import yaml

from policies import PolicyEngine, extract_features, load_policy
from proxy.wire.schemas import ChatMessage, ChatRequest

ROUTES = ["gpt4", "support-ft", "support-ft-v2", "docs", "cheap"]

RULES = """
- name: blocked-tenant
  when: {header: {x-tenant: ["banned-*", "trial-expired"]}}
  route: cheap
- name: internal-eval
  when: {caller: ["eval-*", "ci"]}
  route: gpt4
- name: explicit-gpt4
  when: {model: ["gpt-4", "gpt-4-*", "gpt-4o*"]}
  route: gpt4
  fallback: [support-ft]
- name: very-long
  when: {prompt_tokens: {gt: 6000}}
  route: gpt4
- name: tools
  when: {any: [{has_tools: true}, {response_format: json_schema}]}
  route: gpt4
  fallback: [support-ft]
- name: creative
  when: {temperature: {gte: 1.2}, n: {gt: 1}}
  route: gpt4
- name: legal
  when: {last_user_message: {keywords: [lawsuit, attorney, subpoena, gdpr, "data protection"]}}
  route: gpt4
- name: code
  when: {conversation: {regex: "```|\\\\bdef |\\\\bclass |\\\\bSELECT\\\\b"}}
  route: gpt4
- name: vip
  when: {metadata: {tier: [gold, platinum]}}
  route: gpt4
  fallback: [support-ft]
- name: eu-region
  when: {header: {x-region: "eu-*"}, metadata: {residency: strict}}
  route: support-ft
- name: docs-questions
  when:
    all:
      - last_user_message: {keywords: [documentation, docs, manual, "how do i", configure]}
      - not: {stream: true}
  route: docs
  fallback: [support-ft]
- name: streaming-long
  when: {stream: true, prompt_tokens: {gt: 2500}}
  route: gpt4
- name: beta-users
  when: {user: ["beta-*", "staff-*"]}
  split: {support-ft: 50, support-ft-v2: 50}
- name: json-mode
  when: {response_format: json_object}
  route: support-ft
  shadow: {route: gpt4, sample: 0.05}
- name: mobile-app
  when: {header: {user-agent: ["*iOS*", "*Android*"]}, model: "gpt-3.5*"}
  route: cheap
- name: low-temperature-short
  when: {temperature: {lte: 0.1}, prompt_tokens: {lt: 200}}
  route: cheap
- name: escalation
  when: {any: [{last_user_message: {regex: "(?i)\\\\b(manager|supervisor|escalate)\\\\b"}}, {metadata: {priority: p1}}]}
  route: gpt4
- name: german-market
  when: {header: {accept-language: ["de*", "at*"]}}
  route: support-ft
- name: support-canary
  when: {model: ["gpt-3.5*", "support"], header: {x-team: support}}
  split: {support-ft: 90, support-ft-v2: 10}
  sticky: user
  fallback: [gpt4]
- name: default
  route: support-ft
  fallback: [gpt4]
"""

SYSTEM = (
    "You are a helpful support assistant for Acme Outdoor. Answer briefly, be friendly, and never promise "
    "refunds outside the 30-day policy. If you do not know, say so and offer to open a ticket."
)
QUESTION = (
    "Hi there, I ordered a pair of running shoes last Tuesday and the tracking page still says the label was "
    "created but nothing has moved since. Could you check whether the parcel actually left the warehouse?"
)
HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "OpenAI/Python 1.54.0",
    "Accept": "application/json",
    "X-Team": "support",
    "X-Tenant": "acme",
    "X-Region": "us-east-1",
    "Accept-Language": "en-US,en;q=0.9",
    "X-Request-Id": "req_0123456789abcdef",
}


def request(index: int) -> ChatRequest:
    return ChatRequest(
        model="gpt-3.5-turbo",
        messages=[
            ChatMessage(role="system", content=SYSTEM),
            ChatMessage(role="user", content="Where is my order #48213?"),
            ChatMessage(role="assistant", content="Let me check that for you. Could you confirm the e-mail address?"),
            ChatMessage(role="user", content=f"{QUESTION} (attempt {index})"),
        ],
        user=f"user-{index}",
        metadata={"tier": "silver", "source": "web"},
        temperature=0.7,
    )


def per_call_us(statement: object, number: int, repeat: int = 7) -> float:
    timer = timeit.Timer(statement)  # type: ignore[arg-type] # a callable, which timeit accepts
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def run(engine: PolicyEngine, number: int) -> None:
    features = extract_features(request(0), HEADERS, "web-frontend")
    decision = engine.decide(features)
    print(f"{len(engine.rules)} rules; the request matches rule {engine.rules.index(decision.rule) + 1}: {decision}")
    requests = [request(index) for index in range(number)]
    fresh = iter(requests * 8)

    def extract_and_decide() -> None:
        engine.decide(extract_features(next(fresh), HEADERS, "web-frontend"))

    rows = [
        ("decide (features extracted, lazy fields warm)", per_call_us(lambda: engine.decide(features), number)),
        ("extract_features + decide (fresh request)", per_call_us(extract_and_decide, number)),
        ("extract_features alone", per_call_us(lambda: extract_features(requests[0], HEADERS, None), number)),
        ("explain (not on the request path)", per_call_us(lambda: engine.explain(features), number // 10 or 1)),
    ]
    for label, micros in rows:
        print(f"{label:<48} {micros:8.1f} µs")


def per_rule(rules: list[dict[str, object]], number: int) -> None:
    features = extract_features(request(0), HEADERS, "web-frontend")
    features.prompt_tokens, features.conversation_lower, features.last_user_lower  # noqa: B018 - warm the lazy fields

    def cost(policy: list[dict[str, object]]) -> float:
        engine = load_policy(policy, ROUTES, locate=lambda path: f"<bench>:{path}", rng=random.Random(0))
        return per_call_us(lambda: engine.decide(features), number)

    base = cost(rules[-1:])
    costs = sorted(((cost([rule, rules[-1]]) - base, str(rule["name"])) for rule in rules[:-1]), reverse=True)
    print(f"each rule's own cost (the default alone: {base:.1f} µs):")
    for micros, name in costs:
        print(f"  {name:<24} {micros:6.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--number", type=int, default=2000, help="calls per timing repeat")
    args = parser.parse_args()
    rules = yaml.safe_load(RULES)
    engine = load_policy(rules, ROUTES, locate=lambda path: f"<bench>:{path}", rng=random.Random(0))
    run(engine, args.number)
    per_rule(rules, args.number)


if __name__ == "__main__":
    main()
