"""Probes and Prometheus scrapes without a client key: a real ``tiergate serve`` with
TIERGATE_OPS_PORT (a second port serving only /healthz, /readyz and /metrics) and with
TIERGATE_OPEN_OPS (those paths keyless on the main port)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.http.live_server import API_KEY, Server, _free_port, fake_policy

OPS = ("/healthz", "/readyz", "/metrics")


def _server(tmp_path: Path, workers: int = 1, **env: str) -> Server:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    return Server(policy, watch=False, workers=workers, env=env)


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def with_ops_port(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    ops_port = _free_port()
    server = _server(tmp_path, workers=request.param, TIERGATE_OPS_PORT=str(ops_port))
    try:
        server.wait_ready()
        yield server, f"http://127.0.0.1:{ops_port}"
    finally:
        server.stop()
    # A clean stop: drained and closed (uvicorn re-raises SIGTERM after its graceful shutdown,
    # so one process exits by the signal; the supervisor of two exits 0).
    assert server.proc.returncode in (0, -15), server.log()
    assert server.events("gateway_stopped"), server.log()


def test_ops_port_serves_probes_and_metrics_without_a_key(
    with_ops_port: tuple[Server, str],
) -> None:
    server, ops_url = with_ops_port
    with httpx.Client(base_url=ops_url, timeout=10) as ops:
        for path in OPS:
            response = ops.get(path)
            assert response.status_code == 200, (path, response.text)
        assert ops.get("/readyz").json()["status"] == "ready"
        assert "# TYPE tiergate_" in ops.get("/metrics").text
        # Nothing else: not the API, not admin, not the dashboard, keyed or not.
        for path in ("/v1/models", "/admin/policy", "/dashboard", "/docs"):
            refused = ops.get(path, headers={"authorization": f"Bearer {API_KEY}"})
            assert refused.status_code == 404, (path, refused.text)
        refused_post = ops.post("/v1/chat/completions", json={"model": "auto", "messages": []})
        assert refused_post.status_code == 404
    # The main port is unchanged: /readyz and /metrics still need the key.
    assert server.http.get("/readyz").status_code == 401
    assert server.http.get("/metrics").status_code == 401
    assert server.http.get("/healthz").status_code == 200
    server.chat()


def test_open_ops_makes_readyz_and_metrics_keyless_on_the_main_port(tmp_path: Path) -> None:
    server = _server(tmp_path, TIERGATE_OPEN_OPS="true")
    try:
        server.wait_ready()
        for path in OPS:
            assert server.http.get(path).status_code == 200, path
        assert server.http.get("/v1/models").status_code == 401
        assert server.http.get("/admin/policy").status_code == 401
    finally:
        server.stop()


def test_ops_port_equal_to_the_main_port_is_refused() -> None:
    from pydantic import ValidationError

    from gateway.settings import Settings

    with pytest.raises(ValidationError, match="must differ"):
        Settings(port=9000, ops_port=9000)
