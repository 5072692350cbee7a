"""The Stripe API subset (`stripe-api-subset.json`): routes, parameter check, object shapes.

The json file is Stripe's own description of the endpoints paymentsd uses
(see its README in the project's shared data). The fake checks every
request against it so that it refuses what the real Stripe refuses, and it
builds its objects from the listed properties so that they have the real
shape.

Reading the schema: ``x-open-enum`` marks enums that Stripe's SDK types
leave open for forward compatibility; the server itself still refuses
values it does not know, and so does the fake. The one exception is an
open enum whose only value is ``""``: that is the SDK's spelling of "any
string, or empty to unset".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .errors import ParamError, missing_param, unknown_param

SPEC_PATH = Path(__file__).with_name("stripe-api-subset.json")

# `GET /v1/refunds` is not in the subset file; this is Stripe's RefundListParams.
_EXTRA_ENDPOINTS = {
    "GET /v1/refunds": {
        "params_in": "query",
        "path_params": {},
        "response": "list<refund>",
        "schema": {
            "type": "object",
            "required": [],
            "properties": {
                "charge": {"type": "string"},
                "created": {"anyOf": [
                    {"type": "object", "required": [], "properties": {
                        op: {"type": "integer"} for op in ("gt", "gte", "lt", "lte")}},
                    {"type": "integer"},
                ]},
                "ending_before": {"type": "string"},
                "expand": {"type": "array", "items": {"type": "string"}},
                "limit": {"type": "integer"},
                "payment_intent": {"type": "string"},
                "starting_after": {"type": "string"},
            },
        },
    },
}

METADATA_MAX_KEYS = 50
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500


@dataclass(frozen=True)
class Route:
    """One endpoint: its key (``"POST /v1/checkout/sessions/{session}/expire"``) and schema."""

    key: str
    method: str
    pattern: re.Pattern
    schema: dict


def normalize_route_key(key: str) -> str:
    """``POST /v1/x/{id}`` and ``POST /v1/x/{session}`` name the same route."""
    return re.sub(r"\{[^}]*\}", "{}", " ".join(key.split()))


class ApiSpec:
    def __init__(self, path: Path = SPEC_PATH):
        data = json.loads(path.read_text())
        self.api_version: str = data["source"]["api_version"]
        self.endpoints: dict = {**data["endpoints"], **_EXTRA_ENDPOINTS}
        self.objects: dict = data["objects"]

    # -- routes ------------------------------------------------------------

    def routes(self, keys) -> list[Route]:
        """The routes for the given endpoint keys, each with its compiled path."""
        routes = []
        for key in keys:
            method, template = key.split(" ", 1)
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            routes.append(Route(key, method, re.compile(regex + r"\Z"), self.endpoints[key]["schema"]))
        return routes

    # -- objects -----------------------------------------------------------

    def blank_object(self, kind: str) -> dict:
        """Every top-level property of a Stripe object, empty: null where nullable.

        Properties of type ``list`` (``line_items`` of a session) are left
        out, as Stripe only includes them when expanded.
        """
        blank = {}
        for name, prop in self.objects[kind]["properties"].items():
            if prop["type"] == "list":
                continue
            if prop.get("nullable"):
                blank[name] = None
            else:
                blank[name] = {"integer": 0, "boolean": False, "array": [], "object": {},
                               "string": ""}.get(prop["type"])
        blank["object"] = kind
        return blank

    # -- parameter check ---------------------------------------------------

    def check(self, params: dict, schema: dict) -> dict:
        """Check raw nested params against an endpoint schema; return them typed.

        Raises `ParamError` with Stripe's message and the full parameter name.
        """
        return _check(params, schema, "")


def _child(name: str, key) -> str:
    return f"{name}[{key}]" if name else str(key)


def _check(value, schema: dict, name: str):
    if "anyOf" in schema:
        return _check_any_of(value, schema["anyOf"], name)
    kind = schema.get("type")
    if kind == "object":
        return _check_object(value, schema, name)
    if kind == "array":
        return _check_array(value, schema, name)
    if isinstance(value, dict):
        raise ParamError(f"Invalid {kind or 'value'}: {name} must be a single value, not a hash",
                         param=name)
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", value):
            raise ParamError(f"Invalid integer: {value}", param=name, code="parameter_invalid_integer")
        return int(value)
    if kind == "number":
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ParamError(f"Invalid decimal: {value}", param=name)
        return number
    if kind == "boolean":
        if value not in ("true", "false"):
            raise ParamError(f"Invalid boolean: {value}", param=name)
        return value == "true"
    return _check_string(value, schema, name)


def _check_string(value: str, schema: dict, name: str) -> str:
    enum = schema.get("enum")
    open_string = schema.get("x-open-enum") and enum == [""]
    if enum is not None and not open_string and value not in enum:
        short = name.rsplit("[", 1)[-1].rstrip("]")
        raise ParamError(f"Invalid {short}: must be one of {_listing(enum)}", param=name)
    if schema.get("format") == "decimal":
        try:
            Decimal(value)
        except InvalidOperation:
            raise ParamError(f"Invalid decimal: {value}", param=name) from None
    return value


def _listing(values: list[str]) -> str:
    """``a, b, or c`` as Stripe's messages list allowed values."""
    if len(values) < 3:
        return " or ".join(values)
    return ", ".join(values[:-1]) + ", or " + values[-1]


def _check_object(value, schema: dict, name: str) -> dict:
    if not isinstance(value, dict):
        raise ParamError(f"Invalid object: {name or 'parameters'} must be a hash", param=name or None)
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    if props is None and extra is None:
        return value
    checked = {}
    for key, child in value.items():
        full = _child(name, key)
        if props and key in props:
            checked[key] = _check(child, props[key], full)
        elif extra is not None:
            checked[key] = _check(child, extra, full)
        else:
            raise unknown_param(full)
    for key in schema.get("required", []):
        if key not in value:
            raise missing_param(_child(name, key))
    if name == "metadata" or name.endswith("[metadata]"):
        _check_metadata(checked, name)
    return checked


def _check_metadata(metadata: dict, name: str) -> None:
    """Stripe's limits: 50 keys, keys up to 40 characters, values up to 500."""
    if len(metadata) > METADATA_MAX_KEYS:
        raise ParamError(f"Invalid {name}: metadata can have up to {METADATA_MAX_KEYS} keys, "
                         f"but you passed {len(metadata)}", param=name)
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX:
            raise ParamError(f"Metadata keys can have up to {METADATA_KEY_MAX} characters, but you "
                             f"passed in a key that is {len(key)} characters.", param=_child(name, key))
        if isinstance(value, str) and len(value) > METADATA_VALUE_MAX:
            raise ParamError(f"Metadata values can have up to {METADATA_VALUE_MAX} characters, but "
                             f"you passed in a value that is {len(value)} characters.",
                             param=_child(name, key))


def _check_array(value, schema: dict, name: str) -> list:
    if not isinstance(value, dict) or not all(k.isdigit() for k in value):
        raise ParamError(f"Invalid array: {name} must be an array "
                         f"(e.g. {name}[0]=...)", param=name)
    items = schema.get("items", {})
    return [_check(value[k], items, _child(name, k)) for k in sorted(value, key=int)]


def _check_any_of(value, alternatives: list[dict], name: str):
    """Try the alternatives that fit the value's shape (hash or single value).

    When none accepts it, report the failure of the first fitting
    alternative other than the bare ``""`` one, which only says "or empty".
    """
    is_hash = isinstance(value, dict)
    fitting = [alt for alt in alternatives
               if (alt.get("type") in ("object", "array")) == is_hash or "anyOf" in alt]
    if not fitting:
        raise ParamError(f"Invalid value for {name}: expected "
                         f"{'a single value' if is_hash else 'a hash or an array'}", param=name)
    failures = []
    for alt in fitting:
        try:
            return _check(value, alt, name)
        except ParamError as error:
            failures.append((alt.get("enum") == [""], error))
    raise next((e for only_empty, e in failures if not only_empty), failures[0][1])
