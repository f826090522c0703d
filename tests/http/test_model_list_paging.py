"""Anthropic's paging of ``GET /v1/models`` (``limit``, ``after_id``, ``before_id``): the
official ``anthropic`` SDK's ``models.list(limit=...)`` walks every page and gets each model
once; without paging parameters the whole list comes back (OpenAI's clients); bad paging is a
400 naming the parameter (before, the parameters were ignored: one page of everything)."""

from __future__ import annotations

from pathlib import Path

import anthropic
import httpx2
import pytest

from tests.http.helpers import TWO_TIERS, gateway

NAMES = ["auto", "small", "big"]  # the route, then the backends, in the policy's order


async def test_the_anthropic_sdk_pages_through_every_model_once(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    async with gateway(policy) as (client, app):
        whole = (await client.get("/v1/models")).json()
        first = (await client.get("/v1/models", params={"limit": 2})).json()
        last = (await client.get("/v1/models", params={"before_id": "big", "limit": 1})).json()
        sdk = anthropic.AsyncAnthropic(
            api_key="unused",
            base_url="http://gw",
            http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),  # its httpx
            max_retries=0,
        )
        paged = [model.id async for model in sdk.models.list(limit=1)]
    assert [m["id"] for m in whole["data"]] == NAMES
    assert whole["has_more"] is False
    assert [m["id"] for m in first["data"]] == NAMES[:2]
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, "auto", "small")
    assert [m["id"] for m in last["data"]] == ["small"]
    assert last["has_more"] is True  # "auto" lies before it
    assert paged == NAMES


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "two"}, "limit"),
        ({"after_id": "nope"}, "after_id"),
        ({"before_id": "nope"}, "before_id"),
        ({"after_id": "auto", "before_id": "big"}, "before_id"),
    ],
)
async def test_bad_paging_is_a_400_naming_the_parameter(
    tmp_path: Path, params: dict[str, str], param: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(TWO_TIERS)
    async with gateway(policy) as (client, _app):
        response = await client.get("/v1/models", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
