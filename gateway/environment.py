"""The ``TIERGATE_*`` names of the environment: which ones something reads (a setting, the
container's entrypoint, the repository's tooling, a policy's ``api_key_env``), and which nothing
does, each with the setting it most likely meant, so a typo is caught rather than ignored."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

from gateway.settings import Settings

# ``TIERGATE_*`` names read outside ``Settings``: the container's entrypoint (deploy/), and the
# repository's tooling (deploy/local/cluster.sh, the tests), whose variables can sit in the
# same environment as the gateway's.
OTHER_VARIABLES = frozenset({"TIERGATE_MIGRATE"})
TOOLING_PREFIXES = ("TIERGATE_CLUSTER_", "TIERGATE_TEST_")


def setting_variables() -> frozenset[str]:
    """The environment variable of every setting."""
    return frozenset(f"TIERGATE_{name.upper()}" for name in Settings.model_fields)


def is_known_variable(name: str, also: Iterable[str] = ()) -> bool:
    upper = name.upper()
    return (
        upper in setting_variables()
        or upper in OTHER_VARIABLES
        or upper.startswith(TOOLING_PREFIXES)
        or upper in {a.upper() for a in also}
    )


def unknown_variables(
    environ: Mapping[str, str], also: Iterable[str] = ()
) -> list[tuple[str, str | None]]:
    """Each ``TIERGATE_*`` variable (any case, as the settings read them) that nothing reads,
    with the setting it most likely meant (or None). ``also``: names known elsewhere (a
    policy's ``api_key_env``)."""
    extra = list(also)
    prefix = len("TIERGATE_")
    # Compared without the prefix they all share, which would make any two names look alike.
    candidates = sorted(v[prefix:] for v in setting_variables())
    found = []
    for name in sorted(environ):
        if not name.upper().startswith("TIERGATE_") or is_known_variable(name, extra):
            continue
        close = difflib.get_close_matches(name.upper()[prefix:], candidates, n=1, cutoff=0.7)
        found.append((name, "TIERGATE_" + close[0] if close else None))
    return found


def policy_variables(path: Path) -> set[str]:
    """The ``api_key_env`` names a policy file gives its backends (read leniently: a policy
    that does not load names none; its own check reports why)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_bytes())
    except (OSError, yaml.YAMLError):
        return set()
    backends = raw.get("backends") if isinstance(raw, dict) else None
    if not isinstance(backends, dict):
        return set()
    return {
        entry["api_key_env"]
        for entry in backends.values()
        if isinstance(entry, dict) and isinstance(entry.get("api_key_env"), str)
    }
