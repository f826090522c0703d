"""A key limited to some routes (``--routes``) at ``/v1/messages/count_tokens``: a model it may
not use, or one the gateway does not know, is refused there exactly as ``/v1/messages`` refuses
it for the same key (same status, same Anthropic error, same words), so counting tokens tells
such a key nothing about the routes it may not use; its own routes count as before. Real keys,
made through ``/admin/keys``, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tests.governance.test_admin_keys import APP_KEY, PRICED, app_on, bearer, make_key

MESSAGES = [{"role": "user", "content": "hi there"}]


async def test_count_tokens_refuses_what_messages_refuses_for_the_key(
    tmp_path: Path, db_url: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(PRICED)
    async with app_on(policy, db_url) as (client, _):
        limited = bearer((await make_key(client, name="limited", routes=["auto"]))["key"])

        async def both(model: str, headers: dict[str, str]) -> tuple[int, object, int, object]:
            body = {"model": model, "messages": MESSAGES}
            asked = await client.post(
                "/v1/messages", json={**body, "max_tokens": 50}, headers=headers
            )
            counted = await client.post("/v1/messages/count_tokens", json=body, headers=headers)
            return asked.status_code, asked.json(), counted.status_code, counted.json()

        big = await both("big", limited)  # a backend the gateway has, not this key's
        unknown = await both("nope", limited)
        allowed = await client.post(
            "/v1/messages/count_tokens",
            json={"model": "auto", "messages": MESSAGES},
            headers=limited,
        )
        unlimited = await client.post(
            "/v1/messages/count_tokens",
            json={"model": "big", "messages": MESSAGES},
            headers=bearer(APP_KEY),
        )
    status, error, counted_status, counted_error = big
    assert (status, counted_status) == (403, 403), big
    assert counted_error == error, big
    assert error == {
        "type": "error",
        "error": {
            "type": "permission_error",
            "message": "this key may not use 'big': it may use auto (ask an admin to add the "
            "route to the key)",
        },
    }
    status, error, counted_status, counted_error = unknown
    assert (status, counted_status) == (400, 400), unknown
    assert counted_error == error, unknown
    assert "(valid: auto)" in str(error)  # the names this key may use, no more
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["input_tokens"] > 0
    assert unlimited.status_code == 200, unlimited.text
