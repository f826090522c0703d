"""The interactive API pages. FastAPI's /docs (Swagger UI) and /redoc load their JavaScript
and CSS from a CDN, so on a host without internet access they are blank pages: off unless
TIERGATE_API_DOCS is set. The schema itself, /openapi.json, is served either way (behind a
key like every other route)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.http.helpers import TWO_TIERS, fakes, gateway

KEY = "k-docs-1111"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(TWO_TIERS)
    return path


async def test_the_pages_are_off_by_default_and_the_schema_is_not(policy_file: Path) -> None:
    async with gateway(policy_file, backends=fakes("small", "big"), api_keys=KEY) as (client, _):
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            response = await client.get(path, headers=AUTH)
            assert response.status_code == 404, (path, response.text)
            assert "cdn" not in response.text.lower()
        schema = await client.get("/openapi.json", headers=AUTH)
        assert schema.status_code == 200
        assert "/v1/chat/completions" in schema.json()["paths"]


async def test_tiergate_api_docs_turns_them_on(policy_file: Path) -> None:
    async with gateway(
        policy_file, backends=fakes("small", "big"), api_keys=KEY, api_docs=True
    ) as (client, _):
        docs = await client.get("/docs", headers=AUTH)
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text
        assert "/openapi.json" in docs.text
        redoc = await client.get("/redoc", headers=AUTH)
        assert redoc.status_code == 200
        assert "redoc" in redoc.text.lower()
        assert (await client.get("/openapi.json", headers=AUTH)).status_code == 200
        # Still behind the key, as before.
        assert (await client.get("/docs")).status_code == 401
