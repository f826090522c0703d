"""The savings report's two reads of the ledger, summed by the database rather than row by row
in Python (a month of a busy gateway is millions of rows: read one at a time, a report took
minutes, and the admin API's and dashboard's few seconds were never enough).

* ``buckets``: the rows of a window, grouped by the report's group and by every fact a figure
  depends on (background call or not, status, fallback chain, cascade escalation, cache hit,
  cost and baseline known, usage estimated), with their count and their sums of tokens and
  money: a few hundred rows whatever the window, from which ``report_figures.Tally`` counts
  exactly what it counted from single rows;
* ``answered``: the latency and time to first token of each answered client request, the
  only figures that need every value (nearest-rank percentiles), two numbers a row.

Money is summed exactly: PostgreSQL sums its ``NUMERIC``; SQLite keeps a float per row, read
back to the ledger's 12 decimals one row at a time, so there each row is summed as a whole
number of 1e-12 USD, as the row-by-row report added them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from gateway.ledger.adaptive import OVERHEAD_ARMS
from gateway.ledger.models import RequestRow
from gateway.ledger.percentiles import RATIO, ZERO_BIN

PICO = 12  # the ledger's decimals (``models.MONEY``)

# The column each grouping reads (``day`` is computed, see ``_group``).
_GROUPED: dict[str, Any] = {
    "tier": RequestRow.tier,
    "route": RequestRow.route,
    "backend": RequestRow.backend,
    "key": RequestRow.key_id,
    "team": RequestRow.team,
    "model": RequestRow.model,
    "cost_source": RequestRow.cost_source,
    "capability": RequestRow.capabilities,
    "canary_arm": RequestRow.canary_arm,
    "api": RequestRow.api,
}


@dataclass(frozen=True, slots=True)
class Bucket:
    """``n`` ledger rows alike in everything a report figure depends on, and their sums."""

    group: tuple[Any, ...]  # the value of each grouping's column (none without a grouping)
    canary_arm: str | None
    status: int
    fallback_chain: str
    escalated: bool  # a cascade passed the request on to a stronger tier
    hit: bool
    cost_known: bool
    baseline_known: bool
    usage_estimated: bool
    n: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: Decimal
    baseline: Decimal


def bucket_of(found: Sequence[Any], groups: int, money: Callable[[Any], Decimal]) -> Bucket:
    """A grouped sum's result row as a ``Bucket``: ``groups`` group values, then the facts and
    the sums in ``Bucket``'s order; ``money`` reads a money sum as the database returns it."""
    row = (tuple(found[:groups]), *found[groups:])
    return Bucket(
        row[0],
        row[1],
        int(row[2]),
        str(row[3]),
        bool(row[4]),
        bool(row[5]),
        bool(row[6]),
        bool(row[7]),
        bool(row[8]),
        int(row[9]),
        int(row[10] or 0),
        int(row[11] or 0),
        int(row[12] or 0),
        money(row[13]),
        money(row[14]),
    )


def client_rows() -> ColumnElement[bool]:
    """A client's request, not one of routing's background calls."""
    return or_(RequestRow.canary_arm.is_(None), RequestRow.canary_arm.not_in(OVERHEAD_ARMS))


def buckets(
    connection: Connection, bys: tuple[str, ...], where: tuple[Any, ...]
) -> Iterator[Bucket]:
    """The rows ``where``, summed per group of each of ``bys`` and per fact a figure depends
    on (a bucket's ``group``: its value for each of ``bys``)."""
    sqlite = connection.dialect.name == "sqlite"
    # Literals, not bound parameters: PostgreSQL matches a GROUP BY expression to the selected
    # one by its text, and two bound parameters are two different texts.
    hit = _flag(RequestRow.cache == literal_column("'hit'"))
    escalated = _flag(RequestRow.cascade == literal_column("'escalated'"))
    cost_known = _flag(RequestRow.cost_usd.is_not(None))
    baseline_known = _flag(RequestRow.baseline_cost_usd.is_not(None))
    grouped = [_group(by, sqlite) for by in bys]
    dims: list[Any] = [
        *grouped,
        RequestRow.canary_arm,
        RequestRow.status,
        RequestRow.fallback_chain,
        escalated,
        hit,
        cost_known,
        baseline_known,
        RequestRow.usage_estimated,
    ]
    sums = (
        func.count(),
        func.sum(RequestRow.prompt_tokens),
        func.sum(RequestRow.completion_tokens),
        func.sum(RequestRow.cached_tokens),
        _money_sum(RequestRow.cost_usd, sqlite),
        _money_sum(RequestRow.baseline_cost_usd, sqlite),
    )
    query = select(*dims, *sums).where(*where).group_by(*dims)
    for found in connection.execute(query):
        yield bucket_of(found, len(bys), lambda value: _money(value, sqlite))


def answered(
    connection: Connection, bys: tuple[str, ...], where: tuple[Any, ...], chunk: int
) -> Iterator[tuple[tuple[Any, ...], float, float | None]]:
    """``(group values, latency ms, ttft ms)`` of each answered client request ``where``."""
    grouped = [_group(by, connection.dialect.name == "sqlite") for by in bys]
    query = select(*grouped, RequestRow.latency_ms, RequestRow.ttft_ms).where(
        *where, client_rows(), RequestRow.status == 200
    )
    result = connection.execution_options(yield_per=chunk).execute(query)
    for part in result.partitions():
        for row in part:
            group = tuple(row[: len(bys)])
            latency, ttft = row[-2], row[-1]
            yield group, float(latency), None if ttft is None else float(ttft)


def binned(
    connection: Connection, bys: tuple[str, ...], where: tuple[Any, ...], metric: str
) -> Iterator[tuple[tuple[Any, ...], str, int, int]]:
    """``(group values, metric, bin, requests)``: the answered client requests ``where`` counted
    per bin of their latency (``metric`` "latency") or time to first token ("ttft"), binned by
    the database as migration 0014's trigger bins them (``percentiles.bin_of``)."""
    column = RequestRow.latency_ms if metric == "latency" else RequestRow.ttft_ms
    log_ratio = func.ln(cast(literal_column(repr(RATIO)), Float))
    bin_ = case(
        (column > 0, cast(func.floor(func.ln(column) / log_ratio), Integer)),
        else_=literal_column(str(ZERO_BIN)),
    )
    grouped = [_group(by, connection.dialect.name == "sqlite") for by in bys]
    query = (
        select(*grouped, bin_, func.count())
        .where(*where, client_rows(), RequestRow.status == 200, column.is_not(None))
        .group_by(*grouped, bin_)
    )
    for row in connection.execute(query):
        yield tuple(row[: len(bys)]), metric, int(row[-2]), int(row[-1])


def baseline_models(connection: Connection, where: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The baseline models the client rows ``where`` with a cost and a baseline (the rows the
    report's baseline sums) were priced at, each with its row count, most rows first; a model
    of None: rows written before the ledger kept it (migration 0013), or failed requests (a $0
    baseline) under a policy without a baseline."""
    query = (
        select(RequestRow.baseline_model, func.count())
        .where(
            *where,
            client_rows(),
            RequestRow.cost_usd.is_not(None),
            RequestRow.baseline_cost_usd.is_not(None),
        )
        .group_by(RequestRow.baseline_model)
    )
    found = [(model, int(n)) for model, n in connection.execute(query)]
    found.sort(key=lambda item: (-item[1], item[0] is None, item[0] or ""))
    return [{"model": model, "requests": n} for model, n in found]


def money_sum(connection: Connection, column: Any, where: tuple[Any, ...]) -> Decimal:
    """The exact sum of a money ``column`` over the rows ``where``."""
    sqlite = connection.dialect.name == "sqlite"
    value = connection.execute(select(_money_sum(column, sqlite)).where(*where)).scalar_one()
    return _money(value, sqlite)


def _flag(condition: ColumnElement[bool]) -> Any:
    """1 where ``condition`` holds, else 0 (literals: see ``buckets``)."""
    return case((condition, literal_column("1")), else_=literal_column("0"))


def _group(by: str, sqlite: bool) -> Any:
    """What a row is grouped by: its grouping's column, or its UTC day."""
    if by == "day":
        # SQLite keeps times as naive UTC text ("2026-11-20 10:00:00.000000"); PostgreSQL
        # would give the day in the session's time zone unless told UTC.
        if sqlite:
            return func.substr(RequestRow.ts, literal_column("1"), literal_column("10"))
        return func.date(func.timezone(literal_column("'UTC'"), RequestRow.ts))
    return _GROUPED[by]


def _money_sum(column: Any, sqlite: bool) -> Any:
    if sqlite:
        return func.sum(cast(func.round(column * literal_column(f"1e{PICO}")), Integer))
    return func.sum(column)


def _money(value: Any, sqlite: bool) -> Decimal:
    if value is None:
        return Decimal(0)
    if sqlite:
        return Decimal(int(value)).scaleb(-PICO)
    return Decimal(value)
