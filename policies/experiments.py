"""`load_experiments`: a policy's `parity:` and `canary:` blocks, rule by rule, checked against its routes.

A rule with a `parity` block pairs a sample of its traffic with a reference route's answer; with a `canary`
block too, the candidate's share of the rule's traffic moves by the parity gate (`proxy.parity.canary`).
The blocks are read as `proxy.parity.settings` structs; every error names the file, the line and the rule.

Which route is which:
- `parity` alone: the rule's `route` is the candidate (it serves the client); `parity.reference` answers the
  sampled pairs in the background.
- `parity` and `canary`: the rule's `route` is the reference (it serves what the canary does not take), and
  `canary.candidate` serves the canary's share; each pair has the other route answer in the background.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from policies.errors import PolicyError
from proxy.parity.judge import JudgeError, load_prompt
from proxy.parity.settings import CanarySettings, ParitySettings, check_blocks

__all__ = ["BLOCKS", "Experiment", "load_experiments"]

BLOCKS = ("parity", "canary")
"""The rule keys this module reads (the rule loader lets them through)."""

Locate = Callable[[Sequence[str | int]], str]


@dataclass(frozen=True, slots=True)
class Experiment:
    """A rule's parity (and canary) settings, with the routes they compare."""

    rule: str
    route: str
    """The rule's own route."""
    parity: ParitySettings
    canary: CanarySettings | None = None
    judge_prompt: string.Template | None = None
    """The judge's prompt, read and checked at load (None: the rule has no judge)."""

    @property
    def candidate(self) -> str:
        """The route on trial: the canary's candidate, else the rule's route."""
        return self.canary.candidate if self.canary is not None else self.route

    @property
    def reference(self) -> str:
        """The route it is compared with."""
        return self.parity.reference


def _convert(raw: object, kind: type[Any], where: str, fail: Callable[[str, str], PolicyError]) -> Any:
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("$", where, 1)
        raise fail(where, message if "- at `" in message else f"{where}: {message}") from exc


def _read(
    raw: Mapping[Any, Any], index: int, routes: frozenset[str], locate: Locate, base: Path | None
) -> Experiment | None:
    name = str(raw.get("name"))

    def fail(key: str, problem: str) -> PolicyError:
        path: tuple[str | int, ...] = ("rules", index, key.split(".")[0])
        return PolicyError(f"{locate(path)}: rule '{name}': {problem}", path=path)

    if "parity" not in raw and "canary" not in raw:
        return None
    parity = _convert(raw["parity"], ParitySettings, "parity", fail) if "parity" in raw else None
    canary = _convert(raw["canary"], CanarySettings, "canary", fail) if "canary" in raw else None
    try:
        check_blocks(parity, canary, routes)
    except ValueError as exc:
        raise fail("canary" if canary is not None and "canary" in str(exc) else "parity", str(exc)) from exc
    assert parity is not None  # noqa: S101 - check_blocks refuses a canary without parity
    route = raw.get("route")
    if not isinstance(route, str) or "split" in raw or "nearest" in raw:
        raise fail("parity", "parity and canary need a rule with one `route` (not a split or nearest)")
    if canary is None and route == parity.reference:
        raise fail("parity.reference", f"the reference '{route}' is the rule's own route: pair it with another")
    if canary is not None and route != parity.reference:
        raise fail(
            "canary",
            f"with a canary, the rule's route is the reference: route '{route}' is not parity.reference "
            f"'{parity.reference}'",
        )
    prompt = None
    if parity.judge is not None:
        path = parity.judge.prompt
        try:
            prompt = load_prompt(None if path is None else base / path if base is not None else Path(path))
        except JudgeError as exc:
            raise fail("parity.judge", f"parity.judge.prompt: {exc}") from exc
    return Experiment(rule=name, route=route, parity=parity, canary=canary, judge_prompt=prompt)


def load_experiments(
    rules: Any, route_names: Collection[str], *, locate: Locate, base: Path | None = None
) -> dict[str, Experiment]:
    """The experiments of a policy's rules (already checked by `load_policy`), by rule name.

    A judge's prompt file is read here; a relative path is `base`'s (the policy file's directory).

    Raises:
        PolicyError: a block is invalid, names an unknown route, or does not fit its rule.
    """
    found: dict[str, Experiment] = {}
    routes = frozenset(route_names)
    for index, raw in enumerate(rules if isinstance(rules, list) else ()):
        if isinstance(raw, Mapping):
            experiment = _read(raw, index, routes, locate, base)
            if experiment is not None:
                found[experiment.rule] = experiment
    return found
