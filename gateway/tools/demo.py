"""``tiergate demo``: a seeded, mixed workload replayed through a running gateway, so a new user
sees a filled report and dashboard within a minute.

The workload is fixed: prompts of every kind (chit-chat, summaries, code, maths, multi-step
reasoning) in an order, and with settings, drawn from a seeded random generator: some streamed,
some pinned to one backend through ``model``, some sent to the other routes, a few with a large
``max_tokens`` (the scorer counts a long expected answer as harder). The same seed against the
same gateway sends the same requests (each with its own ``seed``, so the in-process model's
answers repeat too). Requests go through the official ``openai`` SDK, as any client's would.

It must finish within a minute against ``make serve``'s default policy, where every answer comes
from the in-process tiny model (~60 tokens/s, one request at a time): the usual ``max_tokens``
are small, the prompts with a large one ask for short answers, and ``--time-limit`` bounds the
run whatever happens (requests not finished by then are cancelled and counted as such).

At the end it prints the report of the demo's requests (``GET /admin/report``, which needs the
admin key unless the gateway runs without keys) and where the dashboard is.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer

from gateway.tools.demo_workload import DemoRequest, Target, plan_requests

if TYPE_CHECKING:  # imported when the demo runs: it takes ~0.6 s, too long for every command
    import openai
    from openai import AsyncOpenAI

DEFAULT_URL = "http://127.0.0.1:8000"
NO_KEY = "tiergate-demo"  # the SDK insists on a key; a gateway without keys ignores it
REPORT_TRIES, REPORT_RETRY_S = 10, 0.2


@dataclass(slots=True)
class Result:
    request: DemoRequest
    status: int  # HTTP status; 0: no answer (connection failed, or cut by the time limit)
    tier: str = "-"
    backend: str = "-"
    seconds: float = 0.0
    completion_tokens: int | None = None
    error: str | None = None


def client_key(value: str | None) -> str | None:
    """A key as ``TIERGATE_API_KEYS`` writes it (``key`` or ``key_id:key``; the first of a
    comma-separated list), or None."""
    if not value:
        return None
    first = value.split(",")[0].strip()
    _key_id, sep, key = first.partition(":")
    return (key if sep else first) or None


async def discover(client: AsyncOpenAI) -> Target:
    page = await client.models.list()
    routes: list[str] = []
    backends: list[str] = []
    default = "auto"
    for model in page.data:
        extra: dict[str, Any] = model.to_dict().get("tiergate") or {}  # type: ignore[assignment]
        if extra.get("kind") == "route":
            if extra.get("default"):
                default = model.id
            else:
                routes.append(model.id)
        elif extra.get("kind") == "backend" and extra.get("available"):
            backends.append(model.id)
    return Target(default, tuple(routes), tuple(backends))


async def send(client: AsyncOpenAI, request: DemoRequest) -> Result:
    import openai

    started = time.perf_counter()
    common: dict[str, Any] = {
        "model": request.model,
        "messages": request.messages(),
        "max_tokens": request.max_tokens,
        "temperature": 0.7,
        "seed": request.seed,
    }
    try:
        if request.stream:
            async with client.chat.completions.with_streaming_response.create(
                **common, stream=True, stream_options={"include_usage": True}
            ) as response:
                result = _from_headers(request, 200, response.headers)
                try:
                    async for chunk in await response.parse():
                        if chunk.usage is not None:
                            result.completion_tokens = chunk.usage.completion_tokens
                except openai.APIError as exc:  # an error event: the backend failed mid-stream
                    result.status, result.error = 502, f"stream interrupted: {exc.message}"
        else:
            raw = await client.chat.completions.with_raw_response.create(**common)
            result = _from_headers(request, 200, raw.headers)
            completion = raw.parse()
            if completion.usage is not None:
                result.completion_tokens = completion.usage.completion_tokens
    except openai.APIStatusError as exc:
        result = _from_headers(request, exc.status_code, exc.response.headers)
        result.error = _message(exc)
    except openai.APIError as exc:  # connection problems, a stream cut short
        result = Result(request, 0, error=f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - started
    return result


def _from_headers(request: DemoRequest, status: int, headers: httpx.Headers) -> Result:
    return Result(
        request,
        status,
        tier=headers.get("x-tiergate-tier", "-"),
        backend=headers.get("x-tiergate-backend", "-"),
    )


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return str(exc.message)


@dataclass(slots=True)
class Demo:
    url: str
    key: str | None
    admin_key: str | None
    requests: int = 30
    concurrency: int = 2
    seed: int = 7
    time_limit_s: float = 50.0
    echo: Callable[[str], None] = print
    results: list[Result] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.url.rstrip("/")

    async def run(self) -> int:
        """Exit code: 0 when the workload ran (failures are part of the picture: they are
        counted and shown), 1 when no request was answered, 2 when the gateway could not be
        used at all."""
        import openai

        client = openai.AsyncOpenAI(
            base_url=f"{self.base}/v1",
            api_key=self.key or self.admin_key or NO_KEY,
            max_retries=0,
            timeout=httpx.Timeout(self.time_limit_s, connect=5.0),
        )
        async with client:
            try:
                target = await discover(client)
            except openai.APIConnectionError:
                self.echo(
                    f"error: no gateway answers at {self.base}: start one (`make serve`, or "
                    f"`TIERGATE_POLICY=policies/demo.yaml make serve`) or pass --url"
                )
                return 2
            except openai.AuthenticationError as exc:
                self.echo(
                    f"error: the gateway refused the key ({_message(exc)}): pass a client key "
                    f"with --key (as in TIERGATE_API_KEYS) or set TIERGATE_API_KEYS"
                )
                return 2
            except openai.APIStatusError as exc:
                self.echo(f"error: GET /v1/models answered {exc.status_code}: {_message(exc)}")
                return 2
            started_at = datetime.now(UTC)
            plan = plan_requests(self.requests, self.seed, target)
            self.echo(
                f"tiergate demo: {len(plan)} requests (seed {self.seed}, concurrency "
                f"{self.concurrency}) to {self.base}\n"
                f"  routes: {', '.join((target.default_route, *target.routes))}; usable "
                f"backends: {', '.join(target.backends) or 'none'}"
            )
            await self._replay(client, plan)
        self._summary()
        await self._report(started_at)
        return 0 if any(r.status == 200 for r in self.results) else 1

    async def _replay(self, client: AsyncOpenAI, plan: list[DemoRequest]) -> None:
        queue: asyncio.Queue[DemoRequest] = asyncio.Queue()
        for request in plan:
            queue.put_nowait(request)
        width = len(str(len(plan)))

        async def worker() -> None:
            while True:
                try:
                    request = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result = await send(client, request)
                self.results.append(result)
                self._progress(result, len(self.results), len(plan), width)

        try:
            async with asyncio.timeout(self.time_limit_s), asyncio.TaskGroup() as group:
                for _ in range(max(1, self.concurrency)):
                    group.create_task(worker())
        except TimeoutError:
            done = {r.request.index for r in self.results}
            cut = [r for r in plan if r.index not in done]
            self.echo(
                f"time limit ({self.time_limit_s:g} s) reached: {len(cut)} requests not "
                f"finished (cancelled or never sent); raise --time-limit or lower --requests"
            )
            for request in cut:
                self.results.append(Result(request, 0, error="time limit"))

    def _progress(self, result: Result, done: int, total: int, width: int) -> None:
        request = result.request
        mode = "stream" if request.stream else "json"
        where = f"{result.tier}/{result.backend}"
        tokens = "" if result.completion_tokens is None else f"{result.completion_tokens:>4} tok"
        line = (
            f"[{done:>{width}}/{total}] {request.prompt.kind:<9} model={request.model:<8} "
            f"{mode:<6} max_tokens={request.max_tokens:<5} -> {where:<16} {result.status or '---'} "
            f"{result.seconds:6.2f} s {tokens}"
        )
        if result.error:
            line += f"  ({result.error[:120]})"
        self.echo(line)

    def _summary(self) -> None:
        answered = [r for r in self.results if r.status == 200]
        tiers = Counter(r.tier for r in answered)
        self.echo(
            f"\n{len(answered)}/{len(self.results)} answered; by tier: "
            + (", ".join(f"{tier} {count}" for tier, count in sorted(tiers.items())) or "none")
        )
        failed = Counter(
            f"{r.status or 'no answer'} {(r.error or '')[:80]}"
            for r in self.results
            if r.status != 200
        )
        for reason, count in failed.most_common():
            self.echo(f"  failed x{count}: {reason}")

    async def _report(self, started_at: datetime) -> None:
        since = (started_at - timedelta(seconds=2)).isoformat()
        headers = {"authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}
        dashboard = f"{self.base}/dashboard"
        answered = sum(r.status == 200 for r in self.results)
        async with httpx.AsyncClient(base_url=self.base, timeout=30.0) as http:
            try:
                for _ in range(REPORT_TRIES):
                    response = await http.get(
                        "/admin/report", params={"since": since, "by": "tier"}, headers=headers
                    )
                    if response.status_code != 200 or response.json()["totals"]["requests"] >= (
                        answered
                    ):
                        break
                    # A stream's row is written as its response closes, just after the client
                    # read the end: give the last ones a moment.
                    await asyncio.sleep(REPORT_RETRY_S)
            except httpx.HTTPError as exc:
                self.echo(f"\nreport: GET /admin/report failed: {type(exc).__name__}: {exc}")
                return
        if response.status_code in (401, 403):
            given = "was refused" if self.admin_key else "was not given"
            self.echo(
                f"\nreport: the admin key {given}, so the report is not shown here. Pass it "
                f"with --admin-key (or set TIERGATE_ADMIN_KEY), or run `tiergate report "
                f"--since 1h --by tier` where the gateway runs.\n"
                f"dashboard: {dashboard} (needs the admin key too: the password your browser "
                f"asks for)"
            )
            return
        if response.status_code != 200:
            self.echo(
                f"\nreport: GET /admin/report answered {response.status_code}: {response.text}"
            )
            return
        self.echo("\n" + format_report(response.json()))
        self.echo(
            f"dashboard: {dashboard}"
            + (" (your browser asks for a password: the admin key)" if self.admin_key else "")
        )


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.6f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def format_report(report: dict[str, Any]) -> str:
    """A short text summary of an ``/admin/report?by=tier`` answer."""
    totals = report["totals"]
    lines = [
        "report (GET /admin/report, the demo's requests, by tier):",
        f"  {'tier':<10} {'requests':>8} {'cost':>12} {'baseline':>12} {'savings':>8} "
        f"{'p50':>9} {'p95':>9}",
    ]
    for group in [*report["groups"], {"key": "total", **totals}]:
        lines.append(
            f"  {group['key']:<10} {group['requests']:>8} {_money(group['cost_usd']):>12} "
            f"{_money(group['baseline_cost_usd']):>12} {_pct(group['savings_pct']):>8} "
            f"{_ms(group['latency_ms_p50']):>9} {_ms(group['latency_ms_p95']):>9}"
        )
    lines.append(
        f"  saved {_money(totals['savings_usd'])} of {_money(totals['baseline_cost_usd'])} "
        f"({_pct(totals['savings_pct'])}) against the baseline model; "
        f"fallback rate {_rate(totals['fallback_rate'])}, error rate "
        f"{_rate(totals['error_rate'])}"
        + (
            f"; {totals['unpriced_requests']} unpriced (not counted as $0)"
            if totals.get("unpriced_requests")
            else ""
        )
    )
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def demo_command(
    url: Annotated[str, typer.Option(help="The running gateway.")] = DEFAULT_URL,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="TIERGATE_API_KEYS",
            help="A client key, written as in TIERGATE_API_KEYS ('key' or 'key_id:key'; the "
            "first of a list is used). Not needed when the gateway runs without keys.",
        ),
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(
            envvar="TIERGATE_ADMIN_KEY",
            help="The admin key, to print the report at the end (GET /admin/report).",
        ),
    ] = None,
    requests: Annotated[int, typer.Option(min=1, max=10_000, help="Requests to send.")] = 30,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Requests at once.")] = 2,
    seed: Annotated[int, typer.Option(help="The same seed sends the same workload.")] = 7,
    time_limit: Annotated[
        float, typer.Option(min=1.0, help="Seconds; requests unfinished by then are cancelled.")
    ] = 50.0,
) -> None:
    """Replay a seeded, mixed workload through a running gateway, then print its report."""
    demo = Demo(
        url=url,
        key=client_key(key),
        admin_key=admin_key or None,
        requests=requests,
        concurrency=concurrency,
        seed=seed,
        time_limit_s=time_limit,
        echo=typer.echo,
    )
    code = asyncio.run(demo.run())
    if code:
        raise typer.Exit(code=code)
