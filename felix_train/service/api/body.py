"""Request bodies: the size limit (`BodyLimit`, 413 before a body is read whole) and the answers for a body
that is not JSON (422 that says where: line, column, and what the parser expected).

Every request body is limited to `Settings.max_body_bytes`, except the dataset upload, which has
`Settings.max_upload_bytes`. The limit is checked against `Content-Length` before the route runs, and the bytes
are counted as they stream in (a chunked body, or one longer than it said).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from felix_train.service.api.config import Settings

UPLOAD_ROUTES = {("POST", "/felix/datasets")}
"""(method, path) of the multipart uploads: limited by `max_upload_bytes` instead of `max_body_bytes`."""

MULTIPART_SLACK = 64 * 1024
"""Room for the multipart framing and form fields around an upload's file."""


class BodyTooLarge(HTTPException):
    """A request body over its limit (413). An `HTTPException`, so that FastAPI passes it on from a body read."""

    def __init__(self, limit: int, setting: str, got: int | None = None):
        size = f"{got} bytes" if got is not None else f"over {limit} bytes"
        super().__init__(413, f"the request body is {size}; the limit is {limit} bytes (`{setting}`)")


class BodyLimit:
    """ASGI middleware: refuse a request body over its limit with 413 before the route reads it whole."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str, str], tuple[int, str]]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["method"], scope["path"].rstrip("/") or "/")
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _answer(BodyTooLarge(limit, setting, declared), scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # read outside a route (e.g. by a middleware): answer here
            if started:
                raise
            await _answer(exc, scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(exc: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers={"Connection": "close"})(
        scope, receive, send)


def body_limits(settings: Settings) -> Callable[[str, str], tuple[int, str]]:
    """(limit, setting name) of a request, by method and path."""
    upload = (settings.max_upload_bytes + MULTIPART_SLACK, "FELIX_MAX_UPLOAD_BYTES")
    other = (settings.max_body_bytes, "FELIX_MAX_BODY_BYTES")
    return lambda method, path: upload if (method, path) in UPLOAD_ROUTES else other


# -- bodies that are not JSON ----------------------------------------------------------------------------


def _line_column(text: str | bytes, pos: int) -> tuple[int, int]:
    newline = "\n" if isinstance(text, str) else b"\n"
    line = text.count(newline, 0, pos) + 1
    return line, pos - (text.rfind(newline, 0, pos) + 1) + 1


def json_error(pos: int, line: int, column: int, what: str) -> dict:
    """One item of a 422 `detail`, shaped like FastAPI's own `json_invalid` item, saying where and what."""
    return {"type": "json_invalid", "loc": ["body", pos],
            "msg": f"the body is not valid JSON: {what} at line {line}, column {column} (character {pos})",
            "input": {}, "ctx": {"error": what, "line": line, "column": column, "position": pos}}


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, with the line and column of a JSON syntax error added to its `json_invalid` item."""
    errors = list(exc.errors())
    for i, item in enumerate(errors):
        if item.get("type") == "json_invalid" and isinstance(exc.body, str | bytes):
            pos = item["loc"][-1] if isinstance(item["loc"][-1], int) else 0
            errors[i] = json_error(pos, *_line_column(exc.body, pos), (item.get("ctx") or {}).get("error", "?"))
    if errors == list(exc.errors()):
        return await request_validation_exception_handler(request, exc)
    return JSONResponse({"detail": errors}, status_code=422)


def _unparsable(cause: BaseException | None) -> dict | None:
    """The 422 item for a body FastAPI could not parse for a reason other than a JSON syntax error."""
    if isinstance(cause, UnicodeDecodeError):
        raw = cause.object if isinstance(cause.object, bytes) else b""
        line, column = _line_column(raw, cause.start)
        what = (f"byte 0x{raw[cause.start]:02x} cannot be read as {cause.encoding} ({cause.reason}); send the JSON "
                "encoded as UTF-8") if raw else cause.reason
        return json_error(cause.start, line, column, what)
    if isinstance(cause, RecursionError):
        return {"type": "json_invalid", "loc": ["body"], "input": {}, "ctx": {"error": "nested too deeply"},
                "msg": "the body is not valid JSON for this API: its arrays and objects are nested too deeply to "
                       "parse (a job spec or a prediction needs only a few levels)"}
    if isinstance(cause, json.JSONDecodeError):
        return json_error(cause.pos, cause.lineno, cause.colno, cause.msg)
    return None


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """FastAPI's answer for an `HTTPException`, except its bare 400 "There was an error parsing the body"."""
    item = _unparsable(exc.__cause__) if exc.status_code == 400 else None
    if item is None:
        return await http_exception_handler(request, exc)
    return JSONResponse({"detail": [item]}, status_code=422)


def install_body_handling(app: FastAPI, settings: Settings) -> None:
    """The body limit and the answers for unparsable bodies."""
    app.add_middleware(BodyLimit, limit_for=body_limits(settings))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
