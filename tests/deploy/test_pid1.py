"""In a container the image's ENTRYPOINT is PID 1, and Linux delivers a signal to PID 1 only
if it installed a handler for it. ``tiergate serve`` installs its SIGTERM handler (uvicorn's)
only once it is serving, so as PID 1 a SIGTERM during start-up (a pod deleted seconds after it
was made: a rollout undone, a scale-down) was dropped: the gateway served on until the kubelet
SIGKILLed it at the end of the grace period. The image runs ``tini`` as PID 1, which forwards
the signal to the gateway (then an ordinary process). Here: the Dockerfile's ENTRYPOINT, run as
PID 1 of a new PID namespace (``unshare``; needs root and tini, as in the image)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.http.live_server import REPO, _free_port, fake_policy

DOCKERFILE = REPO / "deploy" / "Dockerfile"
# A deadline, not a wait: a start takes ~2 s here, but a full suite on a loaded 2-core machine
# once took past 30 s between the signal and the exit.
START_S = 90.0


def entrypoint() -> list[str]:
    """The runtime stage's ENTRYPOINT, with the image's path to the script replaced by ours."""
    runtime = DOCKERFILE.read_text().split("\nFROM ", 2)[2]
    (line,) = (ln for ln in runtime.splitlines() if ln.startswith("ENTRYPOINT "))
    argv: list[str] = json.loads(line.removeprefix("ENTRYPOINT "))
    script = str(REPO / "deploy" / "entrypoint.sh")
    return [a for arg in argv for a in (["sh", script] if arg == "tiergate-entrypoint" else [arg])]


def test_the_entrypoint_runs_under_an_init() -> None:
    runtime = DOCKERFILE.read_text().split("\nFROM ", 2)[2]
    assert " tini" in runtime.split("ENTRYPOINT", 1)[0]  # installed in the runtime stage
    assert entrypoint()[:2] == ["tini", "--"]


def _started(unshare: psutil.Process) -> bool:
    """The entrypoint's shell (or the gateway it became) runs inside the namespace."""
    return any(
        "entrypoint.sh" in " ".join(p.cmdline()) or "tiergate" in " ".join(p.cmdline()[:2])
        for p in unshare.children(recursive=True)
        if p.is_running()
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("tini"),
    reason="a PID namespace needs root and unshare; the image's init, tini (apt-get install tini)",
)
def test_sigterm_during_start_up_stops_the_gateway_as_pid_1(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy())
    drop = ("TIERGATE_",)
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        TIERGATE_POLICY=str(policy),
        TIERGATE_HOST="127.0.0.1",
        TIERGATE_PORT=str(_free_port()),
        TIERGATE_OPS_PORT=str(_free_port()),
        TIERGATE_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        TIERGATE_OUTBOX_PATH=str(tmp_path / "outbox.db"),
        PYTHONPATH=str(REPO),
        # The script runs `tiergate` from PATH, as in the image: this interpreter's, whether or
        # not its virtual environment is activated (make test runs .venv/bin/pytest directly).
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", *entrypoint(), "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        unshare = psutil.Process(proc.pid)
        deadline = time.monotonic() + START_S
        while not _started(unshare):
            assert time.monotonic() < deadline, "the entrypoint did not start"
            assert proc.poll() is None
        (pid1,) = unshare.children()  # PID 1 of the namespace
        # Mid start-up: imports and the app take seconds before any handler is installed.
        pid1.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=START_S)
        except subprocess.TimeoutExpired:
            raise AssertionError("SIGTERM during start-up was dropped: still running") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
