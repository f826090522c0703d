"""Governance: who may call (virtual keys and their teams: ``grants``, ``store``, ``book``),
how much they may spend (``budgets``: reserved at the worst case and reconciled after, stepping
a request down a tier before refusing it) and how fast (``rates``: requests and tokens per
minute). ``gate`` is what the request path asks (``grant_limits``: a grant's limits as it
uses them; ``settling``: ended requests settled). With Redis, ``remote`` decides rate limits and
budget holds together for every replica, one script call per event-loop turn, over its own lean
connection (``resp``); ``budgets``' and ``rates``' in-process stores serve while Redis is away
(and without Redis)."""
