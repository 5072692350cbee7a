"""Stripe's nested form encoding: ``line_items[0][price_data][unit_amount]=500``.

Parsing yields nested dicts of strings. Arrays stay dicts keyed by their
index strings (``{"0": {...}, "1": {...}}``) because only the endpoint's
schema knows whether ``metadata[0]`` is the first element of an array or a
metadata key named "0"; the schema check (`spec.py`) turns them into lists.
``types[]=a&types[]=b`` appends, giving the keys "0", "1"; each ``[]``
starts a new element, so nested arrays of hashes need explicit indexes, as
Stripe's client libraries send them.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote

from .errors import ParamError

_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


def split_key(key: str) -> list[str]:
    """``a[b][0]`` -> ``["a", "b", "0"]``; a key that is not of that shape stays whole."""
    match = _KEY.fullmatch(key)
    if match is None:
        return [key]
    return [match.group(1)] + _SEGMENT.findall(match.group(2))


def join_key(parts: list[str]) -> str:
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs of a query string or form body, blanks kept."""
    return parse_qsl(text, keep_blank_values=True)


def nest(pairs: list[tuple[str, str]]) -> dict:
    """Build the nested parameters; a key used both as a value and as a hash is refused."""
    root: dict = {}
    for key, value in pairs:
        parts = split_key(key)
        node = root
        for depth, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            last = depth == len(parts) - 1
            existing = node.get(part)
            if last:
                if isinstance(existing, dict):
                    raise _conflict(parts[:depth + 1])
                node[part] = value
            else:
                if existing is None:
                    existing = node[part] = {}
                elif not isinstance(existing, dict):
                    raise _conflict(parts[:depth + 1])
                node = existing
    return root


def _conflict(parts: list[str]) -> ParamError:
    name = join_key(parts)
    return ParamError(f"Invalid hash: {name} was given both as a value and as a hash", param=name)


def encode(params: dict, prefix: str = "") -> str:
    """Encode nested dicts and lists the way Stripe's client libraries do."""
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in flatten(params, prefix))


def flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return [(prefix, _scalar(value))]
    pairs = []
    for key, child in items:
        pairs.extend(flatten(child, f"{prefix}[{key}]" if prefix else str(key)))
    return pairs


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
