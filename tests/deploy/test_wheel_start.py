"""The image's start path, without Docker: the wheel built from this tree, installed into a
fresh venv (its dependencies from the package index, pinned by constraints.txt), run by
deploy/entrypoint.sh from an empty directory that is not the repository. ``tiergate db upgrade``
must find its migrations and ``tiergate serve`` its default policy inside the package; the
probes answer; SIGTERM stops it cleanly.

The dependencies' wheels are collected once into a wheelhouse under ~/.cache, named by the hash
of the pinned dependencies and constraints.txt (~25 s the first time, from pip's cache or the
index); each run then builds this tree's wheel and installs it into a new venv from there with
no index (~30 s). The wheel of this tree is always fresh."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from gateway.policy import load_policy
from tests.http.live_server import _free_port

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 600
START_TIMEOUT_S = 90.0
API_KEY = "wheel-test-client-key-0123456789"


def _clean_env(**extra: str) -> dict[str, str]:
    """No TIERGATE_* setting and nothing that points Python back at this checkout."""
    drop = ("TIERGATE_", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _wheelhouse(wheel: Path, env: dict[str, str]) -> Path:
    """Every runtime dependency of ``wheel`` as a wheel, collected once per set of pins."""
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    digest = hashlib.sha256()
    digest.update("\n".join(pins).encode())
    digest.update((REPO / "constraints.txt").read_bytes())
    digest.update(sys.version.encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tiergate-tests"
    house = cache / f"wheelhouse-{digest.hexdigest()[:16]}"
    if house.is_dir():
        return house
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=cache))
    _run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"),
            *("-c", str(REPO / "constraints.txt"), "-w", str(staging), str(wheel)),
        ],
        cwd=staging,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    for own in staging.glob("tiergate-*.whl"):
        own.unlink()
    try:
        staging.rename(house)  # atomic: a concurrent run sees a whole wheelhouse or none
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another run got there first
    return house


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel of this tree and its pinned dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    env = _clean_env()
    started = time.monotonic()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root), str(REPO)],
        cwd=root,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    (wheel,) = root.glob("tiergate-*.whl")
    house = _wheelhouse(wheel, env)
    built = time.monotonic()
    _run([sys.executable, "-m", "venv", str(root / "venv")], cwd=root, env=env, timeout=120)
    bin_dir = root / "venv" / "bin"
    _run(
        [
            str(bin_dir / "python"),
            *("-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check"),
            *("--no-index", "--find-links", str(house)),
            *("-c", str(REPO / "constraints.txt"), str(wheel)),
        ],
        cwd=root,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    done = time.monotonic()
    sys.stderr.write(
        f"wheel and wheelhouse: {built - started:.0f} s; fresh venv install: {done - built:.0f} s\n"
    )
    return bin_dir


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> httpx.Response:
    """GET ``url`` until it answers 200, bounded; a server that exits fails at once."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            last = httpx.get(url, timeout=5)
            if last.status_code == 200:
                return last
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
        assert proc.returncode is None, f"the server exited ({proc.returncode}):\n{log.read_text()}"
    detail = last.text if last is not None else "no answer"
    raise AssertionError(f"{url}: {detail}\n{log.read_text()}")


def test_the_installed_wheel_migrates_and_serves_from_an_empty_directory(
    venv_bin: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = _clean_env(PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")

    # The package, not this checkout, is what runs.
    where = _run(
        [str(venv_bin / "python"), "-c", "import gateway; print(gateway.__file__)"],
        cwd=workdir,
        env=env,
        timeout=60,
    )
    assert Path(where.strip()).is_relative_to(venv_bin.parent), where

    _run([str(venv_bin / "tiergate"), "db", "upgrade"], cwd=workdir, env=env, timeout=120)
    assert (workdir / ".tiergate" / "ledger.db").is_file()

    port, ops_port = _free_port(), _free_port()
    serve_env = {
        **env,
        "TIERGATE_MIGRATE": "1",  # again, as the image's entrypoint does: a no-op at head
        "TIERGATE_HOST": "127.0.0.1",
        "TIERGATE_PORT": str(port),
        "TIERGATE_OPS_PORT": str(ops_port),
        "TIERGATE_API_KEYS": f"probe:{API_KEY}",
        "TIERGATE_LOG_FORMAT": "json",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            ["sh", str(REPO / "deploy" / "entrypoint.sh"), "serve"],
            cwd=workdir,
            env=serve_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(f"http://127.0.0.1:{port}/healthz", proc, log)
            ready = _wait_for(f"http://127.0.0.1:{ops_port}/readyz", proc, log)
            # The default policy, from inside the package.
            default = load_policy(REPO / "policies" / "default.yaml")
            assert ready.json()["policy"] == default.hash
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 401
            assert httpx.get(f"http://127.0.0.1:{ops_port}/metrics", timeout=5).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
    text = log.read_text()
    # uvicorn re-raises SIGTERM after its graceful shutdown: a clean stop ends by the signal.
    assert code in (0, -signal.SIGTERM), text
    assert "tiergate db upgrade" in text
    assert '"gateway_stopped"' in text, text
    assert "Traceback" not in text, text
    assert not (workdir / "policies").exists()
