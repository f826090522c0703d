"""Canary releases of a new backend: shadow, split, guardrails, promotion and rollback.

Modules: ``spec`` (the policy block), ``pin`` (exact bytes), ``check`` (policy cross-checks),
``assign`` (sticky arms), ``overlay`` (the routing change), ``compare`` (answer comparison),
``shadow`` (background shadow calls), ``events``/``metrics_query`` (the ledger side),
``guardrails`` (verdicts), ``controller`` (state and the periodic loop), ``routes`` (HTTP).
"""
