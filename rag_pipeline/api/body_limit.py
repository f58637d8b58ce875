"""Refuse request bodies over a size limit (413) before anything parses them.

A pure ASGI middleware, outermost, so it runs before authentication and before FastAPI reads
the body: a declared `Content-Length` over the limit is refused from the headers alone, and a
body without one (chunked) is counted while it is read and refused as soon as it passes the
limit, never buffered whole. A body within the limit is buffered (API bodies are small JSON) and
replayed to the application.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is not read: the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes:,} bytes (RAG_API_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [value for name, value in scope["headers"] if name == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                await send_error(send, 400, "bad_request", "invalid Content-Length header")
                return
            if length > self.max_bytes:
                await send_error(send, 413, "request_too_large", self._too_large())
                return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away before sending its body: nothing to answer.
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await send_error(send, 413, "request_too_large", self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            # Afterwards only `http.disconnect` can come; let the server deliver it.
            return await receive()

        await self.app(scope, replay, send)
