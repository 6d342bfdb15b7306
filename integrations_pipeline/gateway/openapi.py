"""One declaration per operation (`Operation`) builds both the route and its part of `/openapi.json`.

The models an operation names are the ones its handler parses with (`parse_query`, `parse_headers`, `parse_body`),
so the document states exactly what the server enforces: parameters, headers, bodies in every media type, and
every status with its headers. Request bodies are parsed in pydantic's strict mode: `false` is not a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request

from integrations_pipeline.gateway.parsing import NO_NUL, invalid, refuse_nul
from integrations_pipeline.gateway.schemas import ErrorBody

REF_TEMPLATE = "#/components/schemas/{model}"
# Response headers the gateway sets, by name.
HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "string"}},
    "WWW-Authenticate": {"description": "the scheme to authenticate with", "schema": {"type": "string"}},
    "Location": {"description": "where the browser goes next", "schema": {"type": "string"}},
}


@dataclass(frozen=True)
class Body:
    """A request or response body in one media type: a model (JSON), or text when `model` is None."""

    model: type[BaseModel] | None = None
    media_type: str = "application/json"


@dataclass(frozen=True)
class Answer:
    """One documented response: its status (`200`, `4XX`), bodies by media type and headers (names in HEADERS)."""

    status: str
    description: str
    bodies: tuple[Body, ...] = ()
    headers: tuple[str, ...] = ()


def ok(model: type[BaseModel] | None, status: int = 200, description: str = "success") -> Answer:
    return Answer(str(status), description, (Body(model),) if model is not None else ())


def text(status: int, description: str, media_type: str = "text/plain") -> Answer:
    return Answer(str(status), description, (Body(None, media_type),))


ERROR = Body(ErrorBody)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    handler: str  # the name of a Gateway method
    answers: tuple[Answer, ...]  # the successful ones; refusals are added from the facts below
    authenticated: bool = True
    path_params: type[BaseModel] | None = None  # constraints on `{name}` segments; plain strings otherwise
    query: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    body: tuple[Body, ...] = ()
    body_required: bool = True
    uses_database: bool = True  # answers 503 + Retry-After when the state database is down
    refusals: tuple[Answer, ...] = field(default=())  # statuses beyond 4XX/401/413/503/5XX (502 from a provider)
    path_values: tuple[tuple[str, str], ...] = ()  # path parameters a literal path stands for (/webhooks/zoho)

    def responses(self) -> tuple[Answer, ...]:
        refused = [Answer("4XX", "refused; the body says why", (ERROR,))]
        if self.authenticated:
            refused.append(Answer("401", "no or a wrong API key", (ERROR,), ("WWW-Authenticate",)))
        if self.body:
            refused.append(Answer("413", "the body is larger than the limit", (ERROR,)))
        if self.uses_database:
            refused.append(Answer("503", "the state database is unreachable", (ERROR,), ("Retry-After",)))
        refused.append(Answer("5XX", "the gateway failed; its log names the error type", (ERROR,)))
        return (*self.answers, *self.refusals, *refused)


def check_request(request: Request, operation: Operation) -> None:
    """What every route checks before its handler: no NUL in the path or the query (PostgreSQL text cannot hold
    one), and the path parameters' own rules (404 naming the parameter: no such resource)."""
    refuse_nul(request.path_params.values(), "path")
    refuse_nul(request.query_params.values(), "query string")
    if operation.path_params is not None:
        try:
            operation.path_params.model_validate(request.path_params)
        except ValidationError as error:
            name = str(error.errors()[0]["loc"][0])
            raise invalid(404, f"unknown_{name}", f"{name} in the path", error) from None


# -- the document ------------------------------------------------------------------------------------------------


def _parameters(model: type[BaseModel], where: Literal["path", "query", "header"]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        description = prop.pop("description", None)
        prop.pop("title", None)
        parameter = {"name": name, "in": where, "required": where == "path" or name in required, "schema": prop}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _path_parameters(operation: Operation) -> list[dict[str, Any]]:
    declared = {p["name"]: p for p in _parameters(operation.path_params, "path")} if operation.path_params else {}
    names = [segment.strip("{}") for segment in operation.path.split("/") if segment.startswith("{")]
    plain = {"type": "string", "minLength": 1, "pattern": NO_NUL}
    return [declared.get(name, {"name": name, "in": "path", "required": True, "schema": plain}) for name in names]


def openapi_document(operations: list[Operation]) -> dict[str, Any]:
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for operation in operations:
        modes += [(body.model, "validation") for body in operation.body if body.model is not None]
        modes += [
            (body.model, "serialization")
            for answer in operation.responses()
            for body in answer.bodies
            if body.model is not None
        ]
    refs, definitions = models_json_schema(list(dict.fromkeys(modes)), ref_template=REF_TEMPLATE)

    def content(bodies: tuple[Body, ...], mode: JsonSchemaMode) -> dict[str, Any]:
        return {
            body.media_type: {"schema": refs[(body.model, mode)] if body.model is not None else {"type": "string"}}
            for body in bodies
        }

    paths: dict[str, Any] = {}
    for operation in operations:
        responses: dict[str, Any] = {}
        for answer in operation.responses():
            response: dict[str, Any] = {"description": answer.description}
            if answer.bodies:
                response["content"] = content(answer.bodies, "serialization")
            if answer.headers:
                response["headers"] = {name: HEADERS[name] for name in answer.headers}
            responses[answer.status] = response
        spec: dict[str, Any] = {"operationId": operation.handler, "summary": operation.summary, "responses": responses}
        parameters = _path_parameters(operation)
        if operation.query is not None:
            parameters += _parameters(operation.query, "query")
        if operation.headers is not None:
            parameters += _parameters(operation.headers, "header")
        if parameters:
            spec["parameters"] = parameters
        if operation.body:
            body = content(operation.body, "validation")
            spec["requestBody"] = {"required": operation.body_required, "content": body}
        spec["security"] = [{"apiKey": []}] if operation.authenticated else []
        paths.setdefault(operation.path, {})[operation.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": "integrations_pipeline gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "INTEGRATIONS_API_KEY"}},
        },
    }
