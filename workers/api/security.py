"""Response headers every answer carries (`SecurityHeaders`); the rate limit is `rate_limit`."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: No inline script or style anywhere; pages load their own files only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
#: The Swagger UI at /docs loads its script and styles from a CDN and runs one inline script.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: a browser then sends a form post's Origin, which the web
    # app checks (under no-referrer it sends "null").
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` and a Content-Security-Policy to every answer that lacks them;
    plain ASGI (no task or stream per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = _encoded(
            {**SECURITY_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
        )
        self._docs_headers = _encoded(
            {**SECURITY_HEADERS, "Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        defaults = (
            self._docs_headers
            if scope["path"] in ("/docs", "/docs/oauth2-redirect")
            else self._headers
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A new list: a response object's own may be sent again.
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(pair for pair in defaults if pair[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _encoded(headers: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """ASGI's raw headers: lower-case latin-1 names and latin-1 values."""
    return tuple(
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    )
