"""TIERGATE_POLICY's default: ./policies/default.yaml where there is one (the repository),
else the copy the wheel carries (gateway/policy/default.yaml); an explicit path is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import settings as settings_module
from gateway.settings import DEFAULT_POLICY, Settings


@pytest.fixture
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "package" / "default.yaml"
    copy.parent.mkdir()
    copy.write_text("version: 1\n")
    monkeypatch.setattr(settings_module, "BUNDLED_POLICY", copy)
    monkeypatch.delenv("TIERGATE_POLICY", raising=False)
    return copy


def test_outside_the_repository_the_packaged_policy_is_the_default(
    bundled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert Settings().policy == bundled


def test_a_policies_folder_in_the_working_directory_wins(
    bundled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.yaml").write_text("version: 1\n")
    monkeypatch.chdir(tmp_path)
    assert Settings().policy == DEFAULT_POLICY


def test_an_explicit_path_is_kept_even_when_missing(
    bundled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIERGATE_POLICY", "elsewhere/policy.yaml")
    assert Settings().policy == Path("elsewhere/policy.yaml")
