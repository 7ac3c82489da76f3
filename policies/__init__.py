"""Decides which route a request takes: `load_policy` compiles a policy's rules into a `PolicyEngine`.

`extract_features()` turns a request into `RequestFeatures`; `PolicyEngine.decide()` turns those into a
`Decision` (route, fallbacks, rule, reason, shadow copy), and `PolicyEngine.explain()` says why, rule
by rule and condition by condition. `PolicyEngine.decisions()` and `explanations()` do the same in one
pass that asks for the meaning-based features (`SemanticFeatures`) only when a rule needs them.
"""

from policies.cacherule import CacheRule
from policies.checks import Check, SemanticNeeds
from policies.engine import Decision, Explanation, PolicyEngine, RuleTrace
from policies.errors import PolicyError
from policies.experiments import Experiment, load_experiments
from policies.features import RequestFeatures, SemanticFeatures, extract_features
from policies.loader import load_policy

__all__ = [
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
]
