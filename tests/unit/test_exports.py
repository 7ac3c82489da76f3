"""The public surface of each package is its `__all__`: pinned here, sorted, and every name importable."""

from __future__ import annotations

import importlib

import pytest

EXPORTS = {
    "proxy": ["__version__"],
    "routes": [
        "Answer",
        "AnswerStream",
        "Call",
        "ChatCall",
        "HybridRetriever",
        "KnowledgeIndex",
        "KnowledgeIndexError",
        "OpenAIChatRoute",
        "OpenAIEmbedder",
        "Passage",
        "RagRoute",
        "Retriever",
        "Route",
        "Upstream",
        "UpstreamPath",
        "UpstreamTimeouts",
        "new_session",
    ],
    "policies": [
        "CacheRule",
        "Check",
        "Decision",
        "Experiment",
        "Explanation",
        "PolicyEngine",
        "PolicyError",
        "RequestFeatures",
        "RuleTrace",
        "SemanticFeatures",
        "SemanticNeeds",
        "extract_features",
        "load_experiments",
        "load_policy",
    ],
    "proxy.traffic": ["Exchange", "TrafficStore", "TrafficStoreError", "open_traffic_store"],
}


@pytest.mark.parametrize(("package", "names"), list(EXPORTS.items()))
def test_all_is_pinned(package, names):
    assert importlib.import_module(package).__all__ == names


@pytest.mark.parametrize("package", list(EXPORTS))
def test_all_is_sorted_without_duplicates(package):
    exported = importlib.import_module(package).__all__
    assert list(exported) == sorted(set(exported))


@pytest.mark.parametrize(("package", "name"), [(package, name) for package, names in EXPORTS.items() for name in names])
def test_each_name_is_importable(package, name):
    module = importlib.import_module(package)
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from {package} import {name}", namespace)  # noqa: S102 - the literal `from X import Y` form
    assert namespace[name] is getattr(module, name)


def test_version_is_the_distribution_version():
    import proxy
    from proxy._version import __version__

    assert proxy.__version__ == __version__
    assert isinstance(__version__, str)
    assert __version__.count(".") == 2
