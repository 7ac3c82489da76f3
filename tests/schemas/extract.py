"""Extract the subset Turnout serves of OpenAI's OpenAPI document into `tests/schemas/openai.json`.

Usage (from the repository root)::

    python tests/schemas/extract.py [path/to/openapi.json]

The default input is `../shared/openai-openapi/openapi.json`. The schemas are copied unmodified (the
`nullable` rewrite happens when `tests/openapi.py` loads the file), so the output stays a faithful subset.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = REPO_ROOT.parent / "shared" / "openai-openapi" / "openapi.json"
OUTPUT = Path(__file__).resolve().with_name("openai.json")
REPOSITORY = "https://github.com/openai/openai-openapi"
ROOTS = (
    "Batch",
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionRequest",
    "CreateCompletionResponse",
    "CreateEmbeddingRequest",
    "CreateEmbeddingResponse",
    "CreateModerationRequest",
    "CreateModerationResponse",
    "CreateResponse",
    "DeleteFileResponse",
    "DeleteModelResponse",
    "Error",
    "ErrorResponse",
    "FineTuningJob",
    "ListBatchesResponse",
    "ListFilesResponse",
    "ListFineTuningJobEventsResponse",
    "ListModelsResponse",
    "ListPaginatedFineTuningJobsResponse",
    "Model",
    "OpenAIFile",
    "Response",
    "ResponseItemList",
    "ResponseStreamEvent",
)
REF_PREFIX = "#/components/schemas/"
# The snapshot's SOURCE.md line: "- Commit (...): `<40 hex digits>`".
_COMMIT_RE = re.compile(r"^- Commit\b.*?`([0-9a-f]{40})`", re.MULTILINE)


def _refs(node: Any) -> Iterator[str]:
    """Yield every `$ref` string found anywhere under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def reachable(schemas: dict[str, Any], roots: Sequence[str] = ROOTS) -> list[str]:
    """Return the sorted names of `roots` and every schema they reach through `$ref`.

    Args:
        schemas: The document's `components.schemas` mapping.
        roots: Schema names to start from.

    Returns:
        Sorted schema names, roots included.

    Raises:
        ValueError: A `$ref` points outside `#/components/schemas/<Name>` or names a missing schema.
    """
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        if name not in schemas:
            raise ValueError(f"schema {name!r} is not in components.schemas")
        seen.add(name)
        for ref in _refs(schemas[name]):
            target = ref.removeprefix(REF_PREFIX)
            if target == ref or "/" in target:
                raise ValueError(f"{name}: unsupported $ref {ref!r} (only {REF_PREFIX}<Name> is handled)")
            pending.append(target)
    return sorted(seen)


def read_commit(spec_path: Path) -> str:
    """Return the upstream commit recorded in the `SOURCE.md` next to the spec file.

    Args:
        spec_path: Path of `openapi.json`.

    Returns:
        The 40-hex-digit commit of openai/openai-openapi the file was copied from.

    Raises:
        ValueError: There is no `SOURCE.md` beside the spec, or it names no commit.
    """
    source_md = spec_path.with_name("SOURCE.md")
    match = _COMMIT_RE.search(source_md.read_text(encoding="utf-8")) if source_md.is_file() else None
    if match is None:
        raise ValueError(f"no '- Commit ...: `<sha>`' line in {source_md}")
    return match.group(1)


def build_subset(spec_path: Path) -> dict[str, Any]:
    """Build the subset document from an `openapi.json` file.

    Args:
        spec_path: Path of the full OpenAI `openapi.json`.

    Returns:
        `{"source": {...}, "components": {"schemas": {...}}}` with the schemas copied unmodified.
    """
    raw = spec_path.read_bytes()
    spec = json.loads(raw)
    schemas: dict[str, Any] = spec["components"]["schemas"]
    return {
        "source": {
            "repository": REPOSITORY,
            "commit": read_commit(spec_path),
            "file": "openapi.json",
            "sha256": hashlib.sha256(raw).hexdigest(),
            "openapi": spec["openapi"],
            "info_version": spec["info"]["version"],
            "license": "MIT, Copyright (c) OpenAI",
            "roots": sorted(ROOTS),
        },
        "components": {"schemas": {name: schemas[name] for name in reachable(schemas)}},
    }


def render(subset: dict[str, Any]) -> str:
    """Serialise the subset the way it is stored: sorted keys, indent=1, trailing newline."""
    return json.dumps(subset, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] = ()) -> int:
    """Write `openai.json` from the spec named in `argv` (or the default path).

    Args:
        argv: Command-line arguments without the program name: at most one spec path.

    Returns:
        The process exit status.
    """
    if len(argv) > 1:
        print(f"usage: python {Path(__file__).name} [path/to/openapi.json]", file=sys.stderr)
        return 2
    spec_path = Path(argv[0]) if argv else DEFAULT_SPEC
    subset = build_subset(spec_path)
    OUTPUT.write_text(render(subset), encoding="utf-8")
    count = len(subset["components"]["schemas"])
    print(f"wrote {OUTPUT.relative_to(REPO_ROOT)}: {count} schemas from {spec_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
