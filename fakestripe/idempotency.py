"""Idempotency keys, with the rules of Stripe's documentation.

- Only POST requests use them. A key is scoped to the API key that sent it
  and lives 24 hours (on the fake's clock, which tests can move forward).
- The first request with a key claims it. While it runs, another request
  with the same key gets 409 ``idempotency_key_in_use``.
- When the endpoint has run, its answer (status and body, 2xx or 4xx) is
  stored; a later request with the same key, endpoint and parameters gets
  exactly those bytes back with ``Idempotent-Replayed: true`` and nothing is
  done again. Other parameters or another endpoint with that key: 400
  ``idempotency_error``.
- Nothing is stored, and the key stays free, when the endpoint never began:
  the parameter check failed (`ParamError`), a scripted ``status`` fault
  answered instead of the endpoint, or a scripted ``drop`` cut the
  connection first. The ``apply_then_drop`` fault stores the answer the
  client never received, which is the case retries with keys exist for.
- "Same parameters" compares the parsed parameters, so the order of the
  form fields does not matter (a client may encode a dictionary in any
  order) but the order of array elements does.

Not thread-safe by itself: the app calls it under its one lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import StripeError

KEY_TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255


@dataclass
class Entry:
    endpoint: str        # method and path: "POST /v1/checkout/sessions/cs_.../expire"
    fingerprint: object  # the parsed parameters
    created: int
    request_id: str
    status: int | None = None  # None while the first request runs
    body: bytes = b""


class IdempotencyStore:
    def __init__(self):
        self._entries: dict[tuple[str, str], Entry] = {}

    def begin(self, api_key: str, key: str, endpoint: str, fingerprint, now: int,
              request_id: str) -> Entry | None:
        """Claim ``key`` for this request, or return the stored answer to replay.

        Raises the idempotency errors for a key in use or used differently.
        """
        entry = self._entries.get((api_key, key))
        if entry is not None and now - entry.created >= KEY_TTL_SECONDS:
            entry = None
        if entry is None:
            self._entries[(api_key, key)] = Entry(endpoint, fingerprint, now, request_id)
            return None
        if entry.status is None:
            raise StripeError(
                409, "idempotency_error",
                "There is currently another in-progress request using this Idempotent Key (that "
                "probably means you submitted twice, and the other request is still going through): "
                f"{key}. Please try again later.", code="idempotency_key_in_use")
        if entry.endpoint != endpoint:
            raise StripeError(
                400, "idempotency_error",
                "Keys for idempotent requests can only be used for the same endpoint they were first "
                f"used for ('{entry.endpoint}' vs '{endpoint}'). Try using a key "
                f"other than '{key}' if you meant to execute a different request.")
        if entry.fingerprint != fingerprint:
            raise StripeError(
                400, "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they were "
                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                "different request.")
        return entry

    def finish(self, api_key: str, key: str, status: int, body: bytes) -> None:
        entry = self._entries[(api_key, key)]
        entry.status, entry.body = status, body

    def release(self, api_key: str, key: str) -> None:
        """Forget a claim whose endpoint never began, so the key can be used again."""
        self._entries.pop((api_key, key), None)
