"""An OTLP/HTTP trace receiver on loopback: decodes what exporters post to `/v1/traces` (protobuf) and keeps the spans.

For the tracing tests and benchmarks where no OpenTelemetry Collector can be installed (no registry here ships
one: PyPI, npm and Debian have none). It decodes with the specification's own messages (`opentelemetry-proto`),
answers as a collector does (an empty `ExportTraceServiceResponse`), and hands spans out as plain values.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status: str
    """`ok`, `error` or `unset`."""
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    return getattr(value, which) if which is not None else None


@dataclass
class Receiver:
    """Spans received so far (thread-safe), and how many export requests brought them."""

    url: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    exports: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=KINDS.get(span.kind, "unspecified"),
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                            events=[(e.name, {kv.key: _value(kv.value) for kv in e.attributes}) for e in span.events],
                            status={0: "unset", 1: "ok", 2: "error"}[span.status.code],
                            resource=resource,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.spans.extend(found)
            self.exports += 1

    def wait_for(self, until: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0) -> list[ReceivedSpan]:
        """The spans once `until(spans)` holds (or, after `timeout`, as they are: the test's assertions say why)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if until(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.02)

    def trace(self, trace_id: str, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """The spans of one trace once `count` of them came, oldest first."""
        spans = self.wait_for(lambda spans: sum(s.trace_id == trace_id for s in spans) >= count, timeout)
        return sorted((s for s in spans if s.trace_id == trace_id), key=lambda s: s.start_ns)


@contextmanager
def otlp_receiver(port: int = 0) -> Iterator[Receiver]:
    """A receiver listening on loopback (a free port by default) until the block ends; `url`: its OTLP/HTTP base URL."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            receiver.add(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":  # `python -m tests.otlp_receiver PORT`: for the benchmarks, until terminated
    import signal
    import sys

    with otlp_receiver(int(sys.argv[1])):
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
