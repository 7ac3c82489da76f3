"""`Judge`: a chat route asked which of two answers to a request is better, twice, the answers swapped.

The prompt is a file teams edit (`proxy/parity/judge.md` ships; the policy can name another). Each of the two
asks reads the reply's last `VERDICT: A|B|TIE` line. The candidate scores +1 for each ask it wins and -1 for
each it loses: a positive sum is a win, a negative one a loss, zero a tie. So a judge that always prefers
the first answer it is shown gives a tie, not a win. Zheng et al. 2023 ("Judging LLM-as-a-Judge with MT-Bench
and Chatbot Arena") swap the positions the same way and call an inconsistent pair a tie; unlike their
conservative rule, a win and a tie here make a win. A reply without a
verdict line leaves the pair undecided; a failed call raises the route's error (the caller leaves the pair
out, as it would an undecided one).
"""

from __future__ import annotations

import asyncio
import re
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.parity.answers import Pair, request_text, text_of, tool_calls_of
from proxy.parity.evaluators import Outcome, Verdict

__all__ = ["DEFAULT_PROMPT", "Complete", "Judge", "JudgeError", "load_prompt", "read_verdict"]

DEFAULT_PROMPT = Path(__file__).with_name("judge.md")
"""The shipped prompt."""
Complete = Callable[[list[dict[str, str]]], Awaitable[str]]
"""A chat route's completion: messages in, the answer's text out."""
_PLACEHOLDERS = frozenset({"request", "answer_a", "answer_b"})
_VERDICT = re.compile(r"^\s*\**VERDICT\**\s*:\s*\**\s*(A|B|TIE)\b", re.IGNORECASE | re.MULTILINE)


class JudgeError(ValueError):
    """The prompt file is missing, or does not use `$request`, `$answer_a` and `$answer_b` (and nothing else)."""


def load_prompt(path: Path | str | None = None) -> string.Template:
    """The judge's prompt from `path` (None: the shipped one), checked for its three placeholders.

    Raises:
        JudgeError: the file cannot be read, or its placeholders are not exactly the three.
    """
    where = Path(path) if path is not None else DEFAULT_PROMPT
    try:
        template = string.Template(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise JudgeError(f"{where}: cannot read the judge's prompt ({exc})") from exc
    if not template.is_valid():
        raise JudgeError(f"{where}: a `$` that is not a placeholder (write `$$` for a dollar sign)")
    used = set(template.get_identifiers())
    if used != _PLACEHOLDERS:
        missing, unknown = sorted(_PLACEHOLDERS - used), sorted(used - _PLACEHOLDERS)
        raise JudgeError(
            f"{where}: the prompt must use $request, $answer_a and $answer_b (missing {missing}, unknown {unknown})"
        )
    return template


def read_verdict(reply: str) -> str | None:
    """`A`, `B` or `TIE` from the reply's last verdict line; None without one."""
    found = _VERDICT.findall(reply)
    return found[-1].upper() if found else None


def shown(answer: Mapping[str, Any]) -> str:
    """An answer as the judge sees it: its text, then one `calls name(arguments)` line per tool call."""
    lines = [text] if (text := text_of(answer)) else []
    lines += [f"calls {call.name}({call.arguments})" for call in tool_calls_of(answer)]
    return "\n".join(lines) or "(no answer)"


@dataclass(frozen=True, slots=True)
class Judge:
    """An `Evaluator` that asks a chat route; its verdict's detail gives both asks' verdicts."""

    complete: Complete
    prompt: string.Template
    name: str = "judge"

    async def _ask(self, request: str, first: str, second: str) -> str | None:
        text = self.prompt.substitute(request=request, answer_a=first, answer_b=second)
        reply = await self.complete([{"role": "user", "content": text}])
        return read_verdict(reply)

    async def evaluate(self, pair: Pair) -> Verdict:
        """Candidate first, then reference first; the candidate's wins minus its losses decide."""
        request, candidate, reference = request_text(pair.request), shown(pair.candidate), shown(pair.reference)
        straight, swapped = await asyncio.gather(
            self._ask(request, candidate, reference), self._ask(request, reference, candidate)
        )
        detail = f"candidate first: {straight}, reference first: {swapped}"
        if straight is None or swapped is None:
            return Verdict(Outcome.UNDECIDED, self.name, detail)
        score = {"A": 1, "B": -1, "TIE": 0}[straight] - {"A": 1, "B": -1, "TIE": 0}[swapped]
        outcome = Outcome.WIN if score > 0 else Outcome.LOSS if score < 0 else Outcome.TIE
        return Verdict(outcome, self.name, detail)
