"""`routes.upstream.UpstreamPath`: the one rule for every path and parameter that reaches an upstream URL."""

from __future__ import annotations

import pytest

from proxy.wire.errors import InvalidPathError
from routes import Upstream, UpstreamPath
from routes.upstream import MAX_TARGET


@pytest.mark.parametrize(
    ("segments", "target"),
    [
        (("chat", "completions"), "/chat/completions"),
        (("models", "gpt-4o-mini"), "/models/gpt-4o-mini"),
        (("models", "gpt-4.1"), "/models/gpt-4.1"),
        (("models", "ft:gpt-4o-mini-2024-07-18:acme::abc123"), "/models/ft:gpt-4o-mini-2024-07-18:acme::abc123"),
        (
            ("models", "ft:gpt-3.5-turbo-0613:personal:recipe-ner:8Xyz"),
            "/models/ft:gpt-3.5-turbo-0613:personal:recipe-ner:8Xyz",
        ),
        (("models", "gpt-4o?limit=100"), "/models/gpt-4o%3Flimit%3D100"),
        (("models", "gpt-4o#frag"), "/models/gpt-4o%23frag"),
        (("models", "a;b&c=d+e"), "/models/a%3Bb%26c%3Dd%2Be"),
        (("models", "%2e%2e"), "/models/%252e%252e"),  # an escape in a value is data: sent as `%25`
        (("models", "..."), "/models/..."),
        (("models", "ünïcode model"), "/models/%C3%BCn%C3%AFcode%20model"),
    ],
)
def test_each_segment_is_encoded_as_one_segment(segments, target) -> None:
    assert UpstreamPath(*segments).target == target


@pytest.mark.parametrize(
    "segment",
    ["", ".", "..", "../admin", "a/b", "a\\b", "..\\..", "a\x00b", "line\nbreak", "\x7f"],
)
def test_a_segment_that_could_leave_its_endpoint_is_refused(segment) -> None:
    with pytest.raises(InvalidPathError) as caught:
        UpstreamPath("models", segment)
    assert caught.value.status == 400
    assert caught.value.instance_code == "invalid_path"


def test_a_path_needs_a_segment_and_has_a_length_limit() -> None:
    with pytest.raises(InvalidPathError):
        UpstreamPath()
    with pytest.raises(InvalidPathError, match="longer than"):
        UpstreamPath("models", "x" * MAX_TARGET)


def test_the_query_is_encoded_from_its_pairs() -> None:
    path = UpstreamPath("files", query=[("purpose", "fine tune"), ("after", "a&b=c"), ("include[]", "x")])
    assert path.target == "/files?purpose=fine%20tune&after=a%26b%3Dc&include%5B%5D=x"


# --- a client's path, for the pass-through -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_path", "raw_query", "target"),
    [
        ("files", "", "/files"),
        ("/files/file-abc/content", "", "/files/file-abc/content"),
        ("models/ft:gpt-4o-mini:acme::abc", "", "/models/ft:gpt-4o-mini:acme::abc"),
        ("models/ft%3Agpt-4o", "", "/models/ft:gpt-4o"),  # normalised: one spelling for one path
        ("files", "limit=10&after=file-1", "/files?limit=10&after=file-1"),
        ("files", "purpose=fine+tune", "/files?purpose=fine%20tune"),
        ("files", "include[]=a&include[]=b", "/files?include%5B%5D=a&include%5B%5D=b"),
        ("vector_stores/vs_1/files", "filter=in_progress", "/vector_stores/vs_1/files?filter=in_progress"),
    ],
)
def test_a_client_path_is_checked_and_normalised(raw_path, raw_query, target) -> None:
    assert UpstreamPath.from_client(raw_path, raw_query).target == target


@pytest.mark.parametrize(
    ("raw_path", "raw_query"),
    [
        ("../organization/admin_api_keys", ""),
        ("files/../../organization", ""),
        ("files/./x", ""),
        ("models/..%2f..%2forganization%2fadmin_api_keys", "limit=100"),  # the attack
        ("models/a%2Fb", ""),
        ("models/a%5cb", ""),
        ("models/%2e%2e/organization", ""),
        ("models/.%2E", ""),
        ("files//x", ""),
        ("files/", ""),
        ("", ""),
        ("files/a%zzb", ""),  # a malformed escape
        ("files/a%", ""),
        ("files/%ff", ""),  # not UTF-8
        ("files/a b", ""),
        ("files/a#b", ""),
        ("files/a?b", ""),
        ("files/a\\b", ""),
        ("files/ünï", ""),
        ("files", "a=%zz"),
        ("files", "a=b#c"),
        ("files", "a=b c"),
        ("files", "a=%ff"),
        ("files", "&".join(f"k{i}=v" for i in range(100))),
    ],
)
def test_a_client_path_that_could_leave_its_endpoint_is_refused(raw_path, raw_query) -> None:
    with pytest.raises(InvalidPathError):
        UpstreamPath.from_client(raw_path, raw_query)


async def test_the_upstream_url_is_its_base_plus_the_checked_path_as_built() -> None:
    upstream = Upstream("u", "http://127.0.0.1:9/v1/", None, session=None)  # type: ignore[arg-type]  # not used
    url = upstream.url(UpstreamPath("models", "gpt-4o?x=1"))
    assert str(url) == "http://127.0.0.1:9/v1/models/gpt-4o%3Fx%3D1"
    assert url.raw_path == "/v1/models/gpt-4o%3Fx%3D1"
    assert url.raw_query_string == ""
