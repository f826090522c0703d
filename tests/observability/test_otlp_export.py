"""A real ``tiergate serve``, configured only by the standard ``OTEL_*`` variables, exports its
spans over OTLP/HTTP to a receiver this test runs; the receiver decodes the protobuf."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.http.live_server import API_KEY, Server, fake_policy
from tests.support.otlp_receiver import ReceivedSpan, receiver

TRACEPARENT = "00-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-01"


def test_a_served_request_arrives_at_the_collector(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    with receiver() as collector:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: export soon after the request
        }
        server = Server(policy, watch=False, env=env)
        try:
            server.wait_ready()
            response = server.http.post(
                "/v1/chat/completions",
                json={
                    "model": "auto",
                    "temperature": 0,  # cacheable: a lookup, and so a cache span
                    "messages": [{"role": "user", "content": "Hi there."}],
                },
                headers={"authorization": f"Bearer {API_KEY}", "traceparent": TRACEPARENT},
            )
            assert response.status_code == 200, response.text
            rid = response.headers["x-request-id"]

            def mine(spans: list[ReceivedSpan]) -> bool:
                return any(s.attributes.get("tiergate.request_id") == rid for s in spans) and any(
                    s.name == "tiergate.ledger.write" for s in spans
                )

            spans = collector.wait_for(mine)
        finally:
            server.stop()
    usage = response.json()["usage"]
    (root,) = [s for s in spans if s.attributes.get("tiergate.request_id") == rid]
    assert root.name == "POST /v1/chat/completions"
    assert root.trace_id == "5b8efff798038103d269b633813fc60c"
    assert root.parent_span_id == "eee19b7ec3c1b174"
    assert root.resource["service.name"] == "tiergate"
    assert root.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert root.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    children = [s for s in spans if s.parent_span_id == root.span_id]
    names = {s.name for s in children}
    assert {"tiergate.plan", "tiergate.cache", "tiergate.ledger.write"} <= names
    (attempt,) = [s for s in children if s.name.startswith("chat ")]
    assert attempt.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attempt.trace_id == root.trace_id


def test_a_protocol_it_cannot_speak_stops_the_start_with_the_fix(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERGATE_", "OTEL_"))}
    env.update(
        TIERGATE_POLICY=str(policy),
        TIERGATE_LEDGER="false",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    tiergate = Path(sys.executable).parent / "tiergate"
    done = subprocess.run(
        [str(tiergate), "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "http/protobuf" in done.stderr
    assert "4318" in done.stderr
    assert "Traceback" not in done.stderr
