"""OpenAI's OpenAPI document, cut down to the operations Turnout serves and loaded into schemathesis once.

The document is `../shared/openai-openapi/openapi.json` beside the repository (the JSON form: PyYAML would
turn unquoted dates into `datetime.date`, see its SOURCE.md). A clone without `shared/` has none, and
the tests that need it skip (`needs_spec`), as `tests/unit/test_openapi_schemas.py` does.

The whole document has hundreds of operations; only the paths Turnout serves are handed to
schemathesis, with every component kept so that their `$ref`s resolve: loading takes about a second.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
import schemathesis
from schemathesis import APIOperation

from tests.e2e.conftest import ROOT

__all__ = ["SERVED", "SPEC", "needs_spec", "operations"]

SPEC = ROOT.parent / "shared" / "openai-openapi" / "openapi.json"
"""The full OpenAI document (see `tests/schemas/SOURCE.md` for the commit)."""
SERVED = {
    "/chat/completions": "post",
    "/embeddings": "post",
    "/completions": "post",
    "/models": "get",
    "/models/{model}": "get",
}
"""The spec's paths (relative to its server, `https://api.openai.com/v1`) and the method Turnout serves."""

needs_spec = pytest.mark.skipif(not SPEC.is_file(), reason=f"{SPEC} not present (a clone without shared/)")


@functools.cache
def operations() -> dict[str, APIOperation[Any, Any, Any, Any]]:
    """The served operations by label (`POST /chat/completions`), from the document loaded once."""
    document: dict[str, Any] = json.loads(SPEC.read_text(encoding="utf-8"))
    paths = {}
    for path, method in SERVED.items():
        item = document["paths"][path]
        paths[path] = {key: value for key, value in item.items() if key in (method, "parameters")}
    schema = schemathesis.openapi.from_dict({**document, "paths": paths})
    return {f"{method.upper()} {path}": schema[path][method] for path, method in SERVED.items()}
