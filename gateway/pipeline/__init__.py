"""The request path as one function of a parsed request, with no HTTP in it:

    plan (score → route → tier → candidates) → canary → cache → dispatch (cascade) → price →
    account (the row journaled before the answer's last byte)

``Pipeline.handle(inbound)`` returns an ``Answer`` (whole, from a backend or the cache) or a
``Stream``, or raises ``Refused``; each carries a ``Receipt`` (what the gateway did), rendered by
the HTTP edge as ``x-tiergate-*`` headers. ``answers`` holds these values; ``flow`` the path;
``flight`` one request on it and its one ending (accounted once, however it ends).
"""

from gateway.pipeline.answers import (
    Answer,
    Broke,
    Embedded,
    Ended,
    Halt,
    Inbound,
    Receipt,
    Refused,
    StreamEvent,
)
from gateway.pipeline.flow import Pipeline
from gateway.pipeline.stream import Stream

__all__ = [
    "Answer",
    "Broke",
    "Embedded",
    "Ended",
    "Halt",
    "Inbound",
    "Pipeline",
    "Receipt",
    "Refused",
    "Stream",
    "StreamEvent",
]
