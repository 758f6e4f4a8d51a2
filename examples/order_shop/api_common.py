"""What every route of the shop's API shares: who is asking, the error answers (handled and
documented in OpenAPI), and stored events as JSON. Errors speak the API's terms: never a stream
name such as ``wallet-42``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventtape import (
    AggregateNotFound,
    ConcurrencyError,
    Event,
    InvalidStreamId,
    ProjectionTimeout,
    RecordedEvent,
    SubjectForgotten,
    tags_of,
)

from .domain import IllegalTransition, KeyReused, ShopError
from .http_guard import MAX_BODY_BYTES, invalid_request
from .schemas import Invalid, Problem, StatusProblem

_bearer = HTTPBearer(auto_error=False, description="a token that names the actor")

_ANSWERS: dict[int, tuple[type[Any], str]] = {
    401: (Problem, "no valid bearer token"),
    403: (Problem, "the actor may not do this"),
    404: (Problem, "not found, or not the caller's"),
    409: (StatusProblem, "conflicts with the current state"),
    413: (Problem, f"the body is larger than {MAX_BODY_BYTES} bytes"),
    415: (Problem, "the body is not application/json"),
    422: (Invalid, "invalid input: where and why"),
    504: (Problem, "the read model did not catch up in time"),
}


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers a route gives."""
    return {code: {"model": _ANSWERS[code][0], "description": _ANSWERS[code][1]} for code in codes}


BODY = (413, 415, 422)


def _actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The authenticated actor, from the bearer token (401 without a valid one)."""
    tokens = request.app.state.shop.settings.tokens
    found = tokens.get(credentials.credentials) if credentials is not None else None
    if found is None:
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
    return str(found)


Actor = Annotated[str, Depends(_actor)]


def event_out(record: RecordedEvent[Event]) -> dict[str, Any]:
    return {
        "version": record.version,
        "type": record.event_type,
        "data": record.event.model_dump(mode="json"),
        "actor": record.actor,
        "recorded_at": record.recorded_at,
        "causation_id": record.causation_id,
        "correlation_id": record.correlation_id,
        "position": record.position,
        # Its stream's implicit tag and the tags its class declares (DCB decisions read these).
        "tags": sorted({f"stream:{record.stream_id}", *tags_of(record.event)}),
    }


def install_error_handlers(app: FastAPI) -> None:
    """Answer the shop's and eventtape's errors with a status and a message in the API's terms."""
    app.add_exception_handler(RequestValidationError, invalid_request)

    @app.exception_handler(IllegalTransition)
    async def illegal(request: Request, error: IllegalTransition) -> JSONResponse:
        return JSONResponse({"detail": str(error), "status": error.status}, status_code=409)

    @app.exception_handler(KeyReused)
    async def key_reused(request: Request, error: KeyReused) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(ShopError)
    async def refused(request: Request, error: ShopError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(AggregateNotFound)
    async def not_found(request: Request, error: AggregateNotFound) -> JSONResponse:
        return JSONResponse({"detail": "not found"}, status_code=404)  # never a stream name

    @app.exception_handler(InvalidStreamId)
    async def bad_id(request: Request, error: InvalidStreamId) -> JSONResponse:
        return JSONResponse({"detail": "invalid id"}, status_code=422)  # never a stream name

    @app.exception_handler(SubjectForgotten)
    async def erased(request: Request, error: SubjectForgotten) -> JSONResponse:
        # An erased customer's order may not carry new personal data (nothing was stored).
        detail = "this customer's personal data was erased: order without delivery details"
        return JSONResponse({"detail": detail}, status_code=409)

    @app.exception_handler(ConcurrencyError)
    async def conflict(request: Request, error: ConcurrencyError) -> JSONResponse:
        return JSONResponse({"detail": "changed concurrently; retry"}, status_code=409)

    @app.exception_handler(ProjectionTimeout)
    async def lagging(request: Request, error: ProjectionTimeout) -> JSONResponse:
        detail = f"the read model has not reached position {error.position} yet; retry"
        return JSONResponse({"detail": detail}, status_code=504)
