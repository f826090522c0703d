"""The cluster suite's one cluster: the running one named by ``TIERGATE_CLUSTER_ENV`` (the
``.cluster/env`` that ``deploy/local/cluster.sh up`` wrote; ``make cluster-test`` does this), or
else one this session starts in a temporary directory and always tears down. Never skipped:
without haproxy or redis-server the script fails and says what to install."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.local import SCRIPT, Cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    named = os.environ.get("TIERGATE_CLUSTER_ENV")
    if named:
        running = Cluster(Path(named).resolve().parent)
        running.wait_all_up()
        yield running
        return
    state = tmp_path_factory.mktemp("cluster") / "state"
    env = {**os.environ, "TIERGATE_CLUSTER_DIR": str(state)}
    up = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, f"cluster.sh up failed:\n{up.stderr}"
        started = Cluster(state)
        yield started
    finally:
        subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, timeout=180)


@pytest.fixture
def healthy(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with every replica UP, before and after the test."""
    cluster.wait_all_up()
    yield cluster
    for n in range(1, cluster.replicas + 1):
        if not cluster.healthy(n):
            cluster.start(n)
    cluster.wait_all_up()
