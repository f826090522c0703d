"""One loaded artifact backend per session (fp32, CPU), shared by the behaviour tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.artifact.backend import ArtifactBackend
from adapters.config import ArtifactConfig


@pytest.fixture(scope="session")
def artifact(artifact_dir: Path) -> Iterator[ArtifactBackend]:
    backend = ArtifactBackend("art", ArtifactConfig(type="artifact", path=str(artifact_dir)))
    yield backend
    asyncio.run(backend.aclose())
