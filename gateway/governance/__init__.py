"""Governance: who may call (virtual keys and their teams), how much they may spend (budgets
reserved at the worst case and reconciled after, stepping a request down a tier before refusing
it) and how fast (request and token rate limits shared across replicas)."""
