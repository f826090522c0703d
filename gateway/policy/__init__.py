"""Policies: YAML files that say which backends exist and where requests go."""

from gateway.policy.load import load_policy, parse_policy
from gateway.policy.model import Candidate, Decision, Policy, Route, Tier, UnknownRoute
from gateway.policy.problems import PolicyError, Problem

__all__ = [
    "Candidate",
    "Decision",
    "Policy",
    "PolicyError",
    "Problem",
    "Route",
    "Tier",
    "UnknownRoute",
    "load_policy",
    "parse_policy",
]
