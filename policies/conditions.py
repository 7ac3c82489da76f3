"""Operator table: each YAML condition compiled once into a fast test that can also explain itself.

A condition is a mapping; several keys in one mapping must all hold. `OPERATORS` maps each key to its
compiler, which checks the YAML value (raising `PolicyError` with the path inside the rule) and returns a
`Condition`: `test(features) -> bool` for `decide` (globs and regexes precompiled, nothing parsed per
request) and `explain(features) -> Check` for `turnout explain`, which says why it matched or failed.

The keys:
- `model`, `user`, `caller`, `team`, `reasoning_effort`: a glob or a list of globs (fnmatch-style,
  case-sensitive); an absent user, caller, team or effort matches nothing.
- `header`, `metadata`: a mapping of name to glob(s), every name must match; header names in any case.
- `last_user_message`, `conversation`: `keywords` (whole words, any case) and/or `regex` (`policies.text`).
- `prompt_tokens` (estimated), `n` (1 when unset), `temperature` (unset matches nothing): a mapping of
  `gt`, `gte`, `lt`, `lte`, `eq` to numbers, all of which must hold; a bare number means `eq`.
- `has_tools` (tools or functions present), `stream`: true or false.
- `response_format`: `json` (json_object or json_schema), `json_object`, `json_schema`, or `text`
  (which an absent response_format also is).
- `similar_to`, `retrieval_score`: by meaning, with an embedding model (`policies.semantic`).
- `all`, `any`: a list of conditions; `not`: one condition.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Mapping

from policies.bounds import Compare, bounds
from policies.checks import Check, Condition, Test, all_of, any_of, not_of
from policies.errors import Path, describe, invalid, require_mapping, unknown
from policies.features import RequestFeatures
from policies.semantic import retrieval_score, similar_to
from policies.text import text_condition

__all__ = ["OPERATORS", "compile_condition", "compile_when"]


def _list_of_conditions(raw: object, path: Path) -> list[Condition]:
    if not isinstance(raw, list) or not raw:
        raise invalid(path, f"expected a non-empty list of conditions, got {describe(raw)}")
    return [compile_condition(item, (*path, index)) for index, item in enumerate(raw)]


def _all(raw: object, path: Path) -> Condition:
    conditions = _list_of_conditions(raw, path)
    return all_of(conditions, f"all({'; '.join(c.label for c in conditions)})")


def _any(raw: object, path: Path) -> Condition:
    conditions = _list_of_conditions(raw, path)
    return any_of(conditions, f"any({'; '.join(c.label for c in conditions)})")


def _not(raw: object, path: Path) -> Condition:
    return not_of(compile_condition(raw, path))


# --- globs: model, user, caller, header, metadata --------------------------------------------------------


def _globs(raw: object, path: Path) -> tuple[str, ...]:
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise invalid(path, f"expected a glob or a non-empty list of globs (strings; quote numbers), got {describe(raw)}")


def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """One test for every pattern: a set lookup for plain names, one compiled regex for the globs."""
    exact = frozenset(p for p in patterns if not any(char in p for char in "*?["))
    globs = [p for p in patterns if p not in exact]
    if not globs:
        return exact.__contains__
    match = re.compile("|".join(fnmatch.translate(glob) for glob in globs)).match
    if not exact:
        return lambda value: match(value) is not None
    return lambda value: value in exact or match(value) is not None


def _glob_condition(subject: str, get: Callable[[RequestFeatures], str | None], patterns: tuple[str, ...]) -> Condition:
    matches = _matcher(patterns)
    shown = repr(patterns[0]) if len(patterns) == 1 else f"any of {list(patterns)}"

    def test(features: RequestFeatures) -> bool:
        value = get(features)
        return value is not None and matches(value)

    def explain(features: RequestFeatures) -> Check:
        value = get(features)
        if value is None:
            return Check(False, f"{subject} is absent")
        if matches(value):
            pattern = next(p for p in patterns if fnmatch.fnmatchcase(value, p))
            return Check(True, f"{subject} {value!r} matches {pattern!r}")
        return Check(False, f"{subject} {value!r} matches none of {list(patterns)}")

    return Condition(test, explain, f"{subject} matches {shown}")


def _model(raw: object, path: Path) -> Condition:
    model: Callable[[RequestFeatures], str | None] = operator.attrgetter("model")
    return _glob_condition("model", model, _globs(raw, path))


def _user(raw: object, path: Path) -> Condition:
    return _glob_condition("user", operator.attrgetter("user"), _globs(raw, path))


def _caller(raw: object, path: Path) -> Condition:
    return _glob_condition("caller", operator.attrgetter("caller"), _globs(raw, path))


def _team(raw: object, path: Path) -> Condition:
    return _glob_condition("team", operator.attrgetter("team"), _globs(raw, path))


def _reasoning_effort(raw: object, path: Path) -> Condition:
    return _glob_condition("reasoning_effort", operator.attrgetter("reasoning_effort"), _globs(raw, path))


def _header_value(name: str) -> Callable[[RequestFeatures], str | None]:
    return lambda features: features.headers.get(name)


def _metadata_value(key: str) -> Callable[[RequestFeatures], str | None]:
    return lambda features: features.metadata.get(key)


def _keyed_globs(subject: str, raw: object, path: Path) -> Condition:
    """`header` and `metadata`: a glob (or list) per name; every name listed must match."""
    entries = require_mapping(raw, path, f"{subject} names to globs")
    conditions = []
    for name, patterns in entries.items():
        key = name.lower() if subject == "header" else name
        get = _header_value(key) if subject == "header" else _metadata_value(key)
        conditions.append(_glob_condition(f"{subject} {key}", get, _globs(patterns, (*path, name))))
    return all_of(conditions, " and ".join(c.label for c in conditions))


def _header(raw: object, path: Path) -> Condition:
    return _keyed_globs("header", raw, path)


def _metadata(raw: object, path: Path) -> Condition:
    return _keyed_globs("metadata", raw, path)


# --- numbers: prompt_tokens, n, temperature ---------------------------------------------------------------


def _bounded(get: Callable[[RequestFeatures], float | None], pairs: tuple[tuple[Compare, float], ...]) -> Test:
    if len(pairs) == 1:  # the usual single bound, without the loop
        ((compare, bound),) = pairs
        return lambda features: (value := get(features)) is not None and compare(value, bound)

    def test(features: RequestFeatures) -> bool:
        value = get(features)
        if value is None:
            return False
        for compare, bound in pairs:  # noqa: SIM110 - a loop is 4x cheaper than all() over a generator here
            if not compare(value, bound):
                return False
        return True

    return test


def _numeric(subject: str) -> Callable[[object, Path], Condition]:
    get: Callable[[RequestFeatures], float | None] = operator.attrgetter(subject)

    def compile_numeric(raw: object, path: Path) -> Condition:
        limits = bounds(raw, path)
        test = _bounded(get, tuple((compare, bound) for _, compare, bound in limits))

        def explain(features: RequestFeatures) -> Check:
            value = get(features)
            if value is None:
                return Check(False, f"{subject} is not set")
            for symbol, compare, bound in limits:
                if not compare(value, bound):
                    return Check(False, f"{subject} {value} is not {symbol} {bound}")
            return Check(True, f"{subject} {value} " + " and ".join(f"{s} {b}" for s, _, b in limits))

        return Condition(test, explain, f"{subject} " + " and ".join(f"{s} {b}" for s, _, b in limits))

    return compile_numeric


# --- flags: has_tools, stream, response_format ------------------------------------------------------------


def _flag(subject: str) -> Callable[[object, Path], Condition]:
    get: Callable[[RequestFeatures], bool] = operator.attrgetter(subject)

    def compile_flag(raw: object, path: Path) -> Condition:
        if not isinstance(raw, bool):
            raise invalid(path, f"expected true or false, got {describe(raw)}")
        wanted = raw

        def explain(features: RequestFeatures) -> Check:
            value = get(features)
            if value is wanted:
                return Check(True, f"{subject} is {str(value).lower()}")
            return Check(False, f"{subject} is {str(value).lower()}, not {str(wanted).lower()}")

        test: Test = get if wanted else lambda features: not get(features)
        return Condition(test, explain, f"{subject} is {str(wanted).lower()}")

    return compile_flag


_FORMATS: dict[str, frozenset[str | None]] = {
    "json": frozenset({"json_object", "json_schema"}),
    "json_object": frozenset({"json_object"}),
    "json_schema": frozenset({"json_schema"}),
    "text": frozenset({"text", None}),
}


def _response_format(raw: object, path: Path) -> Condition:
    if not isinstance(raw, str) or raw not in _FORMATS:
        raise invalid(path, f"expected one of {', '.join(_FORMATS)}, got {describe(raw)}")
    accepted = _FORMATS[raw]

    def explain(features: RequestFeatures) -> Check:
        value = features.response_format
        shown = "absent" if value is None else repr(value)
        if value in accepted:
            return Check(True, f"response_format {shown} is {raw}")
        return Check(False, f"response_format {shown} is not {raw}")

    return Condition(lambda features: features.response_format in accepted, explain, f"response_format is {raw}")


# --- the table --------------------------------------------------------------------------------------------

OPERATORS: Mapping[str, Callable[[object, Path], Condition]] = {
    "all": _all,
    "any": _any,
    "caller": _caller,
    "team": _team,
    "conversation": text_condition("conversation", "conversation"),
    "has_tools": _flag("has_tools"),
    "header": _header,
    "last_user_message": text_condition("last_user_message", "last_user"),
    "metadata": _metadata,
    "model": _model,
    "n": _numeric("n"),
    "not": _not,
    "prompt_tokens": _numeric("prompt_tokens"),
    "reasoning_effort": _reasoning_effort,
    "response_format": _response_format,
    "retrieval_score": retrieval_score,
    "similar_to": similar_to,
    "stream": _flag("stream"),
    "temperature": _numeric("temperature"),
    "user": _user,
}
"""Condition key → its compiler: `compiler(yaml_value, path) -> Condition`, raising `PolicyError`."""


def compile_when(raw: object, path: Path) -> tuple[Condition, ...]:
    """Compile a mapping of conditions into one `Condition` per key, in order (a request must meet all).

    Raises:
        PolicyError: a key is unknown or a value is wrong; the message and `path` say where.
    """
    entries = require_mapping(raw, path, "conditions")
    conditions = []
    for key, value in entries.items():
        compiler = OPERATORS.get(key)
        if compiler is None:
            raise unknown(path, key, sorted(OPERATORS), "condition")
        conditions.append(compiler(value, (*path, key)))
    return tuple(conditions)


def compile_condition(raw: object, path: Path) -> Condition:
    """Compile a mapping of conditions into one `Condition` that holds when all of its keys do.

    Raises:
        PolicyError: a key is unknown or a value is wrong; the message and `path` say where.
    """
    conditions = compile_when(raw, path)
    return all_of(conditions, " and ".join(c.label for c in conditions))
