"""The simulated upstream's Files API, driven by the official SDK: upload, list, retrieve, download, delete.

The simulator runs as a real aiohttp server on a loopback port; every object is checked against OpenAI's
own schemas, and a 100 MB file makes the round trip intact.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from routes.simulator.files import FILES
from tests.conftest import upstream_call
from tests.openapi import validate


async def test_a_file_makes_the_whole_round_trip(sdk):
    raw = await sdk.files.with_raw_response.create(file=("train.jsonl", b'{"a": 1}\n'), purpose="fine-tune")
    validate("OpenAIFile", raw.http_response.json())
    created = raw.parse()
    assert created.id.startswith("file-")
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        9,
        "train.jsonl",
        "fine-tune",
        "processed",
    )

    retrieved = await sdk.files.with_raw_response.retrieve(created.id)
    validate("OpenAIFile", retrieved.http_response.json())
    assert retrieved.parse().id == created.id

    content = await sdk.files.with_raw_response.content(created.id)
    assert content.http_response.content == b'{"a": 1}\n'
    assert content.http_response.headers["content-disposition"] == 'attachment; filename="train.jsonl"'
    assert content.http_response.headers["content-type"]

    deleted = await sdk.files.with_raw_response.delete(created.id)
    validate("DeleteFileResponse", deleted.http_response.json())
    assert deleted.parse().deleted
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.files.content(created.id)


async def test_files_list_by_purpose_with_pages(sdk):
    ids = [(await sdk.files.create(file=(f"f{i}.txt", b"x" * i), purpose="batch")).id for i in range(5)]
    await sdk.files.create(file=("other.txt", b"y"), purpose="assistants")

    raw = await sdk.files.with_raw_response.list(purpose="batch", limit=2, order="asc")
    body = raw.http_response.json()
    validate("ListFilesResponse", body)
    assert [f["id"] for f in body["data"]] == ids[:2]
    assert body["has_more"] is True
    walked = [f.id async for f in await sdk.files.list(purpose="batch", limit=2, order="asc")]
    assert walked == ids
    newest_first = [f.id async for f in await sdk.files.list(purpose="batch")]
    assert newest_first == ids[::-1]


async def test_an_upload_without_a_valid_purpose_or_file_is_a_400(sdk, simulator):
    with pytest.raises(openai.BadRequestError, match="purpose"):
        await sdk.files.create(file=("a.txt", b"a"), purpose="nonsense")
    async with httpx.AsyncClient() as http:
        response = await http.post(simulator.base_url + "/files", files={"purpose": (None, "batch")})
        assert response.status_code == 400
        validate("ErrorResponse", response.json())
        response = await http.post(simulator.base_url + "/files", json={"purpose": "batch"})
        assert response.status_code == 400
    assert simulator.runner.app[FILES].used == 0


async def test_past_the_storage_bound_an_upload_is_a_413_and_keeps_nothing(sdk, simulator):
    simulator.runner.app[FILES].max_total_bytes = 3 * 1024 * 1024
    await sdk.files.create(file=("a.bin", b"a" * 2 * 1024 * 1024), purpose="user_data")
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.files.create(file=("b.bin", b"b" * 2 * 1024 * 1024), purpose="user_data")
    assert raised.value.status_code == 413
    validate("ErrorResponse", raised.value.response.json())
    assert simulator.runner.app[FILES].used == 2 * 1024 * 1024


async def test_a_100_mb_file_goes_up_and_comes_back_intact(sdk):
    content = os.urandom(100 * 1024 * 1024)
    sent = hashlib.sha256(content).hexdigest()
    created = await sdk.files.create(file=("big.bin", content), purpose="user_data")
    del content
    assert created.bytes == 100 * 1024 * 1024

    digest = hashlib.sha256()
    async with sdk.files.with_streaming_response.content(created.id) as response:
        async for chunk in response.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == sent


async def test_an_upload_is_held_once_not_copied(simulator):
    """A 100 MB upload streamed in: what the simulator allocates at its peak is about the file, not twice it."""
    size, piece = 100 * 1024 * 1024, bytes(range(256)) * 4096
    boundary, request_id = "simulatorboundary", "upload-held-once"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(size // len(piece)):
            yield piece
        yield f"\r\n--{boundary}--\r\n".encode()

    tracemalloc.start()
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.post(
                simulator.base_url + "/files",
                content=body(),
                headers={"content-type": f"multipart/form-data; boundary={boundary}", "x-request-id": request_id},
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == size
    assert peak < size * 1.3
    record = await upstream_call(simulator, request_id)
    assert record["raw_bytes"] == size
    assert record["body"] == {"purpose": "user_data", "filename": "big.bin", "id": response.json()["id"]}


async def test_the_files_api_plays_the_simulated_faults(sdk):
    with pytest.raises(openai.InternalServerError):
        await sdk.files.create(
            file=("a.txt", b"a" * 100_000), purpose="batch", extra_headers={"x-simulated-fault": "500"}
        )
    created = await sdk.files.create(file=("a.txt", b"a" * 4 * 1024 * 1024), purpose="batch")
    with pytest.raises(openai.RateLimitError):
        await sdk.files.list(extra_headers={"x-simulated-fault": "429"})
    with pytest.raises(openai.APIConnectionError):
        await sdk.files.content(created.id, extra_headers={"x-simulated-fault": "disconnect"})
    assert len((await sdk.files.content(created.id)).content) == 4 * 1024 * 1024
