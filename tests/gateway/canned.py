"""A loopback HTTP server that answers with exactly the bytes a codec encoded, for the official SDKs to parse.

Built on the protocol fakes' base (a real server on 127.0.0.1 with ``TCP_NODELAY``, recording every request).
Each queued ``Canned`` answer is sent as is: a JSON body with its status and headers, or a stream written as
chunked transfer encoding, one HTTP chunk per piece (so an SDK sees the pieces arrive separately).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.fakes.base import FakeServer, RecordedRequest


@dataclass(frozen=True)
class Canned:
    """One answer: ``body`` sent whole, or ``pieces`` streamed with ``content_type``."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    pieces: tuple[bytes, ...] | None = None


class CannedServer(FakeServer):
    """Serves queued ``Canned`` answers in order, whatever the path; 500 when the queue is empty."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[Canned] = []

    def add(self, *answers: Canned) -> None:
        self.answers.extend(answers)

    def handle(self, req: RecordedRequest, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            answer = self.answers.pop(0) if self.answers else Canned(500, b'{"error": "nothing queued"}')
        if answer.pieces is None:
            handler.send_response(answer.status)
            handler.send_header("Content-Type", answer.content_type)
            handler.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(answer.body)
            handler.wfile.flush()
            return
        handler.send_response(answer.status)
        handler.send_header("Content-Type", answer.content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        for piece in answer.pieces:
            if piece:
                self.write_chunk(handler, piece)
        self.end_stream(handler)
