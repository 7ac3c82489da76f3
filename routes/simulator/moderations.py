"""The simulator's moderations: `POST /v1/moderations`, flagged by a few keywords, scored deterministically.

`input` is a string, a list of strings, or a list of `text` / `image_url` parts (OpenAI's multimodal
form; an image is never flagged). Each text gets a result: every category of OpenAI's
`CreateModerationResponse` with its score and `category_applied_input_types`; a category is flagged when
the text holds one of its keywords (`kill` for violence, `hate` for hate, ... see `_KEYWORDS`), and the
result is flagged when any category is. Scores are small for what is not flagged, and high for what is.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from aiohttp import web

from proxy.wire.errors import InvalidRequestError
from proxy.wire.jsonbody import decode_json_object
from routes.simulator.common import read_body
from routes.simulator.faults import simulated
from routes.simulator.limits import SimulatorRejectedError

__all__ = ["CATEGORIES", "MAX_INPUTS", "add_moderation_routes", "moderation_answer"]

CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
MAX_INPUTS = 2_048
_KEYWORDS = {
    "harassment": ("idiot", "stupid", "loser"),
    "harassment/threatening": ("i will find you",),
    "hate": ("hate",),
    "illicit": ("steal", "drugs"),
    "illicit/violent": ("bomb",),
    "self-harm": ("hurt myself",),
    "self-harm/intent": ("want to die",),
    "sexual": ("nsfw",),
    "violence": ("kill", "murder", "attack"),
    "violence/graphic": ("gore", "blood"),
}


def _texts(body: dict[str, Any]) -> list[tuple[str, str]]:
    """Each input as (its text, its type: `text` or `image`).

    Raises:
        SimulatorRejectedError: `input` is none of OpenAI's forms, or holds more than `MAX_INPUTS`.
    """
    given = body.get("input")
    items = [given] if isinstance(given, str) else given
    if not isinstance(items, list) or not items:
        raise SimulatorRejectedError("Invalid 'input': a string, or an array of strings or parts.", param="input")
    if len(items) > MAX_INPUTS:
        raise SimulatorRejectedError(f"Invalid 'input': at most {MAX_INPUTS} items.", param="input")
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append((item, "text"))
        elif isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append((item["text"], "text"))
        elif isinstance(item, dict) and item.get("type") == "image_url":
            texts.append(("", "image"))
        else:
            raise SimulatorRejectedError(
                "Invalid 'input': each item a string or a text or image_url part.", param="input"
            )
    return texts


def _result(text: str, kind: str) -> dict[str, Any]:
    lowered = " ".join(re.findall(r"\w+", text.lower()))
    categories = {name: any(word in lowered for word in _KEYWORDS.get(name, ())) for name in CATEGORIES}
    scores = {name: 0.91 if flagged else round(1e-4 * (1 + len(name) % 7), 6) for name, flagged in categories.items()}
    applied = {
        name: [kind] if kind == "text" or name in ("violence", "sexual", "self-harm") else [] for name in CATEGORIES
    }
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    }


def moderation_answer(raw: bytes) -> dict[str, Any]:
    """The `CreateModerationResponse` for a request body.

    Raises:
        SimulatorRejectedError: the body is not a moderations request.
    """
    try:
        body = decode_json_object(raw)
    except InvalidRequestError as exc:
        raise SimulatorRejectedError.of(exc) from exc
    model = body.get("model")
    return {
        "id": f"modr-{secrets.token_hex(12)}",
        "model": model if isinstance(model, str) else "omni-moderation-latest",
        "results": [_result(text, kind) for text, kind in _texts(body)],
    }


async def _moderate(request: web.Request) -> web.Response:
    raw = await read_body(request)
    answer = moderation_answer(raw)
    _, error = await simulated(request, {"model": answer["model"]}, raw)
    return error or web.json_response(answer)


def add_moderation_routes(app: web.Application) -> None:
    """Serve `POST /v1/moderations` (and `/moderations`) from `app`."""
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/moderations", _moderate)
