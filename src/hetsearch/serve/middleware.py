"""ASGI middlewares of the search service: security headers on every response, and the upload
size limit, checked before any body is parsed."""

from __future__ import annotations

import json

DRAIN_LIMIT_BYTES = 256 * 1024 * 1024  # an oversized body up to this size is read and dropped before
# answering 413, so the client sees the answer instead of a reset connection
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"), (b"content-security-policy", CSP.encode()),
                    (b"cross-origin-opener-policy", b"same-origin")]


class SecurityHeaders:
    """ASGI middleware: the security headers on every HTTP response (errors included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + \
                    [(name, value) for name, value in SECURITY_HEADERS if name not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """ASGI middleware: bodies larger than ``max_bytes`` get 413 before any parsing.

    A declared Content-Length over the limit is answered at once (after draining the body, up to
    DRAIN_LIMIT_BYTES); a streamed body is buffered up to the limit and replayed to the app."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    def _too_large(self, size: str) -> str:
        return (f"upload too large ({size}); the limit is {self.max_bytes} bytes "
                f"({self.max_bytes / 2**20:.1f} MiB)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self._reject(send, 400, "invalid Content-Length header")
                return
            if length > self.max_bytes:
                drained = 0
                if length <= DRAIN_LIMIT_BYTES:
                    while True:
                        message = await receive()
                        drained += len(message.get("body", b""))
                        if message["type"] == "http.disconnect" or not message.get("more_body", False):
                            break
                await self._reject(send, 413, self._too_large(f"{length} bytes"))
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send, 413, self._too_large(f"more than {self.max_bytes} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
