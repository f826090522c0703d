"""Labelled prompts: JSON lines (optionally gzip-compressed), one prompt per line, with the
quality the weak and the strong model reached on it.

    {"id": "gsm8k-3", "benchmark": "gsm8k", "prompt": "...", "weak": 1.0, "strong": 0.0}

``prompt`` (a string) or ``messages`` (OpenAI-style list) is required, and so are ``weak`` and
``strong`` (any numeric scale: 0/1 correctness, judge grades). Optional: ``id``, ``benchmark``
(or ``group``: results are reported per group), ``source`` (what leave-one-source-out holds out
together; default: the group, else the file's name), ``contaminated`` (true: left out, as
RouteLLM does for prompts that overlap its routers' training data), ``max_tokens``. Any other
field is ignored.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base import Message

# Public labelled data is not part of the project: it stays in the shared folder beside a
# checkout (`../shared/research/data/`), and the tools and tests read it from there.
SHARED_DATA = Path("..") / "shared" / "research" / "data"
ROUTELLM_PAIRS = SHARED_DATA / "routellm" / "routellm_pairs.jsonl.gz"


class LabelsError(ValueError):
    """A labels file that cannot be read; the message names the file and line."""


def shared_data(relative: Path, *, near: Path | None = None) -> Path:
    """A file of the shared data folder: looked for beside the working directory's project
    and beside the checkout this code runs from. Raises ``LabelsError`` saying where it
    belongs when it is in neither."""
    checkout = Path(__file__).resolve().parents[3]
    bases = [near or Path.cwd(), checkout]
    for base in bases:
        candidate = (base / relative).resolve()
        if candidate.is_file():
            return candidate
    raise LabelsError(
        f"{relative}: not found beside {' or '.join(str(b) for b in bases)}. Public labelled "
        f"data is kept outside the project, in the shared folder next to the checkout "
        f"(../shared/research/data/; the RouteLLM pairs are "
        f"routellm/routellm_pairs.jsonl.gz there); pass the path of a labels file explicitly."
    )


@dataclass(frozen=True, slots=True)
class Labelled:
    id: str
    group: str
    messages: tuple[Message, ...]
    weak: float
    strong: float
    max_tokens: int | None = None
    source: str = ""  # held out as one by leave-one-source-out; "" means the group
    # The mean quality many models reached on this prompt, where the source publishes more than
    # the pair (RouterBench, MT-Bench, AlpacaEval); None: the pair's own mean stands in.
    crowd: float | None = None

    @property
    def origin(self) -> str:
        """The source this prompt belongs to (its group when none was named)."""
        return self.source or self.group

    @property
    def gain(self) -> float:
        return self.strong - self.weak

    @property
    def hardness(self) -> float:
        """How hard the prompt is for models in general: minus the crowd's quality (the
        pair's mean without a crowd)."""
        return -(self.crowd if self.crowd is not None else (self.weak + self.strong) / 2)


@dataclass(frozen=True, slots=True)
class LabelSet:
    items: tuple[Labelled, ...]
    contaminated: int  # lines left out

    def groups(self) -> list[str]:
        return sorted({i.group for i in self.items})

    def of(self, group: str) -> tuple[Labelled, ...]:
        return tuple(i for i in self.items if i.group == group)

    def sources(self) -> list[str]:
        return sorted({i.origin for i in self.items})


def read_labels(paths: Sequence[Path], *, keep_contaminated: bool = False) -> LabelSet:
    items: list[Labelled] = []
    left_out = 0
    for path in paths:
        for number, line in _lines(path):
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise TypeError("each line must be a JSON object")
                if raw.get("contaminated") and not keep_contaminated:
                    left_out += 1
                    continue
                items.append(_item(raw, f"{path.name}:{number}", _stem(path)))
            except (ValueError, TypeError, KeyError) as exc:
                raise LabelsError(f"{path}: line {number}: {exc}") from None
    if not items:
        raise LabelsError(
            f"{', '.join(map(str, paths))}: no labelled prompts (each line needs prompt or "
            f"messages, weak and strong)"
        )
    return LabelSet(tuple(items), left_out)


def _stem(path: Path) -> str:
    """A file's name without its .jsonl / .json / .gz endings: its default source."""
    name = path.name
    for ending in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(ending)
    return name


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as stream:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    yield number, line
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read it ({exc})") from None


def _item(raw: dict[str, Any], where: str, file_source: str) -> Labelled:
    weak, strong = raw.get("weak"), raw.get("strong")
    for name, value in (("weak", weak), ("strong", strong)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f'"{name}" must be a number (the quality that model reached)')
    assert isinstance(weak, int | float)
    assert isinstance(strong, int | float)
    crowd = raw.get("crowd")
    if crowd is not None and (isinstance(crowd, bool) or not isinstance(crowd, int | float)):
        raise TypeError('"crowd" must be a number (many models\' mean quality) or absent')
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError('"max_tokens" must be a positive integer or null')
    named = raw.get("benchmark", raw.get("group"))
    source = raw.get("source")
    group = named if named is not None else source
    return Labelled(
        id=str(raw.get("id", where)),
        group=str(group if group is not None else "all"),
        source=str(source if source is not None else (named if named is not None else file_source)),
        messages=_messages(raw),
        weak=float(weak),
        strong=float(strong),
        max_tokens=max_tokens,
        crowd=None if crowd is None else float(crowd),
    )


def _messages(raw: dict[str, Any]) -> tuple[Message, ...]:
    if isinstance(raw.get("prompt"), str):
        return (Message(role="user", content=raw["prompt"]),)
    listed = raw.get("messages")
    if not isinstance(listed, list) or not listed:
        raise ValueError('missing "prompt" (a string) or "messages" (a non-empty list)')
    out = []
    for m in listed:
        role = m.get("role") if isinstance(m, dict) else None
        content = m.get("content") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant") or not isinstance(content, str):
            raise TypeError(f"bad message {m!r}: need a role and string content")
        out.append(Message(role="system" if role == "developer" else role, content=content))
    return tuple(out)
