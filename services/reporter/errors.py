"""One JSON error shape for every answer that is not a success.

Every 4xx and 5xx the API gives is ``{"error": {"code", "message", "field"}}``: ``code``
is a stable word a program can branch on, ``message`` is for people and starts with the
field's name when one is at fault, ``field`` names that query parameter, path parameter
or body field (``null`` when none is). Bad query and path parameters are 400, a request
body that fails validation 422, an unknown path or resource 404, a wrong method 405, a
service that did not answer on the bus 504, and an unexpected failure 500. No valid token
is 401, a token without the endpoint's scope 403, a body over the size limit 413 and a
spent rate limit 429.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = structlog.get_logger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable word: bad_parameter, not_found, timeout, …")
    message: str = Field(description="What went wrong, for people; starts with the field.")
    field: str | None = Field(description="The parameter or body field at fault, if one is.")


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


class ApiError(Exception):
    """An answer other than success, raised anywhere below an endpoint."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        #: Extra response headers (``WWW-Authenticate`` on a 401, say).
        self.headers: dict[str, str] = {}


def bad_parameter(field: str, message: str) -> ApiError:
    """400 naming the parameter; ``message`` gets the field's name in front if it lacks it."""
    text = message if message.startswith(f"{field}:") else f"{field}: {message}"
    return ApiError(400, "bad_parameter", text, field)


def not_found(field: str, message: str) -> ApiError:
    """404 for the resource ``field`` names (``run_id: run r-1 not found``)."""
    return ApiError(404, "not_found", f"{field}: {message}", field)


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(), status_code=status)


#: What every endpoint may answer besides success, for the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A bad query or path parameter (named)."},
    401: {
        "model": ErrorBody,
        "description": "No API token, or an unknown, expired or revoked one.",
    },
    403: {"model": ErrorBody, "description": "The token lacks this endpoint's scope."},
    404: {"model": ErrorBody, "description": "No such resource (or not in the token's workspace)."},
    413: {"model": ErrorBody, "description": "The request body is over the size limit."},
    422: {"model": ErrorBody, "description": "The request body failed validation."},
    429: {"model": ErrorBody, "description": "The token's rate limit is spent (Retry-After)."},
    500: {"model": ErrorBody, "description": "An unexpected failure (logged)."},
}
#: Also for endpoints that ask another service over the bus.
BUS_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The bus (NATS) cannot be reached."},
    504: {"model": ErrorBody, "description": "The service asked did not answer in time."},
}


_NAMED = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.S)


def _field(loc: Sequence[int | str]) -> str | None:
    # ("query", "limit") -> "limit"; ("body", "subtasks", 0, "title") -> "subtasks.0.title"
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("query", "path", "body") else []
    return ".".join(parts) or None


def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    in_body = any(e.get("loc", ("",))[0] == "body" for e in errors)
    messages, fields = [], []
    for err in errors:
        field = _field(err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            text = "not a parameter of this endpoint" if not in_body else "not a known field"
        else:
            text = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            # A model's own check names its field at the front: "title: text contains…"
            if field is None and (named := _NAMED.match(text)):
                field, text = named.group(1), named.group(2)
        fields.append(field)
        messages.append(f"{field}: {text}" if field else text)
    first = fields[0] if fields else None
    if in_body:
        return error_response(422, "invalid_body", "; ".join(messages), first)
    code = "unknown_parameter" if errors[0].get("type") == "extra_forbidden" else "bad_parameter"
    return error_response(400, code, "; ".join(messages), first)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one shape."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        response = error_response(exc.status, exc.code, exc.message, exc.field)
        response.headers.update(exc.headers)
        return response

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {
            404: f"no endpoint at {request.url.path}",
            405: (f"{request.method} is not allowed on {request.url.path}"),
        }.get(exc.status_code, str(exc.detail))
        response = error_response(exc.status_code, code, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation(request, exc)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api_failed", path=request.url.path, method=request.method)
        return error_response(500, "internal", "internal error (logged by the reporter)")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)
