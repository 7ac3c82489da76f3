"""Issue 13, points 3 and 4: what Turnout routes not, under `/v1/`, it passes through faithfully, streamed both ways.

The real `turnout serve`, in front of an upstream the test runs itself (`tests.passthrough_upstream`, at the
upstream boundary), which records what reached it. Memory is measured on the server process itself
(`/proc/PID/status`): four concurrent 100 MB uploads and a 100 MB download must not be held in memory.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    CLIENT_KEY,
    SERVER_KEY,
    RunningProcess,
    clean_env,
    free_port,
    new_request_id,
    running,
    start_turnout,
)
from tests.e2e.test_chat import wait_for_log_line
from tests.passthrough_upstream import BLOCK, PassthroughUpstream, digest_of, passthrough_upstream, pattern

MB = 1024 * 1024
BIG = 100 * MB


@pytest.fixture(scope="module")
def upstream() -> Iterator[PassthroughUpstream]:
    with passthrough_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def turnout(upstream: PassthroughUpstream) -> Iterator[RunningProcess]:
    """Turnout without a policy: its default upstream is the test's.

    The read timeout (for the 504) is 3 s, well after the second by which a client that left must have taken
    its upstream call with it: a call cancelled by the timeout instead would come too late.
    """
    env = clean_env(OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY=SERVER_KEY, TURNOUT_UPSTREAM_READ_TIMEOUT="3")
    with running(start_turnout(env)) as process:
        yield process


@pytest.fixture(scope="module")
def http(turnout: RunningProcess) -> Iterator[httpx.Client]:
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(base_url=turnout.origin, timeout=60.0, headers=auth) as client:
        yield client


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    return error


# --- what passes, as it came -------------------------------------------------------------------------------


def test_method_path_query_content_type_and_body_reach_the_upstream_unchanged(
    http: httpx.Client, upstream: PassthroughUpstream
) -> None:
    request_id = new_request_id()
    sent = http.build_request(
        "POST",
        "/v1/files",
        params={"purpose": "fine-tune", "include[]": "a b/c", "after": "file-é"},
        files={"file": ("train.jsonl", b'{"prompt": "hi"}\n' * 1000, "application/jsonl")},
        data={"purpose": "fine-tune"},
        headers={"x-request-id": request_id, "openai-beta": "assistants=v2", "x-custom": "kept"},
    )
    sent.read()
    response = http.send(sent)
    assert response.status_code == 200, response.text
    seen = upstream.seen[request_id]
    assert seen.method == "POST"
    target = urllib.parse.urlsplit(seen.target)
    assert target.path == "/v1/files"
    assert urllib.parse.parse_qsl(target.query) == [
        ("purpose", "fine-tune"),
        ("include[]", "a b/c"),
        ("after", "file-é"),
    ]
    assert upstream.header(request_id, "content-type") == [sent.headers["content-type"]]  # the boundary too
    assert upstream.header(request_id, "content-length") == [sent.headers["content-length"]]
    assert (seen.size, seen.sha256) == (len(sent.content), hashlib.sha256(sent.content).hexdigest())
    assert upstream.header(request_id, "openai-beta") == ["assistants=v2"]
    assert upstream.header(request_id, "x-custom") == ["kept"]
    assert upstream.header(request_id, "x-request-id") == [request_id]
    assert response.headers["x-request-id"] == request_id
    assert response.json()["sha256"] == seen.sha256


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "PATCH"])
def test_every_method_passes(http: httpx.Client, upstream: PassthroughUpstream, method: str) -> None:
    request_id = new_request_id()
    response = http.request(method, "/v1/vector_stores/vs_1/files/file-2?limit=3", headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text
    assert (upstream.seen[request_id].method, upstream.seen[request_id].target) == (
        method,
        "/v1/vector_stores/vs_1/files/file-2?limit=3",
    )


def test_the_client_s_key_is_replaced_and_the_upstream_s_never_comes_back(
    http: httpx.Client, upstream: PassthroughUpstream
) -> None:
    request_id = new_request_id()
    response = http.get("/v1/batches", headers={"x-request-id": request_id, "api-key": CLIENT_KEY})
    assert upstream.header(request_id, "authorization") == [f"Bearer {SERVER_KEY}"]
    assert CLIENT_KEY not in repr(upstream.seen[request_id].headers)
    assert SERVER_KEY not in response.text  # the echo quoted it: redacted on the way back
    assert "[redacted]" in response.text
    error = http.get("/v1/status/401", headers={"x-request-id": new_request_id()})
    assert error.status_code == 401
    assert SERVER_KEY not in error.text
    assert error.json()["error"]["message"] == "Rejected key [redacted]."


def test_hop_by_hop_headers_stay_behind_both_ways(turnout: RunningProcess, upstream: PassthroughUpstream) -> None:
    request_id = new_request_id()
    head = (
        f"GET /v1/files/file-1/content?bytes=1000 HTTP/1.1\r\nHost: turnout\r\nx-request-id: {request_id}\r\n"
        "Connection: close, x-hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        "Proxy-Authorization: Basic abc\r\nx-end-to-end: 1\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", turnout.port), timeout=10) as sock:
        sock.sendall(head.encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    head_bytes, _, body = rest.partition(b"\r\n\r\n")
    headers = [line.split(b":", 1) for line in head_bytes.split(b"\r\n")]
    names = {name.strip().lower().decode() for name, _ in headers}
    values = {name.strip().lower().decode(): value.strip().decode() for name, value in headers}
    sent = {name.lower() for name, _ in upstream.seen[request_id].headers}
    assert not sent & {"x-hop", "keep-alive", "te", "proxy-authorization"}
    assert "close" not in upstream.header(request_id, "connection")
    assert "x-end-to-end" in sent
    assert status_line.split()[1] == b"200"
    assert body == BLOCK[:1000]
    assert values["content-length"] == "1000"
    assert values["content-disposition"] == 'attachment; filename="data.jsonl"'
    assert values["content-type"] == "application/octet-stream"
    assert values["x-ratelimit-remaining-requests"] == "99"
    assert values["openai-processing-ms"] == "7"
    assert not names & {"keep-alive", "proxy-authenticate", "set-cookie", "x-upstream-internal", "openai-organization"}


def test_an_upstream_error_is_relayed_as_it_came_with_retry_after(http: httpx.Client) -> None:
    response = http.get("/v1/status/429")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["x-ratelimit-reset-requests"] == "1s"
    assert "set-cookie" not in response.headers
    assert response.json()["error"]["code"] == "x"
    assert http.get("/v1/status/404").status_code == 404


def test_an_upstream_error_that_is_not_json_becomes_openai_s_with_its_status(http: httpx.Client) -> None:
    error = assert_openai_error(http.get("/v1/page/503"), 503)
    assert error["message"] == "The upstream answered 503: <html><h1>Bad gateway</h1></html>"
    assert error["type"] == "api_error"


def test_an_unreachable_upstream_is_a_502_and_a_silent_one_a_504(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/drop"), 502)
    assert_openai_error(http.post("/v1/slow?seconds=6"), 504, "upstream_timeout")


def test_an_upstream_that_breaks_off_cuts_the_response_short(http: httpx.Client, turnout: RunningProcess) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        http.get("/v1/midway")
    assert turnout.process.poll() is None


@pytest.mark.parametrize(
    "target",
    [
        "/v1/files/..%2F..%2Forganization%2Fadmin_api_keys",
        "/v1/files/%2e%2e/organization",
        "/v1/../v1/organization/admin_api_keys",
        "/v1/files//x",
        "/v1/files/a%5Cb",
    ],
)
def test_a_path_that_would_leave_its_endpoint_is_refused(
    turnout: RunningProcess, upstream: PassthroughUpstream, target: str
) -> None:
    before = len(upstream.seen)
    with socket.create_connection(("127.0.0.1", turnout.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: turnout\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500, reply
    assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
    assert len(upstream.seen) == before


def test_paths_outside_v1_stay_a_404(http: httpx.Client, upstream: PassthroughUpstream) -> None:
    before = len(upstream.seen)
    assert_openai_error(http.get("/files"), 404, "not_found")
    assert_openai_error(http.get("/v1beta/files"), 404, "not_found")
    assert len(upstream.seen) == before


# --- a client that leaves -----------------------------------------------------------------------------------


def test_a_client_that_gives_up_waiting_cancels_the_upstream_call(
    http: httpx.Client, upstream: PassthroughUpstream, turnout: RunningProcess
) -> None:
    request_id = new_request_id()
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/slow?seconds=30", headers={"x-request-id": request_id}, timeout=0.5)
    gave_up_at = time.time()
    seen = upstream.wait_for(request_id, "cancelled")
    assert seen.outcome == "cancelled"
    assert seen.ended_at is not None
    assert seen.ended_at - gave_up_at < 1.0
    assert wait_for_log_line(turnout, request_id)["status"] == 499


def test_a_client_that_leaves_mid_upload_cancels_the_upstream_call(
    turnout: RunningProcess, upstream: PassthroughUpstream
) -> None:
    request_id = new_request_id()
    head = (
        f"POST /v1/uploads/upload_1/parts HTTP/1.1\r\nHost: turnout\r\nx-request-id: {request_id}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {10 * MB}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", turnout.port), timeout=10) as sock:
        sock.sendall(head.encode())
        for block in pattern(MB):
            sock.sendall(block)
        upstream.wait_for(request_id, "running")
        time.sleep(0.2)  # the first megabyte on its way upstream
    left_at = time.time()
    seen = upstream.wait_for(request_id, "cancelled")
    assert seen.outcome == "cancelled"
    assert seen.ended_at is not None
    assert seen.ended_at - left_at < 1.0
    assert 0 < seen.size < 10 * MB
    assert wait_for_log_line(turnout, request_id)["status"] == 499


def test_a_client_that_leaves_mid_download_closes_the_upstream_transfer(
    turnout: RunningProcess, upstream: PassthroughUpstream
) -> None:
    request_id = new_request_id()
    with httpx.stream(
        "GET", f"{turnout.origin}/v1/files/f/content?bytes={BIG}", headers={"x-request-id": request_id}
    ) as response:
        next(response.iter_bytes())
    seen = upstream.wait_for(request_id, "cancelled")
    assert seen.outcome == "cancelled"
    assert wait_for_log_line(turnout, request_id)["status"] == 499


# --- memory: never a whole body -----------------------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of process `pid`, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def reset_peak(pid: int) -> bool:
    """Start VmHWM again from the current RSS (Linux `clear_refs` 5); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def growth_mib(pid: int, before: dict[str, int]) -> float:
    """How far the peak RSS rose above the RSS of `before`, in MiB."""
    return (memory_kib(pid)["VmHWM"] - before["VmRSS"]) / 1024


def upload(origin: str, request_id: str, *, with_length: bool, results: dict[str, Any]) -> None:
    headers = {"x-request-id": request_id, "content-type": "application/octet-stream"}
    if with_length:
        headers["content-length"] = str(BIG)
    with httpx.Client(timeout=120.0) as client:
        response = client.post(f"{origin}/v1/uploads/upload_1/parts", content=pattern(BIG), headers=headers)
    results[request_id] = response


def test_four_concurrent_100_mb_uploads_are_streamed_not_held(
    turnout: RunningProcess, upstream: PassthroughUpstream
) -> None:
    pid = turnout.process.pid
    for _ in range(3):  # warm up: the connection pools, the first requests' allocations
        upload(turnout.origin, new_request_id(), with_length=True, results={})
    before = memory_kib(pid)
    reset_peak(pid)
    results: dict[str, Any] = {}
    ids = [new_request_id() for _ in range(4)]
    threads = [
        threading.Thread(
            target=upload, args=(turnout.origin, rid), kwargs={"with_length": i % 2 == 0, "results": results}
        )
        for i, rid in enumerate(ids)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    grew = growth_mib(pid, before)
    print(
        f"\n4 concurrent 100 MB uploads: the server's peak RSS grew by {grew:.1f} MiB"
        f" (from {before['VmRSS'] / 1024:.1f} MiB)"
    )
    expected = digest_of(BIG)
    for i, request_id in enumerate(ids):
        assert results[request_id].status_code == 200, results[request_id].text
        seen = upstream.seen[request_id]
        assert (seen.size, seen.sha256) == (BIG, expected)
        assert upstream.header(request_id, "content-length") == ([str(BIG)] if i % 2 == 0 else [])
        assert upstream.header(request_id, "transfer-encoding") == ([] if i % 2 == 0 else ["chunked"])
    assert grew < 100, f"4 x 100 MB uploads grew the server's RSS by {grew:.0f} MiB: bodies are being held"


def test_a_100_mb_download_is_streamed_not_held(turnout: RunningProcess) -> None:
    pid = turnout.process.pid
    before = memory_kib(pid)
    reset_peak(pid)
    sha, size = hashlib.sha256(), 0
    with httpx.stream("GET", f"{turnout.origin}/v1/files/f/content?bytes={BIG}&chunked=1", timeout=120) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        for chunk in response.iter_raw():
            sha.update(chunk)
            size += len(chunk)
    grew = growth_mib(pid, before)
    print(f"\na 100 MB download: the server's peak RSS grew by {grew:.1f} MiB")
    assert (size, sha.hexdigest()) == (BIG, digest_of(BIG))
    assert grew < 50, f"a 100 MB download grew the server's RSS by {grew:.0f} MiB: the body is being held"


# --- metrics and the passthrough setting --------------------------------------------------------------------


def test_passed_through_requests_are_counted_by_api_family(http: httpx.Client) -> None:
    http.get("/v1/fine_tuning/jobs?limit=1")
    http.get("/v1/not-an-openai-family/x")
    text = http.get("/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("turnout_requests_total{")]
    assert any('endpoint="fine_tuning"' in line and 'route="passthrough"' in line for line in lines), lines
    assert any('endpoint="other"' in line and 'route="passthrough"' in line for line in lines), lines
    assert "not-an-openai-family" not in text


POLICY = """
upstreams:
  chat: {base_url: "${DEAD_URL}", api_key: "${OPENAI_API_KEY}"}
  files: {base_url: "${FILES_URL}", api_key: "${OPENAI_API_KEY}"}
routes:
  main: {upstream: chat, model: gpt-4o-mini}
rules:
  - name: default
    route: main
passthrough: {upstream: files}
"""


def test_the_passthrough_setting_names_the_upstream(tmp_path: Path, upstream: PassthroughUpstream) -> None:
    """The first route's upstream would refuse every connection: the files reach the one `passthrough` names."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = clean_env(
        TURNOUT_CONFIG=str(policy),
        OPENAI_API_KEY=SERVER_KEY,
        DEAD_URL=f"http://127.0.0.1:{free_port()}/v1",
        FILES_URL=upstream.base_url,
    )
    with running(start_turnout(env)) as process:
        request_id = new_request_id()
        response = httpx.get(f"{process.origin}/v1/files", headers={"x-request-id": request_id})
        assert response.status_code == 200, response.text
        assert upstream.seen[request_id].target == "/v1/files"
        assert upstream.header(request_id, "authorization") == [f"Bearer {SERVER_KEY}"]
