"""Governance: who may call (virtual keys and their teams: ``grants``, ``store``, ``book``),
how much they may spend (``budgets``: reserved at the worst case and reconciled after, stepping
a request down a tier before refusing it) and how fast (``rates``: requests and tokens per
minute, shared across replicas through Redis). ``gate`` is what the request path asks."""
