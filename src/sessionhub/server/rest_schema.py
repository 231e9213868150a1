"""What the OpenAPI document says about the sessions API beyond what FastAPI derives from
its routes: the session and stream-position schemas, and what depends on the registered
kinds (their create bodies, their action names, the state and kind filters).

``describe`` is called once per document (``system.install``); ``tests/test_openapi.py``
checks it against the kinds' own validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..core.engine import MAX_NUMBER, MIN_NUMBER
from ..core.kind import Attr, Kind
from ..core.model import JSON
from .rest import CreateSession

_TIME_OUT: JSON = {"type": ["string", "null"], "format": "date-time"}
SESSION_SCHEMA: JSON = {
    "title": "Session",
    "type": "object",
    "required": ["id", "kind", "owner", "state", "version", "attributes", "metadata"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "owner": {"type": "string"},
        "state": {"type": "string"},
        "version": {
            "type": "integer",
            "minimum": 1,
            "description": "+1 on every change: with the id, a change's stable identity",
        },
        "attributes": {"type": "object"},
        "metadata": {"type": "object"},
        "counters": {"type": "object", "additionalProperties": {"type": "integer"}},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "started_at": _TIME_OUT,
        "last_activity_at": _TIME_OUT,
        "ended_at": _TIME_OUT,
        "end_reason": {"type": ["string", "null"]},
        "end_detail": {"type": ["string", "null"]},
        "duration_seconds": {"type": ["number", "null"]},
        "stream": {"$ref": "#/components/schemas/StreamPosition"},
    },
}
STREAM_SCHEMA: JSON = {
    "title": "StreamPosition",
    "description": "The realtime topic's position this answer reflects (read before it): "
    "subscribe from here and nothing is missed",
    "type": "object",
    "required": ["topic", "offset", "epoch"],
    "properties": {
        "topic": {"type": "string"},
        "offset": {"type": "integer", "minimum": 0},
        "epoch": {"type": "string"},
    },
}


# -- what the OpenAPI document says about the registered kinds --------------------------------


def _attr_schema(spec: Attr) -> JSON:
    """One attribute as ``Kind.validate_attributes`` checks it."""
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    options: list[JSON] = []
    for t in types:
        if t is str:
            options.append({"type": "string", **_limit(spec.max_length)})
        elif t is bool:
            options.append({"type": "boolean"})
        elif t is int:
            options.append({"type": "integer", "minimum": MIN_NUMBER, "maximum": MAX_NUMBER})
        elif t is float:
            options.append({"type": "number", "minimum": MIN_NUMBER, "maximum": MAX_NUMBER})
        elif t is dict:
            options.append({"$ref": "#/components/schemas/JsonObject"})
        elif t is list:
            options.append({"$ref": "#/components/schemas/JsonArray"})
        else:  # a type this table does not know: no claim beyond "some JSON"
            options.append({"$ref": "#/components/schemas/JsonValue"})
    out: JSON = options[0] if len(options) == 1 else {"anyOf": options}
    if spec.choices is not None:
        return {"enum": list(spec.choices)}  # null only if it is a choice
    if not spec.required:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _limit(max_length: int | None) -> JSON:
    return {} if max_length is None else {"maxLength": max_length}


#: An ISO-8601 time as the imaging kind reads it (``datetime.fromisoformat``): a valid
#: date-time, upper-case ``T``, no leap second.
_TIME: JSON = {
    "anyOf": [
        {
            "type": "string",
            "format": "date-time",
            "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]+)?"
            r"(Z|[+-][0-9]{2}:[0-9]{2})$",
        },
        {"type": "null"},
    ]
}


def _imaging_rules() -> dict[str, JSON]:
    """What the imaging kind checks beyond its attribute table (``Imaging.
    validate_attributes``): nested shapes. Until a kind can state its own schema (a
    ``Kind.attributes_schema()``), the REST layer says it; the OpenAPI test keeps the two
    in step (a schema-valid body the kind refuses fails it)."""
    from ..kinds import imaging

    states = list(imaging.ACTIVITIES)
    # Beyond the keys a rule names, an object holds free JSON, with the same bounds as
    # every JSON value here (numbers within ±(2^63-1024), valid Unicode, ...).
    free: JSON = {"$ref": "#/components/schemas/JsonValue"}
    counts: JSON = {
        "type": "object",
        "maxProperties": 64,
        "propertyNames": {"maxLength": 64},
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": MAX_NUMBER},
    }
    activity: JSON = {
        "type": "object",
        "required": ["state"],
        "properties": {
            "state": {"enum": states},
            "previous": {"enum": [None, *states]},
            "since": _TIME,
            "timeline": {
                "type": "array",
                "maxItems": imaging.TIMELINE,
                "items": {
                    "type": "object",
                    "required": ["state"],
                    "properties": {"state": {"enum": states}},
                    "additionalProperties": free,
                },
            },
        },
        "additionalProperties": free,
    }
    rules: dict[str, JSON] = {name: _TIME for name in imaging._TIMES}
    rules.update({name: _nullable(counts) for name in imaging._COUNTS})
    rules["activity"] = _nullable(activity)
    rules["target_coordinates"] = _nullable(
        {
            "type": "object",
            "propertyNames": {"enum": ["ra", "dec"]},
            "additionalProperties": {"type": ["string", "null"]},
        }
    )
    rules["recent_events"] = _nullable(
        {
            "type": "array",
            "maxItems": 2 * imaging.RECENT_EVENTS,
            "items": {
                "type": "object",
                "required": ["eventType", "timestamp"],
                "properties": {"eventType": {"type": "string"}, "timestamp": {"type": "string"}},
                "additionalProperties": free,
            },
        }
    )
    rules["equipment"] = _nullable(
        {
            "type": "object",
            "maxProperties": 32,
            "additionalProperties": {
                "type": "object",
                "required": ["connected"],
                "properties": {"connected": {"type": "boolean"}},
                "additionalProperties": free,
            },
        }
    )
    return rules


def _nullable(schema: JSON) -> JSON:
    return {"anyOf": [schema, {"type": "null"}]}


#: Kind -> attribute -> schema, for kinds whose checks go beyond their attribute table.
_BEYOND_THE_TABLE = {"imaging": _imaging_rules}


def _create_variant(kind: Kind, default: bool) -> JSON:
    """``POST /api/sessions`` for one kind: exactly what it accepts."""
    required = sorted(n for n, a in kind.attributes.items() if a.required)
    properties = {n: _attr_schema(a) for n, a in kind.attributes.items()}
    rules = _BEYOND_THE_TABLE.get(kind.name)
    if rules is not None:
        properties.update({n: s for n, s in rules().items() if n in properties})
    attributes: JSON = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "description": f"The attributes of kind {kind.name!r}",
    }
    if required:
        attributes["required"] = required
    metadata: JSON = {"$ref": "#/components/schemas/JsonObject"}
    if kind.reserved_metadata:
        metadata = {
            "allOf": [metadata],
            "propertyNames": {"not": {"enum": sorted(kind.reserved_metadata)}},
            "description": "Free JSON; the kind's own keys are reserved",
        }
    props = dict(_CREATE_COMMON)
    props.update(kind={"const": kind.name}, attributes=attributes, metadata=metadata)
    variant: JSON = {
        "type": "object",
        "title": f"Create a {kind.name} session",
        "additionalProperties": False,
        "properties": props,
    }
    needs = ([] if default else ["kind"]) + (["attributes"] if required else [])
    if needs:
        variant["required"] = needs
    return variant


_CREATE_COMMON: JSON = {
    "owner": CreateSession.model_json_schema()["properties"]["owner"],
}


def _names_pattern(names: Iterable[str]) -> str:
    """Comma-separated names (blanks between commas are skipped, as ``_csv`` does)."""
    alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    one = rf"\s*(?:{alt})?\s*"
    return rf"^{one}(?:,{one})*$"


def describe(schema: JSON, kinds: Mapping[str, Kind]) -> JSON:
    """Fill the OpenAPI document with what depends on the registered ``kinds``: the body of
    ``POST /api/sessions`` (one variant per kind) and the names the ``kind`` and ``state``
    filters accept."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(Session=SESSION_SCHEMA, StreamPosition=STREAM_SCHEMA)
    paths = schema.get("paths", {})
    create = paths.get("/api/sessions", {}).get("post")
    if create is not None:
        variants = [_create_variant(k, k.name == "generic") for k in kinds.values()]
        content = create["requestBody"]["content"]["application/json"]
        content["schema"] = {"anyOf": variants}
    actions = sorted({t.action for k in kinds.values() for t in k.lifecycle.transitions})
    act = paths.get("/api/sessions/{session_id}/actions/{action}", {}).get("post", {})
    for param in act.get("parameters", []):
        if param["name"] == "action" and param["in"] == "path":
            # Every kind's actions; one the session's kind does not have is a 404.
            param["schema"] = {"type": "string", "enum": actions}
    states = {s for k in kinds.values() for s in k.lifecycle.states}
    # The list takes any kind name (an unknown one matches nothing); the count refuses one.
    accepted = {
        "/api/sessions": {"state": states},
        "/api/sessions/count": {"state": states, "kind": set(kinds)},
    }
    for path, filters in accepted.items():
        for param in paths.get(path, {}).get("get", {}).get("parameters", []):
            names = filters.get(param["name"])
            if names is not None and param["in"] == "query":
                param["schema"] = {
                    "anyOf": [
                        {
                            "type": "array",
                            "items": {"type": "string", "pattern": _names_pattern(names)},
                        },
                        {"type": "null"},
                    ]
                }
    return schema
