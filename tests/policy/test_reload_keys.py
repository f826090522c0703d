"""A reload that would turn off a backend serving now, because the new file names a key variable
the gateway's environment lacks (a misspelt or renamed ``api_key_env``), is refused and the
running policy keeps serving; a backend the environment disables is a warning in the log, at
start and on a reload. Against a real ``tiergate serve`` reloaded by a real ``SIGHUP``."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.http.live_server import ADMIN_KEY, Server, hash_of, replace_file

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
KEY = "sk-ops-reload-test-0123456789abcdef"


def policy_text(*, big_env: str = "OPS_TEST_REMOTE_KEY", more: bool = False) -> str:
    extra = "  more: {type: remote, model: openai/gpt-4.1, api_key_env: OPS_TEST_OTHER}\n"
    return f"""version: 1
backends:
  small: {{type: fake, model: small-model}}
  big:
    type: remote
    model: openai/gpt-4o-mini
    api_key_env: {big_env}
  spare: {{type: remote, model: openai/gpt-4o, api_key_env: OPS_TEST_UNSET_KEY}}
{extra if more else ""}tiers:
  - {{name: cheap, max_score: 0.5, backends: [small]}}
  - {{name: strong, backends: [big, spare{", more" if more else ""}]}}
"""


def sighup(server: Server, event: str) -> dict[str, object]:
    mark = server.mark()
    server.proc.send_signal(signal.SIGHUP)
    return server.wait_for(event, since=mark, trigger="sighup")


def test_a_reload_that_would_disable_a_serving_backend_is_refused(
    tmp_path: Path, servers: list[Server]
) -> None:
    """At start the unset key's backend is a ``backend_disabled`` warning. A file renaming the
    serving backend's variable to one that is unset: ``policy_rejected`` naming the file, the
    field, its line and the fix, and the running policy serves on with that backend usable.
    A file adding another backend whose variable is unset: applied, with its warning. The key
    itself is in no log line."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text())
    good = hash_of(policy)
    server = Server(policy, watch=False, env={"OPS_TEST_REMOTE_KEY": KEY})
    servers.append(server)
    server.wait_ready()
    (disabled,) = server.events("backend_disabled")
    assert (disabled["backend"], disabled["level"]) == ("spare", "warning")
    assert "OPS_TEST_UNSET_KEY" in str(disabled["detail"])

    replace_file(policy, policy_text(big_env="OPS_TEST_REMOTE_KEYY"))
    event = sighup(server, "policy_rejected")
    assert event["problems"] == [
        f"{policy}: backends.big.api_key_env: the environment variable OPS_TEST_REMOTE_KEYY is "
        "not set in the gateway, so this policy would disable 'big', which serves now (its key "
        "from OPS_TEST_REMOTE_KEY); fix the name, or set OPS_TEST_REMOTE_KEYY and restart the "
        "gateway (a reload does not read the environment again), or remove the backend to stop "
        "using it (line 7)"
    ]
    ready = server.http.get("/readyz", headers=ADMIN).json()
    assert ready["policy"] == good
    assert ready["backends"]["big"]["usable"] is True

    replace_file(policy, policy_text(more=True))
    mark = server.mark()
    applied = sighup(server, "policy_applied")
    assert applied["hash"] == hash_of(policy)
    assert [e["backend"] for e in server.events("backend_disabled", since=mark)] == [
        "spare",
        "more",
    ]
    assert KEY not in server.log()


def test_a_reload_renaming_a_serving_backend_and_its_variable_is_refused(
    tmp_path: Path, servers: list[Server]
) -> None:
    """The serving backend renamed (``big`` to ``large``) and its variable misspelt in the same
    edit: no backend of that name serves now, but the tier it served would have none with its
    key. Rejected naming the tier's backends, their unset variables and the line; the running
    policy serves on (before, applied: the tier lost its only keyed backend, with a warning)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text())
    good = hash_of(policy)
    server = Server(policy, watch=False, env={"OPS_TEST_REMOTE_KEY": KEY})
    servers.append(server)
    server.wait_ready()

    renamed = (
        policy_text(big_env="OPS_TEST_REMOTE_KEYY")
        .replace("  big:\n", "  large:\n")
        .replace("[big, spare]", "[large, spare]")
    )
    replace_file(policy, renamed)
    event = sighup(server, "policy_rejected")
    assert event["problems"] == [
        f"{policy}: tiers[1].backends: tier 'strong' serves now, but with this policy none of "
        "its backends has its key: 'large' (OPS_TEST_REMOTE_KEYY unset), 'spare' "
        "(OPS_TEST_UNSET_KEY unset); fix the variable's name, or set it and restart the "
        "gateway (a reload does not read the environment again) (line 11)"
    ]
    ready = server.http.get("/readyz", headers=ADMIN).json()
    assert ready["policy"] == good
    assert ready["backends"]["big"]["usable"] is True

    # Renamed with its variable intact: the tier keeps a keyed backend, applied.
    replace_file(policy, renamed.replace("OPS_TEST_REMOTE_KEYY", "OPS_TEST_REMOTE_KEY"))
    applied = sighup(server, "policy_applied")
    assert applied["hash"] == hash_of(policy)
