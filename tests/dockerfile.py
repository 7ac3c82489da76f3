"""Read the Dockerfile's instructions (no docker engine here): stages, and each instruction's arguments."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: `RUN`, `COPY`, … and the text after it (continuations joined)."""

    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (`CMD ["a", "b"]`); the text after `CMD` for HEALTHCHECK."""
        text = self.arguments.split(" CMD ", 1)[1] if self.keyword == "HEALTHCHECK" else self.arguments
        form: list[str] = json.loads(text)
        return form


def stages(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """The instructions of each stage (a stage starts at `FROM`); what comes before the first is dropped."""
    text = re.sub(r"\\\n\s*", "", path.read_text(encoding="utf-8"))
    result: list[list[Instruction]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            result.append([])
        if result:
            result[-1].append(Instruction(keyword=keyword.upper(), arguments=arguments.strip()))
    return result


def environment(stage: list[Instruction]) -> dict[str, str]:
    """The `ENV key=value` pairs a stage sets."""
    pairs: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            pairs.update(re.findall(r"(\w+)=(\S*)", instruction.arguments))
    return pairs
