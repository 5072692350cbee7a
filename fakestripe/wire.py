"""What the HTTP layer hands to the fake and gets back, and Stripe's JSON and ids."""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id: ``cs_test_a1B2...``, ``pi_...``, ``req_...``."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def dumps(obj) -> str:
    """Stripe answers (and signs webhooks over) pretty-printed JSON."""
    return json.dumps(obj, indent=2)


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # Close the connection without answering (a scripted network failure).
    drop: bool = False

    @classmethod
    def json(cls, status: int, obj, headers: dict[str, str] | None = None) -> "Response":
        return cls(status, dumps(obj).encode(), headers=dict(headers or {}))
