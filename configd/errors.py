"""Server-side refusals that have no place in the shared tree, still rooted at ``ConfigdError``.

ConfigdError (configd_client)
└── RequestRejected         refused at the HTTP boundary, before the store is involved
    ├── Unauthenticated     401: no bearer token, or one configd does not know
    ├── Forbidden           403: the token's role or namespaces do not allow the request
    │   └── ReviewRequired  403: the namespace's policy asks for a change request instead of a direct write
    ├── TransitionRefused   409: a change request is not in a state that allows this step
    ├── BadRequest          400: the request cannot be read at all (e.g. a body that is not UTF-8)
    ├── UnsupportedMediaType 415: a body that does not claim to be JSON
    └── RequestTooLarge     413: the body is larger than any config configd would store
"""

from __future__ import annotations

from configd_core.errors import ConfigdError


class RequestRejected(ConfigdError):
    """Refused at the HTTP boundary."""


class Unauthenticated(RequestRejected):
    """No bearer token, or an unknown one."""


class Forbidden(RequestRejected):
    """The token is known but its role or namespaces forbid the request."""


class ReviewRequired(Forbidden):
    """The namespace has a review policy: changes go through ``POST /api/v1/change-requests``."""


class TransitionRefused(RequestRejected):
    """A change request is not in a state that allows the step (approve a published one, publish an open one…)."""


class BadRequest(RequestRejected):
    """The request cannot be read."""


class UnsupportedMediaType(RequestRejected):
    """The request body is not declared as JSON."""


class RequestTooLarge(RequestRejected):
    """The request body exceeds the server's limit; refused before it is parsed."""

    def __init__(self, size: int | None, limit: int) -> None:
        shown = f"{size} bytes" if size is not None else "more bytes than that"
        super().__init__(f"request body is {shown}; configd accepts at most {limit} bytes")
        self.size = size
        self.limit = limit
