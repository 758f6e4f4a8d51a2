"""What a request body must be before the API parses it, and errors that never echo input.

`BodyGuard` is plain ASGI middleware in front of the app. It refuses, before any parsing:
a body larger than the limit (413, counted as the bytes arrive, so a chunked body without a
``Content-Length`` is cut off too), a body that is not ``application/json`` (415), and a body
that is not strict JSON in UTF-8 (422): bytes that are not UTF-8, ``NaN``/``Infinity``, numbers
too large for a float (``1e400``), a key given twice, nesting too deep to parse. The app then
sees only bodies that parse into finite values, and its handlers never meet ``inf``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 64 * 1024
"""The largest body the shop reads: an order of 50 lines is about 3 KiB."""

_MAX_MESSAGE = 200  # characters of a validation message sent back
_MAX_ERRORS = 20  # validation errors sent back per request


class _Refused(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("a number is too large")
    return value


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Refused("a key appears twice in one object")
    return result


def check_json(body: bytes) -> str | None:
    """Return why ``body`` is not strict JSON in UTF-8, or ``None`` if it is."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    try:
        json.loads(
            text,
            parse_float=_finite,
            parse_constant=_constant,
            object_pairs_hook=_unique_keys,
        )
    except _Refused as refusal:
        return str(refusal)
    except RecursionError:
        return "the body is nested too deeply"
    except ValueError:  # JSONDecodeError, and integers too long to convert
        return "the body is not valid JSON"
    return None


class BodyGuard:
    """ASGI middleware: size, media type and JSON checks on every request body.

    Args:
        app: The application behind it.
        max_bytes: The largest body accepted.
        exempt: Path prefixes of mounted apps that check their own bodies (the console takes
            form posts, capped at 64 kB by itself).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, exempt: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or any(
            path == prefix or path.startswith(prefix + "/") for prefix in self.exempt
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _problem(scope, receive, send, 413, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:  # stop reading: the rest is never buffered
                await _problem(scope, receive, send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            media_type, _, parameters = headers.get("content-type", "").partition(";")
            charset = parameters.strip().lower().replace(" ", "")
            if media_type.strip().lower() != "application/json" or charset not in (
                "",
                "charset=utf-8",
            ):  # JSON is UTF-8 (RFC 8259): a body declared otherwise would be misread
                await _problem(scope, receive, send, 415, "send the body as UTF-8 application/json")
                return
            why = check_json(body)
            if why is not None:
                detail = [{"loc": ["body"], "msg": why, "type": "json_invalid"}]
                await _problem(scope, receive, send, 422, detail)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"the body is larger than {self.max_bytes} bytes"


async def _problem(scope: Scope, receive: Receive, send: Send, status: int, detail: Any) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def _short(part: Any) -> Any:
    return part if isinstance(part, int) else str(part)[:64]


async def invalid_request(request: Request, error: Exception) -> JSONResponse:
    """A 422 that says where and why, never what was sent (it may be huge, or not JSON-safe)."""
    assert isinstance(error, RequestValidationError)
    errors = [
        {
            "loc": [_short(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "invalid")).removeprefix("Value error, ")[:_MAX_MESSAGE],
            "type": str(e.get("type", "value_error")),
        }
        for e in error.errors()[:_MAX_ERRORS]
    ]
    return JSONResponse({"detail": errors}, status_code=422)
