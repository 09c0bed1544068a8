"""RFC 9457 problem details for every error the API answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # a FastAPI that keeps included routes flat
    def iter_route_contexts(routes):
        return iter(routes)

from app.services.errors import ServiceError

log = logging.getLogger("coopsync.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://coopsync.dev/problems/"

# PostgreSQL refusing a character its text columns cannot hold (a NUL byte): the input's fault.
BAD_TEXT_SQLSTATES = frozenset({"22021", "22P05"})

_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}


class Problem(Exception):
    """Raise anywhere in a request to answer a problem document."""

    def __init__(self, status: int, detail: str, *, type_: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_ or _default_type(status)
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers
        self.extra = extra


def _default_type(status: int) -> str:
    return TYPE_BASE + _TITLES.get(status, "error").lower().replace(" ", "-")


def problem_response(status: int, detail: str, *, type_: str | None = None, title: str | None = None,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": type_ or _default_type(status), "title": title or _TITLES.get(status, "Error"),
            "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_body(status: int, detail: str) -> bytes:
    import orjson

    return orjson.dumps({"type": _default_type(status), "title": _TITLES.get(status, "Error"),
                         "status": status, "detail": detail})


def allowed_methods(routes, scope) -> set[str]:
    """Every method some route serves at this path (each method of a path is a route of its own,
    so one route's methods are not the whole answer), with OPTIONS."""
    probe = {**scope, "type": "http"}
    by_path: dict[str, set[str]] = {}
    for route in iter_route_contexts(routes):
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(probe)[0] is not Match.NONE and route_methods - {"OPTIONS"}:
            by_path.setdefault(getattr(route, "path_format", None) or route.path, set()).update(route_methods)
    if not by_path:
        return set()
    # /v1/stock/receipts is its own resource, not the stock of a sku called "receipts": the paths
    # with the fewest parameters name the resource.
    fewest = min(path.count("{") for path in by_path)
    return set().union(*(m for path, m in by_path.items() if path.count("{") == fewest)) | {"OPTIONS"}


def allow_header(methods: set[str]) -> str:
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, type_=exc.type, title=exc.title,
                                headers=exc.headers, **exc.extra)

    @app.exception_handler(ServiceError)
    async def _refused(_request: Request, exc: ServiceError) -> JSONResponse:
        return problem_response(exc.status, exc.detail)

    @app.exception_handler(DBAPIError)
    async def _database(_request: Request, exc: DBAPIError) -> JSONResponse:
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if state in BAD_TEXT_SQLSTATES:
            return problem_response(422, "text fields and query values may not contain NUL characters")
        raise exc

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such route or resource"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            methods = allowed_methods(_request.app.router.routes, _request.scope)
            if methods:
                headers = {**(headers or {}), "Allow": allow_header(methods)}
        return problem_response(exc.status_code, detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem_response(400, "the request body is not valid JSON",
                                    type_=TYPE_BASE + "invalid-json")
        cleaned = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
        first = cleaned[0] if cleaned else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return problem_response(422, f"{where}: {first['msg']}", type_=TYPE_BASE + "validation",
                                errors=cleaned)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(500, "an unexpected error occurred; it was logged")
