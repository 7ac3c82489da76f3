"""`load_policy(rules, route_names, locate=...) -> PolicyEngine`: checks the rules; errors name file, line and rule.

`rules` is the raw YAML value of a policy file's `rules` section (the other sections are read by the
proxy's settings). Every problem is reported as `file:line: rule 'name': what is wrong`, the line
found by the `locate` callback from a path rooted at `rules` (`("rules", 2, "when", "model")`).
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from policies.cacherule import CacheRule, CacheRuleError, read_cache_rule
from policies.checks import Condition
from policies.conditions import compile_when
from policies.decision import LOG_LEVELS, LogLevel
from policies.engine import PolicyEngine, Rule, Shadow, Sticky
from policies.errors import Path, PolicyError
from policies.experiments import BLOCKS
from policies.nearest import Nearest, read_nearest

__all__ = ["RULE_KEYS", "load_policy"]

RULE_KEYS = (
    "name",
    "when",
    "route",
    "split",
    "sticky",
    "fallback",
    "shadow",
    "cache",
    "deadline",
    "nearest",
    "log",
    *BLOCKS,
)
"""The keys a rule may have."""
_SHADOW_KEYS = ("route", "sample")
_STICKY: tuple[Sticky, ...] = ("user", "caller")

Locate = Callable[[Sequence[str | int]], str]


class _RuleReader:
    """Checks one rule and builds it; every error names the file, the line and the rule."""

    def __init__(self, raw: Mapping[Any, Any], index: int, routes: Collection[str], locate: Locate) -> None:
        self.raw = raw
        self.index = index
        self.routes = routes
        self.locate = locate
        name = raw.get("name")
        self.name = name if isinstance(name, str) and name.strip() else f"#{index + 1}"
        """The rule's name for messages: its own when it has a usable one, else its position."""

    def error(self, path: Path, problem: str) -> PolicyError:
        where_ = self.locate(("rules", self.index, *path))
        return PolicyError(f"{where_}: rule '{self.name}': {problem}", path=("rules", self.index, *path))

    def read(self) -> Rule:
        for key in self.raw:
            if key not in RULE_KEYS:
                hint = difflib.get_close_matches(str(key), RULE_KEYS, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise self.error((str(key),), f"unknown key '{key}'{suggestion}; a rule has: {', '.join(RULE_KEYS)}")
        name = self.raw.get("name")
        if not isinstance(name, str) or not name.strip():
            problem = "has no name" if name is None else f"name must be a non-empty string, got {name!r}"
            raise self.error(("name",) if "name" in self.raw else (), problem)
        conditions: tuple[Condition, ...] = ()
        if "when" in self.raw:
            try:
                conditions = compile_when(self.raw["when"], ("when",))
            except PolicyError as exc:
                raise self.error(exc.path, exc.message) from exc
        nearest = self.read_nearest()
        if nearest is not None:
            conditions = (*conditions, nearest.condition())
            routes, split = tuple((route, 1.0) for route in nearest.routes), False
        else:
            routes, split = self.read_routes()
        fallbacks = self.read_fallbacks(routes, split or nearest is not None)
        return Rule(
            name=self.name,
            conditions=conditions,
            nearest=nearest,
            routes=routes,
            split=split,
            sticky=self.read_sticky(split),
            fallbacks=fallbacks,
            shadow=self.read_shadow(routes, split or nearest is not None),
            cache=self.read_cache(),
            deadline=self.read_deadline(),
            log=self.read_log(),
        )

    def read_log(self) -> LogLevel | None:
        raw = self.raw.get("log")
        if raw is None:
            return None
        for level in LOG_LEVELS:
            if raw == level:
                return level
        raise self.error(("log",), f"log must be one of: {', '.join(LOG_LEVELS)}; got {raw!r}")

    def read_deadline(self) -> float | None:
        raw = self.raw.get("deadline")
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw < float("inf"):
            raise self.error(("deadline",), f"deadline must be a number of seconds > 0, got {raw!r}")
        return float(raw)

    def read_cache(self) -> CacheRule:
        if "cache" not in self.raw:
            return CacheRule()
        try:
            return read_cache_rule(self.raw["cache"])
        except CacheRuleError as exc:
            raise self.error(("cache", *exc.path), exc.message) from exc

    def known_route(self, name: object, path: Path, what: str) -> str:
        """`name`, checked to be one of the configured routes; `what` says where it was named (route, split, ...)."""
        problem = self.route_problem(name, what)
        if problem is not None:
            raise self.error(path, problem)
        return str(name)

    def route_problem(self, name: object, what: str) -> str | None:
        """Why `name` is not one of the configured routes, or None when it is."""
        if not isinstance(name, str):
            return f"{what} must be a route name, got {name!r}"
        if name in self.routes:
            return None
        known = ", ".join(sorted(self.routes))
        hint = difflib.get_close_matches(name, list(self.routes), n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        in_what = "" if what == "route" else f" in {what}"
        return f"unknown route '{name}'{in_what} (routes: {known}){suggestion}"

    def read_nearest(self) -> Nearest | None:
        if "nearest" not in self.raw:
            return None
        for key in ("route", "split", "sticky"):
            if key in self.raw:
                raise self.error((key,), f"a `nearest` rule chooses its route by meaning: it has no `{key}`")
        try:
            return read_nearest(self.raw["nearest"], ("nearest",), self.nearest_route)
        except PolicyError as exc:
            raise self.error(exc.path, exc.message) from exc

    def nearest_route(self, name: object, path: Path) -> str:
        """`known_route` for `read_nearest`, whose caller adds the file, the line and the rule to the error."""
        problem = self.route_problem(name, "nearest")
        if problem is not None:
            raise PolicyError(problem, path=path)
        return str(name)

    def read_routes(self) -> tuple[tuple[tuple[str, float], ...], bool]:
        if ("route" in self.raw) == ("split" in self.raw):
            problem = "has both `route` and `split`" if "route" in self.raw else "needs a `route` or a `split`"
            raise self.error((), f"{problem}: give exactly one")
        if "route" in self.raw:
            return ((self.known_route(self.raw["route"], ("route",), "route"), 1.0),), False
        split = self.raw["split"]
        if not isinstance(split, Mapping) or not split:
            raise self.error(("split",), f"split must be a non-empty mapping of route to weight, got {split!r}")
        routes = []
        for route, weight in split.items():
            path: Path = ("split", str(route))
            self.known_route(route, path, "split")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
                raise self.error(path, f"the weight of '{route}' must be a number > 0, got {weight!r}")
            routes.append((str(route), float(weight)))
        return tuple(routes), True

    def read_fallbacks(self, routes: tuple[tuple[str, float], ...], split: bool) -> tuple[str, ...]:
        raw = self.raw.get("fallback", [])
        if not isinstance(raw, list):
            raise self.error(("fallback",), f"fallback must be a list of route names, got {raw!r}")
        fallbacks: list[str] = []
        for position, name in enumerate(raw):
            path: Path = ("fallback", position)
            self.known_route(name, path, "fallback")
            if name in fallbacks:
                raise self.error(path, f"route '{name}' is listed twice in fallback")
            if not split and name == routes[0][0]:
                raise self.error(path, f"route '{name}' cannot be its own fallback")
            fallbacks.append(name)
        return tuple(fallbacks)

    def read_sticky(self, split: bool) -> Sticky | None:
        if "sticky" not in self.raw:
            return None
        sticky = self.raw["sticky"]
        if not split:
            raise self.error(("sticky",), "sticky only applies to a `split`")
        for option in _STICKY:
            if sticky == option:
                return option
        raise self.error(("sticky",), f"sticky must be one of: {', '.join(_STICKY)}; got {sticky!r}")

    def read_shadow(self, routes: tuple[tuple[str, float], ...], split: bool) -> Shadow | None:
        raw = self.raw.get("shadow")
        if "shadow" not in self.raw:
            return None
        if not isinstance(raw, Mapping) or "route" not in raw:
            raise self.error(("shadow",), f"shadow must be a mapping with a `route` (and a `sample`), got {raw!r}")
        for key in raw:
            if key not in _SHADOW_KEYS:
                raise self.error(("shadow", str(key)), f"unknown key '{key}' in shadow; it has: route, sample")
        route = self.known_route(raw["route"], ("shadow", "route"), "shadow")
        if not split and route == routes[0][0]:
            raise self.error(("shadow", "route"), f"the shadow route '{route}' is the rule's own route")
        sample = raw.get("sample", 1.0)
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 < sample <= 1:
            raise self.error(("shadow", "sample"), f"sample must be a number with 0 < sample <= 1, got {sample!r}")
        return Shadow(route=route, sample=float(sample))


def _check_order(rules: Sequence[Rule], locate: Locate) -> None:
    """No rule after a catch-all (it could never match), and a catch-all at the end (the default)."""
    for index, rule in enumerate(rules[:-1]):
        if not rule.conditions:
            later = rules[index + 1]
            raise PolicyError(
                f"{locate(('rules', index + 1))}: rule '{later.name}': unreachable: rule '{rule.name}' above it "
                f"({locate(('rules', index))}) has no `when` and matches every request"
            )
    last = rules[-1]
    if last.conditions:
        raise PolicyError(
            f"{locate(('rules', len(rules) - 1, 'when'))}: rule '{last.name}': the last rule must have no `when`: "
            "it is the default, taken when no other rule matches"
        )


def load_policy(
    rules: Any,
    route_names: Collection[str],
    *,
    locate: Locate,
    rng: random.Random | None = None,
) -> PolicyEngine:
    """Check and compile a policy's rules into a `PolicyEngine`.

    Args:
        rules: the raw YAML value of the `rules` section: a list of rule mappings.
        route_names: the configured routes; every route a rule names must be one of them.
        locate: `file:line` of a path rooted at `rules`, e.g. `locate(("rules", 2, "when"))`.
        rng: where random splits and shadow sampling draw from (a fresh `random.Random` by default).

    Raises:
        PolicyError: the first problem found, as `file:line: rule 'name': what is wrong`.
    """
    if not isinstance(rules, list) or not rules:
        raise PolicyError(f"{locate(('rules',))}: rules must be a non-empty list of rules, got {rules!r}")
    compiled: list[Rule] = []
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(rules):
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{locate(('rules', index))}: rule #{index + 1}: must be a mapping, got {raw!r}")
        reader = _RuleReader(raw, index, route_names, locate)
        rule = reader.read()
        if rule.name in first_seen:
            first = locate(("rules", first_seen[rule.name]))
            raise reader.error(("name",), f"duplicate rule name (first defined at {first})")
        first_seen[rule.name] = index
        compiled.append(rule)
    _check_order(compiled, locate)
    return PolicyEngine(compiled, rng if rng is not None else random.Random())  # noqa: S311 - not cryptography
