"""Reading requests the one way every route does: the body through one streamed size limit, JSON in its standard
form only, query strings and bodies through their models, and no NUL in anything that reaches the database.
Every refusal is a `GatewayError` (4xx) naming the problem."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from integrations_pipeline.gateway.connections import GatewayError

ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_JSON_BODY_BYTES = 64 * 1024
NO_NUL = "^[^\\x00]*$"  # PostgreSQL text cannot hold NUL: an identifier with one is refused before any query


def refuse_nul(values: Iterable[str], where: str) -> None:
    """Identifiers reach the database as text, which cannot hold NUL on PostgreSQL: refuse them up front (400)."""
    if any("\x00" in value for value in values):
        raise GatewayError(400, "malformed_identifier", f"the {where} holds a NUL character")


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` (declared, or counted while streaming).
    Every body the gateway reads comes through here, so one limit applies to every route."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            raise GatewayError(400, "malformed_header", "Content-Length must be a non-negative integer")
        if int(declared) > limit:
            raise GatewayError(413, "body_too_large", f"the body must be at most {limit} bytes")
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise GatewayError(413, "body_too_large", f"the body must be at most {limit} bytes")
    except ClientDisconnect:  # nobody reads this answer; it keeps the disconnect out of the error log
        raise GatewayError(400, "client_disconnected", "the client left before the body ended") from None
    return bytes(raw)


def _not_a_number(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999999: the database's json column would refuse it
        raise ValueError(f"{literal[:20]} is out of range")
    return value


def read_json(raw: bytes, what: str) -> Any:
    """Standard JSON only: NaN, Infinity, numbers out of range and integers Python will not convert are refused
    (400), so whatever is accepted can also be stored and acknowledged."""
    try:
        return json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        raise GatewayError(400, "malformed_body", f"the {what} body is not valid JSON") from None


def _fields(invalid: ValidationError) -> dict[str, str]:
    fields = {}
    for issue in invalid.errors(include_url=False, include_input=False):
        fields[".".join(str(part) for part in issue["loc"]) or "body"] = issue["msg"]
    return fields


def invalid(status: int, code: str, what: str, error: ValidationError) -> GatewayError:
    fields = _fields(error)
    # The first problems with their reasons, so the message alone says what to send instead.
    problems = "; ".join(f"{name} ({reason})" for name, reason in list(fields.items())[:3])
    more = f"; and {len(fields) - 3} more" if len(fields) > 3 else ""
    return GatewayError(status, code, f"the {what} is invalid: {problems}{more}", fields)


def parse_json(raw: bytes, model: type[ModelT]) -> ModelT:
    """A JSON body validated strictly (no `"12"` or `true` for a number), and standard JSON only (no NaN)."""
    try:
        parsed = model.model_validate_json(raw or b"null", strict=True)
    except ValidationError as error:
        raise invalid(422, "invalid_body", "request body", error) from None
    read_json(raw or b"null", "request")  # NaN, Infinity, 1e999999: pydantic takes them, JSON does not
    return parsed


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    return parse_json(await read_limited(request, MAX_JSON_BODY_BYTES), model)


def parse_query(request: Request, model: type[ModelT]) -> ModelT:
    """The query string through its model; parameters it does not name are ignored, repeated ones refused."""
    repeated = {
        key: "given more than once" for key in request.query_params if len(request.query_params.getlist(key)) > 1
    }
    if repeated:
        raise GatewayError(400, "invalid_query", f"the query string repeats {', '.join(repeated)}", repeated)
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise invalid(400, "invalid_query", "query string", error) from None
