"""The ledger: one priced row per request (SQLite or PostgreSQL), written off the request path
in batches, an outbox when the database is away, and every query that reads it back."""
