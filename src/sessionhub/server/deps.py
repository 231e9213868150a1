"""FastAPI dependencies shared by the routers (the runtime, the hub and the caller) and the
request field types they share (free JSON as the server accepts it)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import AfterValidator, WithJsonSchema

from ..core.engine import MAX_JSON_DEPTH, MAX_NUMBER, MIN_NUMBER, json_fault
from ..core.principal import Principal
from ..hub import Hub
from .runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The runtime of the app serving ``request`` (plain function; call it anywhere)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


# The dependencies below are ``async def`` on purpose: FastAPI runs plain ``def``
# dependencies in a worker thread, a thread hop per dependency per request that cost more
# than a whole heartbeat.


async def runtime_dependency(request: Request) -> Runtime:
    return get_runtime(request)


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.runtime.hub
    return hub


async def get_principal(request: Request) -> Principal:
    """The authenticated caller (401 problem if missing or invalid)."""
    runtime: Runtime = request.app.state.runtime
    principal = runtime.auth.authenticate(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    request.state.principal = principal
    return principal


HubDep = Annotated[Hub, Depends(get_hub)]
RuntimeDep = Annotated[Runtime, Depends(runtime_dependency)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


# -- free JSON in request bodies ----------------------------------------------------------------

#: The JSON Schema of one free JSON value, as the OpenAPI document names it (``$ref``s to
#: ``components/schemas``): what ``json_value`` below lets through, as far as JSON Schema can
#: say it. Nesting depth and encoded size are limited too (in words, in the descriptions).
JSON_SCHEMAS: dict[str, dict[str, Any]] = {
    "JsonValue": {
        "description": f"Any JSON value; numbers within ±(2^63-1024), nested at most "
        f"{MAX_JSON_DEPTH} "
        "levels, strings of Unicode characters (no lone surrogates)",
        "anyOf": [
            {"type": "null"},
            {"type": "boolean"},
            {"type": "string"},
            {"type": "number", "minimum": MIN_NUMBER, "maximum": MAX_NUMBER},
            {"$ref": "#/components/schemas/JsonArray"},
            {"$ref": "#/components/schemas/JsonObject"},
        ],
    },
    "JsonArray": {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
    "JsonObject": {
        "type": "object",
        "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
    },
}


def check_json_value(value: Any, what: str = "value") -> Any:
    """``value``, if it is plain JSON a client can read back (``core.engine.json_fault``);
    else ``ValueError`` naming ``what`` (pydantic turns it into a 422 naming the field)."""
    fault = json_fault(value, what)
    if fault is not None:
        raise ValueError(fault)
    return value


#: Where a field's schema is one of ``JSON_SCHEMAS`` (see ``resolve_json_refs``).
_MARK = "x-sessionhub-json"


def _checked(what: str) -> AfterValidator:
    return AfterValidator(lambda v: check_json_value(v, what))


#: A JSON object field (metadata, attributes, ...): validated here, documented as
#: ``JsonObject``. A bad one is a 422 naming the field, never a 500 from an encoder later.
JsonObject = Annotated[
    dict[str, Any], _checked("the object"), WithJsonSchema({_MARK: "JsonObject"})
]


def integral_to_int(value: Any) -> Any:
    """``value`` with every float that is a whole number (``3.0``) made an int: JSON has
    one number type, and JSON Schema calls ``3.0`` an integer, so where a kind checks for an
    integer (a count, a generation) ``3.0`` must pass as ``3``. Values are checked first
    (``check_json_value``), so every such float fits in 64 bits."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: integral_to_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_to_int(v) for v in value]
    return value


#: Attributes: a JSON object whose whole-number floats are integers (see above).
JsonAttributes = Annotated[
    dict[str, Any],
    _checked("the object"),
    AfterValidator(integral_to_int),
    WithJsonSchema({_MARK: "JsonObject"}),
]
#: A JSON array field, likewise.
JsonArray = Annotated[list[Any], _checked("the array"), WithJsonSchema({_MARK: "JsonArray"})]


def resolve_json_refs(document: dict[str, Any]) -> dict[str, Any]:
    """Point the fields above at their schemas in an OpenAPI document (and add those). The
    fields carry a marker rather than a ``$ref`` because pydantic resolves every ``$ref`` it
    sees itself, and these schemas live in the document, not in pydantic."""
    document.setdefault("components", {}).setdefault("schemas", {}).update(JSON_SCHEMAS)
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = node.pop(_MARK, None)
            if name is not None:
                node["$ref"] = f"#/components/schemas/{name}"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return document
