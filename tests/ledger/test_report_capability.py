"""The savings report broken down by what requests needed (the ledger's ``capabilities``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gateway.ledger.db import make_engine, upgrade
from gateway.ledger.store import insert_batch
from tests.ledger.test_report import ROWS, SINCE, UNTIL, report, tiergate, to_entry

NEEDS = ("tools,json_mode", "tools", "", "vision,long_context")


def seed(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        entries = [
            dataclasses.replace(to_entry(i, ROWS[0]), capabilities=needs)
            for i, needs in enumerate(NEEDS, start=1)
        ]
        insert_batch(engine, entries)
    finally:
        engine.dispose()


def test_a_request_counts_in_each_capability_it_needed(ledger_url: str) -> None:
    """A row needing tools and JSON counts under both; one needing nothing under `plain`; each
    group's money is the sum of its rows'."""
    seed(ledger_url)
    result = report(ledger_url, by="capability")
    groups = {g["key"]: g for g in result["groups"]}
    assert {k: g["requests"] for k, g in groups.items()} == {
        "tools": 2,
        "json_mode": 1,
        "plain": 1,
        "vision": 1,
        "long_context": 1,
    }
    assert groups["plain"]["cost_usd"] > 0
    assert groups["tools"]["cost_usd"] == pytest.approx(2 * groups["plain"]["cost_usd"])
    assert result["totals"]["requests"] == len(NEEDS)


def test_cli_report_by_capability(ledger_url: str, tmp_path: Path) -> None:
    seed(ledger_url)
    done = tiergate(
        "report",
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--by",
        "capability",
        "--format",
        "json",
        url=ledger_url,
        cwd=tmp_path,
    )
    keys = [g["key"] for g in json.loads(done.stdout)["groups"]]
    assert keys == sorted(["json_mode", "long_context", "plain", "tools", "vision"])
