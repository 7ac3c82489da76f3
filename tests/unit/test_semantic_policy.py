"""Meaning-based conditions: compiling, laziness (one embedding per request, none when not reached), the policy
file's knowledge checks, and `turnout explain` showing the scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from policies import PolicyEngine, PolicyError, RequestFeatures, SemanticFeatures, extract_features, load_policy
from proxy.cli.main import main
from proxy.config.errors import ConfigError
from proxy.config.settings import load_settings
from proxy.decide import decide_semantically
from proxy.endpoints.chat import CHAT
from proxy.semantic import SemanticScorer
from routes import Call, ChatCall, HybridRetriever, KnowledgeIndex
from routes.knowledge.embedding import Embedded, LocalEmbedder, Question
from routes.knowledge.indexer import add_files
from routes.rag import RagSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "examples" / "knowledge-base.yaml"
RULES = [
    {"name": "tools", "when": {"has_tools": True}, "route": "gpt4"},
    {
        "name": "billing",
        "when": {
            "any": [
                {
                    "similar_to": {
                        "examples": ["Why was I charged twice?", "My card was billed two times"],
                        "threshold": 0.6,
                    }
                },
                {"similar_to": {"examples": ["Where is my invoice?"], "threshold": 0.7}},
            ]
        },
        "route": "docs",
    },
    {"name": "documented", "when": {"retrieval_score": {"route": "docs", "gte": 0.4}}, "route": "docs"},
    {"name": "default", "route": "support-ft"},
]


class CountingEmbedder:
    """The local model, counting the calls and texts it embeds."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner = inner
        self.calls: list[int] = []
        self.name, self.dimension = inner.name, inner.dimension

    async def embed(self, texts: Sequence[str]) -> Embedded:
        self.calls.append(len(texts))
        return await self.inner.embed(texts)


def locate(path: Sequence[str | int]) -> str:
    return "policy.yaml:1"


def call_of(content: str, **extra: object) -> ChatCall:
    raw = msgspec.json.encode({"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **extra})
    return Call(endpoint=CHAT, body=CHAT.decode(raw), headers={})


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder(256)


@pytest.fixture
async def scorer(tmp_path: Path, embedder: LocalEmbedder) -> tuple[SemanticScorer, CountingEmbedder]:
    (tmp_path / "refunds.md").write_text("# Refunds\n\nRefunds are paid back to the card within 30 days.\n")
    empty = KnowledgeIndex.empty(tmp_path / "index", embedder.name, embedder.dimension)
    index, _ = await add_files(empty, [tmp_path / "refunds.md"], embedder)
    counting = CountingEmbedder(embedder)
    policy = load_policy(RULES, ["gpt4", "docs", "support-ft"], locate=locate)
    return SemanticScorer(policy.semantic_needs, counting, {"docs": HybridRetriever(index, embedder)}), counting


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"similar_to": {"examples": ["a"]}}, "needs `examples` and a `threshold`"),
        ({"similar_to": {"examples": ["a"], "threshold": 2}}, "from -1 to 1"),
        ({"similar_to": {"examples": [], "threshold": 0.5}}, "non-empty list of example utterances"),
        ({"similar_to": {"examples": ["a"], "threshold": 0.5, "k": 1}}, "unknown key 'k'"),
        ({"retrieval_score": {"gt": 0.5}}, "needs the `route`"),
        ({"retrieval_score": {"route": "docs"}}, "needs a bound"),
        ({"retrieval_score": {"route": "docs", "eq": 0.5}}, "unknown operator 'eq'"),
    ],
)
def test_bad_meaning_based_conditions_are_refused(when: object, message: str) -> None:
    rules = [{"name": "r", "when": when, "route": "docs"}, {"name": "default", "route": "docs"}]
    with pytest.raises(PolicyError, match=message):
        load_policy(rules, ["docs"], locate=locate)


def one_pass(policy: PolicyEngine, features: RequestFeatures, semantic: SemanticFeatures) -> tuple[str, int]:
    """Drive `policy.decisions` as the proxy does: the rule it returns, and how many times it asked (0 or 1)."""
    steps = policy.decisions(features)
    try:
        assert next(steps) == policy.semantic_needs
    except StopIteration as settled:
        return settled.value.rule, 0
    with pytest.raises(StopIteration) as done:  # it never asks twice
        steps.send(semantic)
    return done.value.value.rule, 1


def scores(policy: PolicyEngine, similarity: float, retrieval: float | None) -> SemanticFeatures:
    """The numbers an embedding would give: the engine only compares them."""
    needs = policy.semantic_needs
    return SemanticFeatures(
        similarity={examples: (similarity, examples[0]) for examples in needs.examples},
        retrieval=dict.fromkeys(needs.retrieval_routes, retrieval),
    )


def test_the_engine_asks_for_semantic_features_only_when_a_rule_reaches_them() -> None:
    policy = load_policy(RULES, ["gpt4", "docs", "support-ft"], locate=locate)
    needs = policy.semantic_needs
    assert needs.examples == {("Why was I charged twice?", "My card was billed two times"), ("Where is my invoice?",)}
    assert needs.retrieval_routes == {"docs"}
    with_tools = call_of("refund please", tools=[{"type": "function", "function": {"name": "f"}}])
    assert policy.decide(extract_features(with_tools.request, {}, None)).rule == "tools"
    assert one_pass(policy, extract_features(with_tools.request, {}, None), scores(policy, 0.9, 0.9)) == ("tools", 0)
    plain = extract_features(call_of("refund please").request, {}, None)
    with pytest.raises(LookupError, match=r"PolicyEngine\.decisions"):
        policy.decide(plain)
    with pytest.raises(LookupError, match=r"PolicyEngine\.explanations"):
        policy.explain(plain)
    assert one_pass(policy, plain, scores(policy, 0.1, 0.45)) == ("documented", 1)
    assert plain.has_semantic  # attached by the pass: `decide` and `explain` now read them
    assert policy.decide(plain).rule == "documented"
    assert policy.explain(plain).decision.rule == "documented"


SIMILAR = {"similar_to": {"examples": ["Why was I charged twice?"], "threshold": 0.6}}


@pytest.mark.parametrize(
    ("when", "tools", "similarity", "expected"),
    [
        # the conditions that need no meaning are tested first, whatever the order they are written in
        ({**SIMILAR, "has_tools": True}, False, 0.9, ("default", 0)),
        ({**SIMILAR, "has_tools": True}, True, 0.9, ("r", 1)),
        ({**SIMILAR, "has_tools": True}, True, 0.1, ("default", 1)),
        # inside any / all / not, the verdict is settled without the meaning where it can be
        ({"any": [SIMILAR, {"has_tools": True}]}, True, 0.1, ("r", 0)),
        ({"any": [SIMILAR, {"has_tools": True}]}, False, 0.9, ("r", 1)),
        ({"all": [SIMILAR, {"has_tools": True}]}, False, 0.9, ("default", 0)),
        ({"not": {"any": [{"has_tools": True}, SIMILAR]}}, True, 0.1, ("default", 0)),
        ({"not": {"any": [{"has_tools": True}, SIMILAR]}}, False, 0.1, ("r", 1)),
        ({"not": SIMILAR, "stream": False}, False, 0.9, ("default", 1)),
    ],
)
def test_a_rule_pays_for_the_meaning_only_when_its_verdict_depends_on_it(when, tools, similarity, expected) -> None:
    rules = [{"name": "r", "when": when, "route": "docs"}, {"name": "default", "route": "gpt4"}]
    policy = load_policy(rules, ["gpt4", "docs"], locate=locate)
    extra = {"tools": [{"type": "function", "function": {"name": "f"}}]} if tools else {}
    features = extract_features(call_of("charged twice", **extra).request, {}, None)
    assert one_pass(policy, features, scores(policy, similarity, None)) == expected
    assert policy.explain(features.with_semantic(scores(policy, similarity, None))).decision.rule == expected[0]


def test_later_rules_read_the_features_the_first_meaning_based_rule_asked_for() -> None:
    rules = [
        {"name": "similar", "when": SIMILAR, "route": "docs"},
        {"name": "tools", "when": {"has_tools": True}, "route": "gpt4"},
        {"name": "documented", "when": {"retrieval_score": {"route": "docs", "gt": 0.5}}, "route": "docs"},
        {"name": "default", "route": "gpt4"},
    ]
    policy = load_policy(rules, ["gpt4", "docs"], locate=locate)
    features = extract_features(call_of("where are the docs?").request, {}, None)
    assert one_pass(policy, features, scores(policy, 0.1, 0.8)) == ("documented", 1)


async def test_one_embedding_per_request_and_none_before_a_meaning_based_rule(scorer) -> None:
    semantic, counting = scorer
    policy = load_policy(RULES, ["gpt4", "docs", "support-ft"], locate=locate)

    async def decide(call: ChatCall) -> str:
        decision = await decide_semantically(CHAT, call, policy=policy, named={}, default_route="gpt4", scorer=semantic)
        return decision.rule

    await semantic.prepare()
    assert counting.calls == [3]  # the three examples, in one batch, once
    await semantic.prepare()
    assert counting.calls == [3]
    assert await decide(call_of("Refund!", tools=[{"type": "function", "function": {"name": "f"}}])) == "tools"
    assert counting.calls == [3]
    assert await decide(call_of("I was charged twice this month")) == "billing"
    assert await decide(call_of("When are refunds paid back to the card?")) == "documented"
    assert await decide(call_of("Compose a haiku about autumn leaves")) == "default"
    assert counting.calls == [3, 1, 1, 1]  # one query embedding for all three conditions of each request


async def test_scores_are_cosine_similarities(scorer) -> None:
    semantic, _ = scorer
    features = await semantic.features(Question("My card was billed two times"))
    score, closest = features.similarity[("Why was I charged twice?", "My card was billed two times")]
    assert closest == "My card was billed two times"
    assert score == pytest.approx(1.0, abs=1e-5)
    docs = features.retrieval["docs"]
    assert docs is not None
    assert 0 < docs < 1


# --- the policy file ------------------------------------------------------------------------------------


def policy_file(tmp_path: Path, routes: str, rules: str = "", embedder: str = "") -> str:
    text = (
        "upstreams:\n  openai: {base_url: 'http://127.0.0.1:9/v1'}\n"
        f"{embedder}routes:\n  ft: {{upstream: openai, model: ft}}\n{routes}"
        f"rules:\n{rules}  - name: default\n    route: ft\n"
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(path: str) -> object:
    return load_settings({"TURNOUT_CONFIG": path})


def test_a_rag_route_loads_its_index_relative_to_the_file(tmp_path: Path) -> None:
    KnowledgeIndex.empty(tmp_path / "kb", LocalEmbedder.NAME, 256).save()
    settings = load_settings(
        {"TURNOUT_CONFIG": policy_file(tmp_path, "  docs: {kind: rag, index: kb, answer_with: ft}\n")}
    )
    deployment = settings.deployment
    assert deployment.routes["docs"] == RagSettings(index="kb", answer_with="ft")
    assert deployment.indexes["docs"].directory == (tmp_path / "kb").resolve()
    assert deployment.model_names()["docs"] == "docs"


@pytest.mark.parametrize(
    ("routes", "rules", "embedder", "message"),
    [
        (
            "  docs: {kind: rag, index: nowhere, answer_with: ft}\n",
            "",
            "",
            r"policy.yaml:5: route 'docs': no knowledge index in",
        ),
        (
            "  docs: {kind: rag, index: kb, answer_with: ft}\n",
            "",
            "embedder: {dimension: 128}\n",
            r"made by wordllama/l2_supercat \(256 dimensions\), not by the configured embedder "
            r"wordllama/l2_supercat \(128 dimensions\)",
        ),
        (
            "  docs: {kind: rag, index: kb, answer_with: ft}\n",
            "",
            "embedder: {upstream: openai, model: text-embedding-3-small, dimension: 256}\n",
            "not by the configured embedder text-embedding-3-small",
        ),
        ("  docs: {kind: rag, index: kb, answer_with: docs2}\n", "", "", "answer_with must be a chat route"),
        ("  docs: {kind: rag, index: kb, answer_with: ft, top_k: 0}\n", "", "", r"routes.docs.top_k"),
        (
            "",
            "  - name: r\n    when: {retrieval_score: {route: ft, gt: 0.5}}\n    route: ft\n",
            "",
            "retrieval_score names route 'ft', which is not a rag route",
        ),
        ("", "", "embedder: {upstream: nowhere, model: m}\n", "embedder: unknown upstream 'nowhere'"),
        ("", "", "embedder: {dimension: 300}\n", "64, 128 or 256 dimensions"),
        (  # savings are priced against the baseline's model, and a rag route has none
            "  docs: {kind: rag, index: kb, answer_with: ft}\n",
            "",
            "baseline: docs\n",
            "baseline 'docs' is a rag route, not a chat route",
        ),
    ],
)
def test_knowledge_mistakes_make_the_file_invalid(tmp_path: Path, routes, rules, embedder, message) -> None:
    KnowledgeIndex.empty(tmp_path / "kb", LocalEmbedder.NAME, 256).save()
    with pytest.raises(ConfigError, match=message):
        load(policy_file(tmp_path, routes, rules, embedder))


def test_check_and_explain_show_the_example_policy_with_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-placeholder")
    assert main(["check", str(EXAMPLE)]) == 0
    assert "OK (1 upstreams, 3 routes, 4 rules)" in capsys.readouterr().out
    request = tmp_path / "request.json"
    request.write_text('{"model": "gpt-4", "messages": [{"role": "user", "content": "How can I get my money back?"}]}')
    assert main(["explain", str(EXAMPLE), str(request)]) == 0
    out = capsys.readouterr().out
    assert "route: docs\nrule: documented\n" in out
    assert "- similar_to: 0." in out
    assert "(closest example: " in out
    assert "+ retrieval_score of 'docs': 0." in out
