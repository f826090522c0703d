"""``/admin/keys``, ``/admin/teams`` and ``GET /v1/key/info`` through the real ASGI app, on
SQLite and PostgreSQL: the admin key is required, a change is honoured by the same app at once
(a rotated or revoked key gets a 401 on the next request), a key holder sees its own spend and
nothing of another key's, the report and the dashboard split by team, and the key is never in a
log line or a database column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select
from structlog.testing import capture_logs

from gateway.ledger.models import KeyRow, RequestRow
from tests.http.helpers import fakes, gateway

APP_KEY = "k-keys-app-1111"
ADMIN_KEY = "k-keys-admin-2222"
KEYS = {"api_keys": f"app1:{APP_KEY}", "admin_key": ADMIN_KEY}
CHAT = {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi there"}]}
PRICED = """
version: 1
backends:
  small: {type: fake, model: small-model, script: [{reply: "small answer here"}]}
  big: {type: fake, model: big-model, script: [{reply: "big answer here"}]}
tiers:
  - {name: cheap, max_score: 0.9, backends: [small]}
  - {name: strong, backends: [big]}
pricing:
  baseline: {usd_per_1m_input: 2.5, usd_per_1m_output: 10.0}
  backends:
    small: {usd_per_1m_input: 100.0, usd_per_1m_output: 400.0}
    big: {usd_per_1m_input: 1.0, usd_per_1m_output: 4.0}
"""


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


ADMIN = bearer(ADMIN_KEY)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(PRICED)
    return path


def app_on(policy_file: Path, db_url: str, **settings: Any) -> Any:
    return gateway(
        policy_file,
        backends=fakes("small", "big"),
        database_url=SecretStr(db_url),
        **{**KEYS, **settings},
    )


async def make_key(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/admin/keys", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


async def info(client: httpx.AsyncClient, key: str, **params: str) -> httpx.Response:
    return await client.get("/v1/key/info", headers=bearer(key), params=params)


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


async def test_the_admin_key_is_required(policy_file: Path, db_url: str) -> None:
    async with app_on(policy_file, db_url) as (client, _):
        key = await make_key(client, name="svc")
        for method, path in (
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys"),
            ("GET", f"/admin/keys/{key['id']}"),
            ("PATCH", f"/admin/keys/{key['id']}"),
            ("POST", f"/admin/keys/{key['id']}/rotate"),
            ("POST", f"/admin/keys/{key['id']}/revoke"),
            ("DELETE", f"/admin/keys/{key['id']}"),
            ("GET", "/admin/teams"),
            ("POST", "/admin/teams"),
            ("PUT", "/admin/teams/eng"),
        ):
            body = {"name": "x"} if method in ("POST", "PUT", "PATCH") else None
            none = await client.request(method, path, json=body)
            assert none.status_code == 401, (method, path)
            for client_key in (APP_KEY, key["key"]):  # a bootstrap key, a virtual key
                refused = await client.request(method, path, json=body, headers=bearer(client_key))
                assert refused.status_code == 403, (method, path, refused.text)
                assert error(refused)["code"] == "admin_key_required"
        # Nothing changed: the virtual key still works, still unrotated.
        assert (await info(client, key["key"])).status_code == 200


async def test_create_list_show_update_rotate_revoke(policy_file: Path, db_url: str) -> None:
    async with app_on(policy_file, db_url) as (client, _):
        team = await client.post(
            "/admin/teams", json={"name": "eng", "budget_usd": 5, "rpm": 100}, headers=ADMIN
        )
        assert team.status_code == 200, team.text
        assert (team.json()["budget_usd"], team.json()["rpm"]) == (5.0, 100)
        changed = await client.put("/admin/teams/eng", json={"tpm": 5000}, headers=ADMIN)
        assert (changed.json()["budget_usd"], changed.json()["tpm"]) == (5.0, 5000)
        teams = (await client.get("/admin/teams", headers=ADMIN)).json()["data"]
        assert [t["id"] for t in teams] == ["eng"]
        assert (await client.get("/admin/teams/eng", headers=ADMIN)).json()["keys"] == 0
        assert (await client.get("/admin/teams/nope", headers=ADMIN)).status_code == 404

        alice = await make_key(
            client, name="alice", team="eng", budget_usd=1, budget_period="week", rpm=60,
            routes=["auto"], expires="30d", on_exhausted="reject",
        )  # fmt: skip
        assert alice["key"].startswith("tg-")
        assert alice["id"].startswith("vk-")
        assert (alice["team"], alice["budget_period"], alice["on_exhausted"]) == (
            "eng",
            "week",
            "reject",
        )
        assert "digest" not in alice
        assert alice["expires_at"] is not None
        bob = await make_key(client, name="bob")
        # Honoured by this app at once: no wait for the 2 s refresh.
        assert (await info(client, alice["key"])).status_code == 200

        listed = await client.get("/admin/keys", headers=ADMIN)
        assert [k["id"] for k in listed.json()["data"]] == [alice["id"], bob["id"]]
        assert alice["key"] not in listed.text
        assert bob["key"] not in listed.text
        assert "digest" not in listed.text
        eng = await client.get("/admin/keys", params={"team": "eng"}, headers=ADMIN)
        assert [k["id"] for k in eng.json()["data"]] == [alice["id"]]
        shown = await client.get(f"/admin/keys/{alice['id']}", headers=ADMIN)
        assert shown.status_code == 200
        assert alice["key"] not in shown.text
        assert shown.json()["budget"]["usd"] == 1.0

        patched = await client.patch(
            f"/admin/keys/{alice['id']}", json={"rpm": None, "tpm": 999}, headers=ADMIN
        )
        assert patched.status_code == 200, patched.text
        assert (patched.json()["rpm"], patched.json()["tpm"]) == (None, 999)
        limits = (await info(client, alice["key"])).json()["limits"]
        assert limits == {"rpm": None, "tpm": 999}

        rotated = await client.post(f"/admin/keys/{alice['id']}/rotate", headers=ADMIN)
        assert rotated.status_code == 200
        new = rotated.json()
        assert new["id"] == alice["id"]
        assert new["key"] != alice["key"]
        old_answer = await info(client, alice["key"])
        assert old_answer.status_code == 401
        assert error(old_answer)["code"] == "invalid_api_key"
        assert (await info(client, new["key"])).status_code == 200

        revoked = await client.post(f"/admin/keys/{alice['id']}/revoke", headers=ADMIN)
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        assert (await info(client, new["key"])).status_code == 401
        chat = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(new["key"]))
        assert chat.status_code == 401
        deleted = await client.delete(f"/admin/keys/{bob['id']}", headers=ADMIN)
        assert deleted.status_code == 200
        assert (await info(client, bob["key"])).status_code == 401
        again = await client.post(f"/admin/keys/{alice['id']}/rotate", headers=ADMIN)
        assert again.status_code == 400
        assert "revoked" in error(again)["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "budget_usd": -1}, "budget_usd"),
        ({"name": "x", "team": "nope"}, "team"),
        ({"name": ""}, "name"),
        ({"name": "x", "expires": "soon"}, "expires"),
        ({"name": "x", "expires": "-1d"}, "expires"),
        ({"name": "x", "expires": "0m"}, "expires"),
        ({"name": "x", "budget_period": "year"}, "budget_period"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": "x", "routes": []}, "routes"),
        ({"name": "x", "routes": ["auto", "atuo"]}, "routes"),
        # Past what the database or the clock can hold: a 400 naming the field, never a 5xx.
        ({"name": "x", "expires": "99999999999d"}, "expires"),
        ({"name": "x", "expires": "9999999d"}, "expires"),
        ({"name": "x", "rpm": 10**30}, "rpm"),
        ({"name": "x", "tpm": 2**31}, "tpm"),
        ({"name": "x", "budget_usd": "1e400"}, "budget_usd"),
        ({"name": "a\u0000b"}, "name"),
        ({"name": "x", "team": "t\u0000"}, "team"),
    ],
)
async def test_bad_requests_name_the_field(
    policy_file: Path, db_url: str, body: dict[str, Any], param: str
) -> None:
    async with app_on(policy_file, db_url) as (client, _):
        response = await client.post("/admin/keys", json=body, headers=ADMIN)
        assert response.status_code == 400, response.text
        assert error(response)["param"] == param
        assert error(response)["type"] == "invalid_request_error"
        assert error(response)["message"]


async def test_routes_must_be_the_serving_policys(policy_file: Path, db_url: str) -> None:
    """A misspelt route on create or update is a 400 naming it and the valid names; the key
    keeps what it had."""
    async with app_on(policy_file, db_url) as (client, _):
        typo = await client.post(
            "/admin/keys", json={"name": "x", "routes": ["auto", "atuo"]}, headers=ADMIN
        )
        assert typo.status_code == 400, typo.text
        assert error(typo)["param"] == "routes"
        assert error(typo)["message"] == (
            "routes: unknown route 'atuo': use routes or backends of the policy "
            "(valid: auto, small, big)"
        )
        key = await make_key(client, name="x", routes=["auto", "big"])
        patched = await client.patch(
            f"/admin/keys/{key['id']}", json={"routes": ["smal"]}, headers=ADMIN
        )
        assert patched.status_code == 400, patched.text
        assert "unknown route 'smal'" in error(patched)["message"]
        shown = await client.get(f"/admin/keys/{key['id']}", headers=ADMIN)
        assert shown.json()["routes"] == ["auto", "big"]


@pytest.mark.parametrize("when", ["2020-01-01T00:00:00Z", "2020-01-01T00:00:00"])
async def test_a_key_cannot_be_given_an_expiry_already_past(
    policy_file: Path, db_url: str, when: str
) -> None:
    """A key made (or changed) to expire at a time already gone would be dead on arrival: a
    400 naming ``expires_at`` that says to give a future time, or to revoke the key."""
    async with app_on(policy_file, db_url) as (client, _):
        created = await client.post(
            "/admin/keys", json={"name": "x", "expires_at": when}, headers=ADMIN
        )
        assert created.status_code == 400, created.text
        assert error(created)["param"] == "expires_at"
        assert "already past" in error(created)["message"]
        listed = await client.get("/admin/keys", headers=ADMIN)
        assert [k["name"] for k in listed.json()["data"]] == []  # nothing was made
        key = await make_key(client, name="y")
        patched = await client.patch(
            f"/admin/keys/{key['id']}", json={"expires_at": when}, headers=ADMIN
        )
        assert patched.status_code == 400, patched.text
        assert error(patched)["param"] == "expires_at"
        assert "revoke" in error(patched)["message"]
        assert (await info(client, key["key"])).status_code == 200  # the key still works


@pytest.mark.parametrize("limit", [{"rpm": 2**40}, {"budget_usd": "1e12"}])
async def test_a_team_limit_past_the_columns_range_is_a_400(
    policy_file: Path, db_url: str, limit: dict[str, Any]
) -> None:
    async with app_on(policy_file, db_url) as (client, _):
        created = await client.post("/admin/teams", json={"name": "t", **limit}, headers=ADMIN)
        assert created.status_code == 400, created.text
        assert error(created)["param"] == next(iter(limit))
        named = await client.post("/admin/teams", json={"name": "a\u0000"}, headers=ADMIN)
        assert named.status_code == 400, named.text
        assert error(named)["param"] == "name"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/keys/vk-%00"),
        ("PATCH", "/admin/keys/vk-%00"),
        ("POST", "/admin/keys/vk-%00/rotate"),
        ("GET", "/admin/teams/t%00"),
        ("PUT", "/admin/teams/t%00"),
    ],
)
async def test_a_nul_in_an_id_is_not_found_not_a_5xx(
    policy_file: Path, db_url: str, method: str, path: str
) -> None:
    """No key or team has a NUL character in its id: asking for one is a 4xx (PostgreSQL's
    text cannot even hold it: the query failed as if the database were away, a 503)."""
    async with app_on(policy_file, db_url) as (client, _):
        body = {"rpm": 5} if method in ("PATCH", "PUT") else None
        response = await client.request(method, path, json=body, headers=ADMIN)
        assert 400 <= response.status_code < 500, response.text
        assert error(response)["message"]


async def test_a_key_limited_to_routes_lists_only_those(policy_file: Path, db_url: str) -> None:
    """``/v1/models`` lists what the calling key may name: a key limited to some routes sees
    those, not the rest of the gateway's routes and backends (nor their models); so does the
    error for a model name it does not know."""
    async with app_on(policy_file, db_url) as (client, _):
        limited = await make_key(client, name="limited", routes=["auto"])
        listed = await client.get("/v1/models", headers=bearer(limited["key"]))
        hidden = await client.get("/v1/models/big", headers=bearer(limited["key"]))
        shown = await client.get("/v1/models/auto", headers=bearer(limited["key"]))
        everything = await client.get("/v1/models", headers=bearer(APP_KEY))
        unknown = await client.post(
            "/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=bearer(limited["key"])
        )
    assert unknown.status_code == 400, unknown.text
    assert error(unknown)["code"] == "model_not_found"
    assert "(valid: auto)" in error(unknown)["message"]  # the names this key may use, no more
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["data"]] == ["auto"]
    assert "big-model" not in listed.text
    assert hidden.status_code == 404, hidden.text
    assert error(hidden)["code"] == "model_not_found"
    assert "small" not in error(hidden)["message"]
    assert shown.status_code == 200, shown.text
    assert {m["id"] for m in everything.json()["data"]} == {"auto", "small", "big"}


async def test_an_unknown_key_is_a_404(policy_file: Path, db_url: str) -> None:
    async with app_on(policy_file, db_url) as (client, _):
        for method, path in (
            ("GET", "/admin/keys/vk-nope"),
            ("POST", "/admin/keys/vk-nope/rotate"),
            ("POST", "/admin/keys/vk-nope/revoke"),
            ("DELETE", "/admin/keys/vk-nope"),
        ):
            response = await client.request(method, path, headers=ADMIN)
            assert response.status_code == 404, (method, path, response.text)
            assert error(response)["code"] == "key_not_found"
        patched = await client.patch("/admin/keys/vk-nope", json={"rpm": 3}, headers=ADMIN)
        assert patched.status_code == 404


async def test_key_info_shows_its_own_spend_and_never_another_keys(
    policy_file: Path, db_url: str, engine: Engine
) -> None:
    async with app_on(policy_file, db_url) as (client, _):
        await client.post("/admin/teams", json={"name": "eng", "budget_usd": 10}, headers=ADMIN)
        await client.post("/admin/teams", json={"name": "ops"}, headers=ADMIN)
        a = await make_key(client, name="alice-secret-name", team="eng", budget_usd=2)
        b = await make_key(client, name="bob", team="eng", budget_usd=3, rpm=50)
        c = await make_key(client, name="carol", team="ops")
        for key in (a, a, c):
            chat = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key["key"]))
            assert chat.status_code == 200, chat.text
        plain = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(APP_KEY))
        assert plain.status_code == 200

        mine = await info(client, a["key"])
        theirs = await info(client, b["key"], id=a["id"])  # a parameter cannot pick another key
        bootstrap = await info(client, APP_KEY)
        admin = await client.get("/v1/key/info", headers=ADMIN)
        report = await client.get("/admin/report", params={"by": "team"}, headers=ADMIN)
        eng_report = await client.get(
            "/admin/report", params={"team": "eng", "by": "key"}, headers=ADMIN
        )
        page = await client.get("/dashboard", params={"team": "eng"}, headers=ADMIN)

    with engine.connect() as conn:
        costs = conn.execute(select(RequestRow.key_id, RequestRow.cost_usd, RequestRow.team)).all()
    spent_a = sum(float(cost or 0) for key_id, cost, _ in costs if key_id == a["id"])
    assert spent_a > 0
    assert {team for key_id, _, team in costs if key_id == a["id"]} == {"eng"}

    assert mine.status_code == 200, mine.text
    own = mine.json()
    assert (own["id"], own["name"], own["team"]) == (a["id"], "alice-secret-name", "eng")
    assert own["budget"]["usd"] == 2.0
    assert own["budget"]["period"] == "month"
    assert own["budget"]["spent_usd"] == pytest.approx(spent_a)
    assert own["budget"]["left_usd"] == pytest.approx(2.0 - spent_a)
    assert own["budget"]["resets_at"] is not None
    assert own["team_budget"]["usd"] == 10.0
    assert own["team_budget"]["spent_usd"] == pytest.approx(spent_a)  # carol is in ops
    assert own["limits"] == {"rpm": None, "tpm": None}

    assert theirs.status_code == 200
    other = theirs.json()
    assert other["id"] == b["id"]
    assert other["budget"]["spent_usd"] == 0.0
    assert other["limits"] == {"rpm": 50, "tpm": None}
    assert other["team_budget"]["spent_usd"] == pytest.approx(spent_a)  # the team's, shared
    for leak in (a["id"], "alice-secret-name", a["key"], c["id"]):
        assert leak not in theirs.text

    assert bootstrap.status_code == 200
    assert bootstrap.json()["id"] == "app1"
    assert bootstrap.json()["limits"] is None
    assert bootstrap.json()["budget"] is None
    assert bootstrap.json()["virtual"] is False
    assert admin.status_code == 400
    assert error(admin)["code"] == "not_a_client_key"

    groups = {g["key"]: g["requests"] for g in report.json()["groups"]}
    assert groups == {"-": 1, "eng": 2, "ops": 1}
    assert eng_report.json()["totals"]["requests"] == 2
    assert [g["key"] for g in eng_report.json()["groups"]] == [a["id"]]
    assert page.status_code == 200
    assert 'data-testid="team-select"' in page.text
    assert '<option value="eng" selected>eng</option>' in page.text
    assert '<option value="ops">ops</option>' in page.text
    assert 'data-field="requests" data-value="2"' in page.text


async def test_open_mode_has_no_key_to_describe(policy_file: Path, tmp_path: Path) -> None:
    async with gateway(policy_file, backends=fakes("small", "big")) as (client, _):
        response = await client.get("/v1/key/info")
    assert response.status_code == 404
    assert error(response)["code"] == "no_api_key"


async def test_without_the_ledger_keys_are_a_503(policy_file: Path, tmp_path: Path) -> None:
    async with gateway(policy_file, backends=fakes("small", "big"), ledger=False, **KEYS) as (
        client,
        _,
    ):
        for method, path in (("POST", "/admin/keys"), ("GET", "/admin/keys")):
            body = {"name": "x"} if method == "POST" else None
            response = await client.request(method, path, json=body, headers=ADMIN)
            assert response.status_code == 503, response.text
            assert "ledger" in error(response)["message"]
            assert "TIERGATE_LEDGER" in error(response)["message"]
        bootstrap = await info(client, APP_KEY)
    assert bootstrap.status_code == 200
    assert bootstrap.json()["id"] == "app1"


async def test_the_key_is_never_logged_nor_stored(
    policy_file: Path, db_url: str, engine: Engine
) -> None:
    secrets: list[str] = []
    with capture_logs() as logs:
        async with app_on(policy_file, db_url) as (client, _):
            await client.post("/admin/teams", json={"name": "eng"}, headers=ADMIN)
            key = await make_key(client, name="svc", team="eng")
            secrets.append(key["key"])
            await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key["key"]))
            rotated = await client.post(f"/admin/keys/{key['id']}/rotate", headers=ADMIN)
            secrets.append(rotated.json()["key"])
            await client.post("/v1/chat/completions", json=CHAT, headers=bearer(secrets[0]))
            await client.post("/v1/chat/completions", json=CHAT, headers=bearer(secrets[1]))
            await info(client, secrets[1])
            await client.post(f"/admin/keys/{key['id']}/revoke", headers=ADMIN)
            await client.post("/v1/chat/completions", json=CHAT, headers=bearer(secrets[1]))
    assert logs  # the requests were logged
    logged = repr(logs)
    with engine.connect() as conn:
        stored = [
            *conn.execute(select(KeyRow.__table__)).all(),
            *conn.execute(select(RequestRow.__table__)).all(),
        ]
    assert len(stored) >= 3
    for secret in secrets:
        assert secret not in logged
        for row in stored:
            for value in row:
                assert secret not in str(value)


async def test_team_names_are_escaped_on_the_dashboard(policy_file: Path, db_url: str) -> None:
    hostile = '<b>"x"</b>'
    async with app_on(policy_file, db_url) as (client, _):
        made = await client.post("/admin/teams", json={"name": hostile}, headers=ADMIN)
        assert made.status_code == 200, made.text
        page = await client.get("/dashboard", params={"team": hostile}, headers=ADMIN)
    assert page.status_code == 200
    assert hostile not in page.text
    assert "&lt;b&gt;&quot;x&quot;&lt;/b&gt;" in page.text
