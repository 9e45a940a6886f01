"""A small blocking HTTP client over `wasi:http/outgoing-handler`.

A URL names a route, not a host: `http://docker/v1.41/_ping` goes to whatever the operator
mapped `docker` to. A transport failure (connection refused, a route the operator did not
configure) raises `Err(FactoryError_Unavailable)`; the engine's answers are returned as they are.
"""
import json
from dataclasses import dataclass
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler
from wit_world.imports import wasi_http_types as http
from wit_world.imports.keepwarm_factory_types import (
    FactoryError_Conflict, FactoryError_Engine, FactoryError_InvalidSpec,
    FactoryError_NotFound, FactoryError_Unavailable,
)
from wit_world.imports.streams import StreamError_Closed

METHODS = {"GET": http.Method_Get(), "POST": http.Method_Post(), "DELETE": http.Method_Delete()}
CHUNK = 4096  # the most one blocking write may take


@dataclass
class Response:
    status: int
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")

    def error(self, what: str) -> Err:
        """The factory error for an engine's failed answer (404 not-found, 409 conflict, ...)."""
        try:
            message = self.json().get("message") or self.body.decode(errors="replace")
        except (ValueError, AttributeError):
            message = self.body.decode(errors="replace")
        text = f"{what}: {message.strip()[:300]} (HTTP {self.status})"
        kind = {404: FactoryError_NotFound, 409: FactoryError_Conflict, 400: FactoryError_InvalidSpec,
                422: FactoryError_InvalidSpec, 503: FactoryError_Unavailable}.get(self.status, FactoryError_Engine)
        return Err(kind(text))

    def ok(self, what: str) -> "Response":
        if 200 <= self.status < 300:
            return self
        raise self.error(what)


def request(method: str, url: str, body: Optional[bytes] = None,
            headers: List[Tuple[str, bytes]] = ()) -> Response:
    parts = urlsplit(url)
    fields = list(headers)
    # a length, always: an engine takes a chunked empty body for a body (Docker refuses it on
    # POST /start)
    fields.append(("content-length", str(len(body or b"")).encode()))
    if body is not None:
        fields.append(("content-type", b"application/json"))
    outgoing = http.OutgoingRequest(http.Fields.from_list(fields))
    outgoing.set_method(METHODS[method])
    outgoing.set_scheme(http.Scheme_Http())
    outgoing.set_authority(parts.netloc)
    outgoing.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else ""))
    sink = outgoing.body()
    try:
        future = outgoing_handler.handle(outgoing, None)
    except Err as e:
        raise Err(FactoryError_Unavailable(f"{method} {url}: {e.value}"))
    stream = sink.write()
    for i in range(0, len(body or b""), CHUNK):
        stream.blocking_write_and_flush(body[i:i + CHUNK])
    stream.__exit__(None, None, None)
    http.OutgoingBody.finish(sink, None)
    while (answer := future.get()) is None:
        future.subscribe().block()
    if not isinstance(answer, Ok) or not isinstance(answer.value, Ok):
        error = answer.value if isinstance(answer, Ok) else answer
        raise Err(FactoryError_Unavailable(f"{method} {url}: {getattr(error, 'value', error)}"))
    response = answer.value.value
    status = response.status()
    incoming = response.consume()
    reader = incoming.stream()
    data = bytearray()
    while True:
        try:
            data += reader.blocking_read(64 * 1024)
        except Err as e:
            if isinstance(e.value, StreamError_Closed):
                break
            raise Err(FactoryError_Unavailable(f"{method} {url}: the answer broke off"))
    reader.__exit__(None, None, None)
    return Response(status=status, body=bytes(data))
