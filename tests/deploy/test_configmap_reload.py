"""The policy watcher follows a Kubernetes ConfigMap update: the kubelet writes the new files
into a new timestamped folder, points a new ``..data_tmp`` symlink at it and renames that over
``..data``; ``policy.yaml`` is a symlink through ``..data`` and never changes itself. A real
``tiergate serve`` watching such a folder on disk, waiting on its log events, never sleeping."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.live_server import STRICT, Server, fake_policy, hash_of

NAME = "policy.yaml"


class ConfigMapVolume:
    """A folder laid out as the kubelet lays out a ConfigMap volume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        self.current: Path | None = None

    def publish(self, text: str) -> None:
        """What the kubelet's AtomicWriter does for one update."""
        self.generation += 1
        fresh = self.root / f"..2026_12_04_10_00_{self.generation:02d}.{self.generation:06d}"
        fresh.mkdir()
        (fresh / NAME).write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(fresh.name)
        os.replace(tmp, self.root / "..data")
        if not (self.root / NAME).is_symlink():
            (self.root / NAME).symlink_to(f"..data/{NAME}")
        if self.current is not None:
            shutil.rmtree(self.current)
        self.current = fresh

    @property
    def policy(self) -> Path:
        return self.root / NAME


@pytest.fixture
def volume(tmp_path: Path) -> ConfigMapVolume:
    root = tmp_path / "policy"
    root.mkdir()
    volume = ConfigMapVolume(root)
    volume.publish(fake_policy())
    return volume


@pytest.fixture
def server(volume: ConfigMapVolume, tmp_path: Path) -> Iterator[Server]:
    # The ledger and outbox live beside the policy in live_server; keep them out of the volume.
    state = tmp_path / "state"
    state.mkdir()
    server = Server(
        volume.policy,
        watch=True,
        env={
            "TIERGATE_DATABASE_URL": f"sqlite:///{state / 'ledger.db'}",
            "TIERGATE_OUTBOX_PATH": str(state / "outbox.db"),
        },
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_a_configmap_update_is_applied(volume: ConfigMapVolume, server: Server) -> None:
    first = server.chat()
    assert first.headers["x-tiergate-policy"] == hash_of(volume.policy)
    assert first.headers["x-tiergate-backend"] == "small"
    watching = server.wait_for("policy_watch_started")
    assert watching["dirs"] == [str(volume.root)]  # the volume, not the timestamped folder

    for step, text in enumerate(
        (fake_policy(cheap_max=STRICT, big="big v2"), fake_policy(small="small v3"))
    ):
        mark = server.mark()
        volume.publish(text)
        applied = server.wait_for(
            "policy_applied", since=mark, trigger="file_change", hash=hash_of(volume.policy)
        )
        assert applied["hash"] == hash_of(volume.policy)
        response = server.chat()
        assert response.headers["x-tiergate-policy"] == hash_of(volume.policy)
        expected = "big v2" if step == 0 else "small v3"
        assert response.json()["choices"][0]["message"]["content"] == expected


def test_an_invalid_configmap_update_is_rejected_and_the_last_good_policy_serves(
    volume: ConfigMapVolume, server: Server
) -> None:
    good = hash_of(volume.policy)
    server.wait_for("policy_watch_started")
    mark = server.mark()
    volume.publish("version: 1\nbackends: {}\ntiers: []\n")
    server.wait_for("policy_rejected", since=mark, trigger="file_change")
    assert server.chat().headers["x-tiergate-policy"] == good
