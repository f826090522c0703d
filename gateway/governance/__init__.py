"""The governance room: who may send what — virtual keys, budgets and rate limits.

``rates`` holds the rate limits (requests and tokens per minute, per key and per team), shared
by every replica through Redis and kept per process while Redis is away.
"""
