"""The ``canary:`` block in a policy: cross-references and the candidate's pin."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gateway.policy import PolicyError, parse_policy
from gateway.policy.pin import file_sha256

BASE = """
version: 1
backends:
  small: {type: fake}
  big: {type: fake}
  new: {type: fake}
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: strong, backends: [big]}
"""


def _parse(text: str, base_dir: Path = Path(".")) -> None:
    parse_policy(text.encode(), source="p.yaml", base_dir=base_dir)


def _problems(text: str, base_dir: Path = Path(".")) -> str:
    with pytest.raises(PolicyError) as info:
        _parse(text, base_dir)
    return str(info.value)


def test_a_valid_canary_compiles() -> None:
    policy = parse_policy(
        (
            BASE + "canary: {name: c1, candidate: new, tier: cheap, mode: split, percent: 10}"
        ).encode(),
        source="p.yaml",
        base_dir=Path("."),
    )
    assert policy.canary is not None
    assert (policy.canary.candidate, policy.canary.mode, policy.canary.percent) == (
        "new",
        "split",
        10.0,
    )


def test_unknown_references_are_named() -> None:
    """An unknown candidate, tier, route or judge is reported at its path."""
    text = BASE + (
        "canary: {name: c1, candidate: nope, tier: mid, route: r9, shadow: {judge: {backend: who}}}"
    )
    message = _problems(text)
    assert "p.yaml: canary.candidate: unknown backend 'nope'" in message
    assert "canary.tier: unknown tier 'mid'" in message
    assert "canary.route: unknown route 'r9'" in message
    assert "canary.shadow.judge.backend: unknown backend 'who'" in message


def test_a_candidate_already_in_a_tier_is_refused() -> None:
    message = _problems(BASE + "canary: {name: c1, candidate: small, tier: cheap}")
    assert "canary.candidate: 'small' is already in tier 'cheap'" in message


def test_unknown_fields_and_bad_values_are_errors() -> None:
    message = _problems(BASE + "canary: {name: c1, candidate: new, tier: cheap, percnt: 5}")
    assert "canary.percnt: unknown field 'percnt'" in message
    assert "percent" in message
    message = _problems(BASE + "canary: {name: c1, candidate: new, tier: cheap, percent: 150}")
    assert "canary.percent" in message
    message = _problems(
        BASE + "canary: {name: c1, candidate: new, tier: cheap, sticky: {by: header}}"
    )
    assert "canary.sticky" in message
    assert "header" in message


def _with_tiny(pin: str | None) -> str:
    text = BASE.replace(
        "  new: {type: fake}\n", "  new: {type: fake}\n  cand: {type: tiny, model: cand.gguf}\n"
    )
    pin_part = f", pin: {{sha256: '{pin}'}}" if pin else ""
    return text + f"canary: {{name: c1, candidate: cand, tier: cheap{pin_part}}}\n"


def test_a_tiny_candidate_must_match_its_pinned_sha256(tmp_path: Path) -> None:
    """The GGUF file is hashed at load: the right hash loads, a wrong one is refused naming both
    hashes, and no pin at all is refused with how to get one."""
    gguf = tmp_path / "cand.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(4096))
    right = hashlib.sha256(gguf.read_bytes()).hexdigest()
    _parse(_with_tiny(right), tmp_path)
    wrong = "0" * 64
    message = _problems(_with_tiny(wrong), tmp_path)
    assert f"canary.pin.sha256: the file {gguf} has sha256 {right}" in message
    assert f"the policy expects {wrong}" in message
    assert "sha256sum" in _problems(_with_tiny(None), tmp_path)


def test_a_missing_gguf_is_a_pin_problem(tmp_path: Path) -> None:
    message = _problems(_with_tiny("a" * 64), tmp_path)
    assert "canary.pin.sha256: cannot hash the candidate's GGUF file" in message


def test_digest_pin_only_for_ollama() -> None:
    message = _problems(
        BASE + "canary: {name: c1, candidate: new, tier: cheap, pin: {digest: abcdef123456}}"
    )
    assert "canary.pin.digest: only an ollama candidate is pinned by digest" in message


def test_file_hash_is_cached_by_path_mtime_and_size(tmp_path: Path) -> None:
    """A file rewritten with the same size and mtime is not re-read (the hash is cached); a
    changed mtime is hashed again."""
    path = tmp_path / "m.gguf"
    path.write_bytes(b"a" * 100)
    stat = path.stat()
    first = file_sha256(path)
    path.write_bytes(b"b" * 100)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path) == first  # cached: same path, mtime and size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_sha256(path) == hashlib.sha256(b"b" * 100).hexdigest()
