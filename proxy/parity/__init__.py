"""Parity: whether a candidate route answers as well as a reference route, and the canary that acts on it.

Pure parts, no I/O on the request path: `answers` (what an evaluator reads of an exchange), `schema` (the
structured-outputs subset of JSON Schema), `evaluators` (labels, JSON, tool calls, similarity), `judge` (a chat
route comparing two answers, both ways round; its prompt `judge.md`), `evaluate` (the order they run in, the
judge's agreement), `gate` (the non-inferiority test: Wilson, and a mixture sequential test), `settings` (a
rule's `parity:` and `canary:` blocks), `canary` (the state machine). Imports nothing of the project.
"""

from proxy.parity.answers import Pair
from proxy.parity.canary import Action, CanaryState, GuardrailReadings, Status, Transition
from proxy.parity.evaluate import Agreement, Evaluation, agreement, build_evaluators, build_judge, evaluate, gate_of
from proxy.parity.evaluators import DEFAULT_SIMILARITY_THRESHOLD, Evaluator, Outcome, Verdict
from proxy.parity.gate import GateResult, GateVerdict, gate, wilson_interval
from proxy.parity.judge import Judge, JudgeError, load_prompt
from proxy.parity.settings import CanarySettings, GuardrailSettings, JudgeSettings, ParitySettings, check_blocks

__all__ = [
    "DEFAULT_SIMILARITY_THRESHOLD",
    "Action",
    "Agreement",
    "CanarySettings",
    "CanaryState",
    "Evaluation",
    "Evaluator",
    "GateResult",
    "GateVerdict",
    "GuardrailReadings",
    "GuardrailSettings",
    "Judge",
    "JudgeError",
    "JudgeSettings",
    "Outcome",
    "Pair",
    "ParitySettings",
    "Status",
    "Transition",
    "Verdict",
    "agreement",
    "build_evaluators",
    "build_judge",
    "check_blocks",
    "evaluate",
    "gate",
    "gate_of",
    "load_prompt",
    "wilson_interval",
]
